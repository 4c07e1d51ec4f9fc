"""Uploads in the console: a file is staged and validated (nothing written), then imported on a worker."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.conftest import PANDALM
from tests.factories import ItemFactory
from webapp.models import ImportJob, Item, Project
from webapp.services.imports import import_file, run_import_job, validate_file

pytestmark = pytest.mark.django_db


def native(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"item-{n}",
        "prompt": f"Question {n}?",
        "responses": [{"text": f"Answer {n}a", "model": "m1"}, {"text": f"Answer {n}b", "model": "m2"}],
        **extra,
    }


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(autouse=True)
def uploads_dir(settings: Any, tmp_path: Path) -> Path:
    settings.UPLOAD_DIR = tmp_path / "uploads"
    return tmp_path / "uploads" / "staging"


@pytest.fixture
def manager_client(manager: Any) -> Client:
    client = Client()
    client.force_login(manager)
    return client


def upload(client: Client, project: Project, name: str, content: bytes, fmt: str = "native") -> Any:
    return client.post(f"/p/{project.slug}/upload/new", {"format": fmt, "file": SimpleUploadedFile(name, content)})


def cell(html: str, cell_id: str) -> str:
    found = re.search(rf'id="{cell_id}">(.*?)</td>', html, re.S)
    assert found, cell_id
    return found.group(1).strip()


def test_a_good_jsonl_file_shows_its_report_and_then_imports_on_a_worker(
    manager_client, manager, project, django_capture_on_commit_callbacks
):
    import_file(project, _write(project, jsonl([native(1)])))  # item-1 is in the project already, unchanged
    rows = [native(1), native(2), native(3, responses=[{"text": "x"}, {"text": "y"}, {"text": "z"}])]
    project.kind = "ranking"
    project.save()

    response = upload(manager_client, project, "batch.jsonl", jsonl(rows))

    assert response.status_code == 302
    report_url = response.url
    html = manager_client.get(report_url).content.decode()
    assert "Validation report: batch.jsonl" in html
    assert "The file is valid" in html
    assert (cell(html, "rows"), cell(html, "rows-ok"), cell(html, "rows-with-errors")) == ("3", "3", "0")
    assert (cell(html, "new"), cell(html, "unchanged"), cell(html, "changed")) == ("2", "1", "0")
    assert cell(html, "responses") == "2 responses: 2 · 3 responses: 1"
    assert "Import 2 items" in html
    assert Item.objects.filter(project=project).count() == 1  # validation wrote nothing

    token = report_url.rstrip("/").rsplit("/", 1)[1]
    with django_capture_on_commit_callbacks() as callbacks:
        response = manager_client.post(f"/p/{project.slug}/upload/{token}/import")
    assert response.status_code == 302
    assert response.url == f"/p/{project.slug}/upload/"
    assert len(callbacks) == 1  # the worker's task goes out once the job row is committed
    job = ImportJob.objects.get()
    assert (job.status, job.file_format, job.created_by) == (ImportJob.QUEUED, "native", manager)
    page = manager_client.get(response.url).content.decode()
    assert "Importing 2 item(s) from batch.jsonl on a worker" in page
    assert 'hx-trigger="every 2s"' in page  # the jobs table follows the worker

    run_import_job(job.pk)  # what the worker's task does

    assert sorted(Item.objects.filter(project=project).values_list("external_id", flat=True)) == [
        "item-1",
        "item-2",
        "item-3",
    ]
    partial = manager_client.get(f"/p/{project.slug}/upload/", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<section id="jobs"')
    assert "batch.jsonl" in partial
    assert "done" in partial
    assert 'hx-trigger="every 2s"' not in partial

    # The same staged file is imported once: a second click is refused.
    again = manager_client.post(f"/p/{project.slug}/upload/{token}/import")
    assert again.status_code == 409
    assert f"queued for import already (import #{job.pk})" in again.content.decode()
    assert ImportJob.objects.count() == 1


def _write(project: Project, content: bytes) -> Path:
    from django.conf import settings

    path = Path(settings.UPLOAD_DIR) / f"seed-{project.pk}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_csv_with_a_bad_row_shows_the_row_number_and_field_and_nothing_is_written(manager_client, project):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "prompt", "response_1", "response_2"])
    writer.writerow(["c-1", "Fine question?", "Yes.", "No."])
    writer.writerow(["c-2", "Only one answer?", "Yes.", ""])  # row 3: the second response is missing
    writer.writerow(["c-3", "Another?", "A", "B"])

    response = upload(manager_client, project, "items.csv", out.getvalue().encode())

    assert response.status_code == 302
    html = manager_client.get(response.url).content.decode()
    assert "The file has problems: nothing can be imported" in html
    assert (cell(html, "rows"), cell(html, "rows-ok"), cell(html, "rows-with-errors")) == ("3", "2", "1")
    errors = re.findall(r"<tr><td>(.*?)</td><td><code>(.*?)</code></td><td>(.*?)</td></tr>", html)
    assert errors == [("row 3", "responses", "a pairwise project needs exactly 2 responses, got 1")]
    assert "import-button" not in html

    token = response.url.rstrip("/").rsplit("/", 1)[1]
    refused = manager_client.post(f"/p/{project.slug}/upload/{token}/import")
    assert refused.status_code == 400
    assert "the validation found 1 problem(s)" in refused.content.decode()
    assert not ImportJob.objects.exists()
    assert not Item.objects.exists()


def test_the_report_lists_the_first_50_problems_of_many(manager_client, project):
    rows = [{"id": f"bad-{n}", "prompt": "p", "responses": [{"text": "only one"}]} for n in range(70)]
    html = manager_client.get(upload(manager_client, project, "bad.jsonl", jsonl(rows)).url).content.decode()
    assert "(the first 50 of 70)" in html
    assert html.count("<tr><td>line ") == 50
    assert cell(html, "rows-with-errors") == "70"


def test_duplicates_in_the_file_and_changed_items_are_reported(manager_client, project):
    ItemFactory(project=project, external_id="item-1", prompt="Old text")  # its content hash differs
    rows = [native(1), native(2), native(2)]
    html = manager_client.get(upload(manager_client, project, "d.jsonl", jsonl(rows)).url).content.decode()
    assert "duplicate id &#x27;item-2&#x27; (also at line 2)" in html
    assert cell(html, "changed") == "1"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("items.txt", b'{"id": 1}\n', "is not a JSONL, CSV or Parquet file"),
        ("items.json", b'[{"id": 1}]', "is not a JSONL, CSV or Parquet file"),
        ("items.jsonl", b"\x89PNG\r\n\x1a\nrest", "named as JSONL, but it is a PNG image"),
        ("items.jsonl", b"PK\x03\x04zipped", "a ZIP archive"),
        ("items.jsonl", b'[{"id": 1}]', "a JSON array, not JSONL"),
        ("items.jsonl", b"id,prompt\n1,hi\n", "not JSONL"),
        ("items.csv", b'{"id": 1}\n', "named .csv, but it holds JSON"),
        ("items.csv", b"\xff\xfei\x00d\x00", "named as CSV, but it is UTF-16 text: save it as UTF-8"),
        ("items.csv", b"id,prompt\n1,caf\xe9\n", "not UTF-8 text"),
        ("items.parquet", b'{"id": 1}\n', "not a Parquet file"),
        ("items.jsonl", b"", "the file is empty"),
    ],
)
def test_a_file_of_the_wrong_type_is_refused_by_extension_or_content_and_nothing_is_kept(
    manager_client, project, uploads_dir, name, content, message
):
    response = upload(manager_client, project, name, content)
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'<p class="field-error" id="error-file">(.*?)</p>', html, re.S)
    assert error, html
    assert message in error.group(1).replace("&#x27;", "'")
    assert not any(uploads_dir.glob("*")) if uploads_dir.exists() else True


def test_a_file_over_the_size_limit_is_refused(manager_client, project, settings, uploads_dir):
    settings.CONSOLE_UPLOAD_MAX_BYTES = 200
    response = upload(manager_client, project, "big.jsonl", jsonl([native(n) for n in range(10)]))
    assert response.status_code == 413
    assert "over the limit" in response.content.decode()
    assert not uploads_dir.exists() or not any(uploads_dir.iterdir())


def test_an_upload_needs_the_csrf_token(manager, project):
    client = Client(enforce_csrf_checks=True)
    client.force_login(manager)
    assert upload(client, project, "a.jsonl", jsonl([native(1)])).status_code == 403


def test_a_parquet_file_is_validated_like_the_others(manager_client, project, tmp_path):
    table = pa.Table.from_pylist([native(1), native(2)])
    path = tmp_path / "items.parquet"
    pq.write_table(table, path)
    html = manager_client.get(upload(manager_client, project, "items.parquet", path.read_bytes()).url).content.decode()
    assert "The file is valid" in html
    assert cell(html, "new") == "2"


def test_the_pandalm_demo_file_validates_with_its_labels(project):
    project.aspects = ["overall"]
    project.save()
    report = validate_file(project, PANDALM, fmt="pandalm")
    assert report.ok, report.errors[:3]
    assert (report.rows, report.rows_ok, report.new) == (999, 999, 999)
    assert report.responses == {2: 999}
    assert report.human_annotations > 999
    assert report.llm_annotations > 999
    assert not Item.objects.exists()


def test_another_projects_staged_upload_is_not_found(manager_client, project, manager):
    from tests.factories import MembershipFactory, ProjectFactory

    other = ProjectFactory(slug="elsewhere")
    MembershipFactory(project=other, user=manager, role="manager")
    token = upload(manager_client, other, "a.jsonl", jsonl([native(1)])).url.rstrip("/").rsplit("/", 1)[1]
    assert manager_client.get(f"/p/{project.slug}/upload/{token}/").status_code == 404
    assert manager_client.post(f"/p/{project.slug}/upload/{token}/import").status_code == 404
    assert manager_client.get(f"/p/{project.slug}/upload/..%2F..%2Fetc/").status_code == 404


def test_a_request_far_over_the_limit_is_refused_before_its_body_is_read(manager_client, project, settings):
    settings.CONSOLE_UPLOAD_MAX_BYTES = 200
    response = manager_client.post(
        f"/p/{project.slug}/upload/new",
        {"format": "native", "file": SimpleUploadedFile("a.jsonl", jsonl([native(1)]))},
        CONTENT_LENGTH=str(50 << 20),
    )
    assert response.status_code == 413
    assert "over the limit" in response.content.decode()
