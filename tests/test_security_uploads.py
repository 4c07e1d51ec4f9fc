"""Request and upload limits are enforced where requests come in (their values: test_security_settings.py).

- A form post (no file) over DATA_UPLOAD_MAX_MEMORY_SIZE, or with more files than DATA_UPLOAD_MAX_NUMBER_FILES,
  is refused with 400 before any view runs.
- The console's upload (if the site has one: the "upload-post" URL) refuses a file over
  CONSOLE_UPLOAD_MAX_BYTES with 413, one far over it without reading the body, and a file whose name
  or content is not JSONL, CSV or Parquet with 400; nothing is staged then.
  (tests/test_console_uploads.py checks each wrong type's message.)
- The API's bulk item request over API_MAX_BULK_BYTES is 413, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import NoReverseMatch, reverse

from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from webapp.api import create_token
from webapp.models import Item, Membership

pytestmark = pytest.mark.django_db

ROW = {"id": "u1", "prompt": "Which is better?", "responses": [{"text": "a"}, {"text": "b"}]}


@pytest.fixture
def world(settings: Any, tmp_path: Path) -> dict[str, Any]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.UPLOAD_DIR = tmp_path / "uploads"
    project: Any = ProjectFactory(slug="limits", aspects=["overall"])
    boss: Any = UserFactory(username="limits-boss")
    MembershipFactory(project=project, user=boss, role=Membership.MANAGER)
    client = Client()
    client.force_login(boss)
    return {"project": project, "client": client, "token": create_token(boss), "staging": tmp_path / "uploads"}


def upload_url(slug: str) -> str:
    try:
        return reverse("upload-post", args=[slug])
    except NoReverseMatch:
        pytest.skip("the site has no upload page (no 'upload-post' URL)")


def staged(world: dict[str, Any]) -> list[Path]:
    root = world["staging"] / "staging"
    return list(root.iterdir()) if root.exists() else []


def test_a_form_post_over_the_memory_limit_is_refused(world: dict[str, Any], settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    slug = world["project"].slug
    response = world["client"].post(f"/p/{slug}/judging/judges", {"name": "x" * 20_000, "backend": "openai"})
    assert response.status_code == 400
    assert b"Bad Request (400)" in response.content  # Django's refusal, not the view's form errors
    small = world["client"].post(f"/p/{slug}/judging/judges", {"name": "", "backend": "openai"})
    assert small.status_code == 400
    assert b"name" in small.content


def test_too_many_files_in_one_request_are_refused(world: dict[str, Any]) -> None:
    url = upload_url(world["project"].slug)
    files = [SimpleUploadedFile(f"f{k}.jsonl", json.dumps(ROW).encode()) for k in range(11)]
    response = world["client"].post(url, {"format": "native", "file": files})
    assert response.status_code == 400
    assert b"Bad Request (400)" in response.content  # Django's TooManyFilesSent
    assert staged(world) == []


def test_an_upload_over_the_size_limit_is_refused_and_nothing_kept(world: dict[str, Any], settings: Any) -> None:
    settings.CONSOLE_UPLOAD_MAX_BYTES = 1024
    url = upload_url(world["project"].slug)
    big = b"".join(json.dumps({**ROW, "id": f"u{k}"}).encode() + b"\n" for k in range(100))
    assert len(big) > 1024
    response = world["client"].post(url, {"format": "native", "file": SimpleUploadedFile("big.jsonl", big)})
    assert response.status_code == 413
    assert b"over the limit" in response.content
    assert staged(world) == []
    fine = world["client"].post(
        url, {"format": "native", "file": SimpleUploadedFile("ok.jsonl", json.dumps(ROW).encode())}
    )
    assert fine.status_code == 302  # to its validation report


def test_an_upload_far_over_the_limit_is_refused_without_reading_it(world: dict[str, Any], settings: Any) -> None:
    settings.CONSOLE_UPLOAD_MAX_BYTES = 1024
    url = upload_url(world["project"].slug)
    huge = SimpleUploadedFile("huge.jsonl", b"{}\n" * 400_000)  # 1.2 MB: past the limit plus 1 MB of slack
    response = world["client"].post(url, {"format": "native", "file": huge})
    assert response.status_code == 413
    assert staged(world) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("items.exe", b"MZ\x90\x00 not a dataset"),
        ("items.html", b"<script>alert(1)</script>"),
        ("items.jsonl", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32),
        ("items.csv", b"%PDF-1.7 not a table"),
        ("items.parquet", json.dumps(ROW).encode()),
        ("items", json.dumps(ROW).encode()),
    ],
)
def test_a_file_of_another_type_is_refused_and_nothing_kept(world: dict[str, Any], name: str, content: bytes) -> None:
    url = upload_url(world["project"].slug)
    response = world["client"].post(url, {"format": "native", "file": SimpleUploadedFile(name, content)})
    assert response.status_code == 400
    assert staged(world) == []
    assert not Item.objects.filter(project=world["project"]).exists()


def test_a_bulk_api_request_over_its_limit_is_413_and_writes_nothing(world: dict[str, Any], settings: Any) -> None:
    settings.API_MAX_BULK_BYTES = 2_000
    body = "".join(json.dumps({**ROW, "id": f"b{k}"}) + "\n" for k in range(100))
    assert len(body) > 2_000
    response = Client().post(
        f"/api/projects/{world['project'].slug}/items",
        body,
        content_type="application/x-ndjson",
        headers={"Authorization": f"Bearer {world['token']}"},
    )
    assert response.status_code == 413
    assert not Item.objects.filter(project=world["project"]).exists()
