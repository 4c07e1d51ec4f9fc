"""The JSON HTTP API: bearer tokens, the UI's permissions, exports end to end, candidates' scores."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.api import create_token, hash_token
from webapp.models import ApiToken, ExportSnapshot, HumanAnnotation, Membership, Project, RoutingCandidate
from webapp.services.exports import OPTION_KEYS, create_snapshot, run_snapshot

pytestmark = pytest.mark.django_db

A_CLEAR, B_SLIGHT = "A-is-clearly-better", "B-is-slightly-better"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """The users here never log in with a password: hash theirs cheaply (PBKDF2 takes most of a setup)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def export_dir(tmp_path: Path, settings: Any) -> Path:
    settings.EXPORT_DIR = tmp_path / "exports"
    return settings.EXPORT_DIR


@pytest.fixture
def labelled(db: None) -> Project:
    """A pairwise project with two human-labelled items."""
    project: Any = ProjectFactory(slug="api-prefs", aspects=["overall"])
    alice: Any = UserFactory(username="alice")
    for k, label in enumerate([A_CLEAR, B_SLIGHT]):
        item: Any = ItemFactory(
            project=project, external_id=f"q{k}", prompt=f"Question {k}?", responses=[f"A{k}", f"B{k}"]
        )
        HumanAnnotation.objects.create(
            item=item, annotator=alice, tier="normal", preferences={"overall": label}, justification=f"alice {k}"
        )
    return project


def member(project: Project, username: str, role: str) -> str:
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=role)
    return create_token(user, f"{username}'s laptop")


@pytest.fixture
def tokens(labelled: Project) -> dict[str, str]:
    """A token per kind of caller of labelled's endpoints."""
    other: Any = ProjectFactory(slug="other-project")
    revoked = member(labelled, "former", Membership.MANAGER)
    ApiToken.objects.filter(key_hash=hash_token(revoked)).update(revoked=True)
    inactive = member(labelled, "gone", Membership.MANAGER)
    get_user_model().objects.filter(username="gone").update(is_active=False)
    return {
        "manager": member(labelled, "boss", Membership.MANAGER),
        "annotator": member(labelled, "ann", Membership.ANNOTATOR),
        "other_manager": member(other, "elsewhere", Membership.MANAGER),
        "superuser": create_token(UserFactory(username="root", is_superuser=True, is_staff=True)),
        "revoked": revoked,
        "inactive": inactive,
        "garbage": "hp_not-a-token-anyone-was-given",
    }


def done_snapshot(project: Project) -> ExportSnapshot:
    snapshot = create_snapshot(project, format="trl-preference")
    return run_snapshot(snapshot.pk)


# --- tokens ---------------------------------------------------------------------------------------


def test_a_token_is_stored_only_as_its_hash(labelled: Project) -> None:
    user: Any = UserFactory(username="keeper")
    token = create_token(user, "ci")
    assert token.startswith("hp_")
    assert len(token) > 40
    row = ApiToken.objects.get(user=user)
    assert row.key_hash == hash_token(token)
    assert len(row.key_hash) == 64
    assert row.prefix == token[:8]
    assert row.name == "ci"
    assert not row.revoked
    stored = [str(v) for v in ApiToken.objects.filter(pk=row.pk).values_list().get()]
    assert all(token not in value for value in stored)
    assert create_token(user, "ci") != token  # a fresh secret each time


def test_the_command_prints_a_token_that_authenticates(labelled: Project, export_dir: Path, client: Any) -> None:
    boss: Any = UserFactory(username="cmd-boss")
    MembershipFactory(project=labelled, user=boss, role=Membership.MANAGER)
    out = StringIO()
    call_command("create_api_token", "cmd-boss", "--name", "cluster", stdout=out)
    token = out.getvalue().strip()
    assert ApiToken.objects.get(user=boss).name == "cluster"
    assert client.get(f"/api/projects/{labelled.slug}/exports", headers=bearer(token)).status_code == 200


def test_last_use_is_recorded_at_most_once_a_minute(labelled: Project, tokens: dict[str, str], client: Any) -> None:
    url = f"/api/projects/{labelled.slug}/exports"
    client.get(url, headers=bearer(tokens["manager"]))
    row = ApiToken.objects.get(key_hash=hash_token(tokens["manager"]))
    first = row.last_used_at
    assert first is not None
    client.get(url, headers=bearer(tokens["manager"]))
    row.refresh_from_db()
    assert row.last_used_at == first
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get(url, headers=bearer(tokens["manager"]))
    row.refresh_from_db()
    assert row.last_used_at > first - timedelta(seconds=1)


# --- permissions ----------------------------------------------------------------------------------

CALLERS = [
    (None, 401),
    ("garbage", 401),
    ("revoked", 401),
    ("inactive", 401),
    ("annotator", 403),
    ("other_manager", 403),
    ("manager", 200),
    ("superuser", 200),
]


def call(client: Any, method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    headers = bearer(token) if token else {}
    if method == "post":
        return client.post(url, body or {}, content_type="application/json", headers=headers)
    return client.get(url, headers=headers)


@pytest.mark.parametrize(("caller", "status"), CALLERS)
def test_each_project_endpoint_answers_only_the_projects_managers(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any, caller: str | None, status: int
) -> None:
    snapshot = done_snapshot(labelled)
    base = f"/api/projects/{labelled.slug}/exports"
    token = tokens[caller] if caller else None
    assert call(client, "get", base, token).status_code == status
    assert call(client, "get", f"{base}/{snapshot.version}", token).status_code == status
    assert call(client, "get", f"{base}/1/files/trl-preference.jsonl", token).status_code == status
    post = call(client, "post", base, token, {"format": "trl-preference"})
    assert post.status_code == (202 if status == 200 else status)
    assert ExportSnapshot.objects.count() == (2 if status == 200 else 1)


@pytest.mark.parametrize(("caller", "status"), CALLERS)
def test_only_the_candidates_project_managers_record_its_score(
    labelled: Project, tokens: dict[str, str], client: Any, caller: str | None, status: int
) -> None:
    candidate = RoutingCandidate.objects.create(project=labelled, budget=0.5, strategy="random")
    token = tokens[caller] if caller else None
    response = call(client, "post", f"/api/candidates/{candidate.pk}/score", token, {"score": 0.71})
    assert response.status_code == status
    candidate.refresh_from_db()
    assert candidate.score == (0.71 if status == 200 else None)


def test_an_unknown_project_is_404_and_objects_of_another_project_are_404(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any
) -> None:
    done_snapshot(labelled)
    manager = tokens["other_manager"]  # manages other-project only
    assert call(client, "get", "/api/projects/no-such-project/exports", manager).status_code == 404
    assert call(client, "get", "/api/projects/other-project/exports/1", manager).status_code == 404
    missing = call(client, "get", "/api/projects/other-project/exports/1/files/trl-preference.jsonl", manager)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "No such export"}
    assert call(client, "post", "/api/candidates/999999/score", manager, {"score": 0.5}).status_code == 404


def test_a_session_login_does_not_authenticate_the_api(labelled: Project, client: Any) -> None:
    boss: Any = UserFactory(username="session-boss")
    MembershipFactory(project=labelled, user=boss, role=Membership.MANAGER)
    client.force_login(boss)
    response = client.get(f"/api/projects/{labelled.slug}/exports")
    assert response.status_code == 401  # JSON, not a redirect to the login page
    assert response.json() == {"detail": "Unauthorized"}


# --- exports --------------------------------------------------------------------------------------


def test_a_manager_starts_an_export_after_commit_and_downloads_its_file_streamed(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    base = f"/api/projects/{labelled.slug}/exports"
    body = {"format": "trl-preference", "file_type": "jsonl", "options": {"seed": 7, "test_fraction": 0.5}}
    with django_capture_on_commit_callbacks() as callbacks:
        response = call(client, "post", base, tokens["manager"], body)
    assert response.status_code == 202
    assert len(callbacks) == 1  # the worker's task goes out once, after the row is committed
    started = response.json()
    assert started["version"] == 1
    assert started["status"] == "running"
    assert started["files"] == []
    assert started["options"]["seed"] == 7
    assert started["options"]["test_fraction"] == 0.5
    snapshot = ExportSnapshot.objects.get()
    assert snapshot.created_by is not None
    assert snapshot.created_by.username == "boss"

    run_snapshot(snapshot.pk)  # what the worker's task does

    finished = call(client, "get", f"{base}/1", tokens["manager"]).json()
    assert finished["status"] == "done"
    assert finished["row_count"] == 2
    assert finished["item_count"] == 2
    names = {f["name"]: f for f in finished["files"]}
    assert set(names) == {"trl-preference.jsonl", "README.md"}
    download = call(client, "get", f"{base}/1/files/trl-preference.jsonl", tokens["manager"])
    assert download.status_code == 200
    assert download.streaming
    data = b"".join(download.streaming_content)
    assert data == (Path(snapshot.path) / "trl-preference.jsonl").read_bytes()
    assert len(data) == names["trl-preference.jsonl"]["bytes"]
    assert 'filename="api-prefs-v1-trl-preference.jsonl"' in download["Content-Disposition"]
    assert call(client, "get", f"{base}/1/files/../../settings.py", tokens["manager"]).status_code == 404
    assert call(client, "get", f"{base}/1/files/nothing.jsonl", tokens["manager"]).status_code == 404
    assert call(client, "get", f"{base}/9", tokens["manager"]).status_code == 404


def test_the_export_list_is_paginated_newest_first(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any
) -> None:
    for _ in range(3):
        done_snapshot(labelled)
    base = f"/api/projects/{labelled.slug}/exports"
    page = call(client, "get", f"{base}?limit=2&offset=0", tokens["superuser"]).json()
    assert page["count"] == 3
    assert [s["version"] for s in page["items"]] == [3, 2]
    rest = call(client, "get", f"{base}?limit=2&offset=2", tokens["superuser"]).json()
    assert [s["version"] for s in rest["items"]] == [1]
    first = rest["items"][0]
    assert first["format"] == "trl-preference"
    assert first["file_type"] == "jsonl"
    assert first["counts"]["sources"]
    assert first["code_version"].startswith("hybridpref")
    assert all(len(f["sha256"]) == 64 for f in first["files"])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"format": "csv-please"}, "unknown format 'csv-please'"),
        ({"format": "trl-preference", "file_type": "xlsx"}, "unknown file type 'xlsx'"),
        ({"format": "trl-preference", "options": {"aspect": "humour"}}, "aspect 'humour' is not one of"),
        ({"format": "trl-preference", "options": {"test_fraction": 3}}, "test_fraction must be between 0 and 1"),
    ],
)
def test_a_bad_export_request_is_400_naming_the_problem(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any, body: dict[str, Any], problem: str
) -> None:
    response = call(client, "post", f"/api/projects/{labelled.slug}/exports", tokens["manager"], body)
    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert not ExportSnapshot.objects.exists()


def test_an_unknown_or_mistyped_option_is_refused_by_name(
    labelled: Project, tokens: dict[str, str], export_dir: Path, client: Any
) -> None:
    base = f"/api/projects/{labelled.slug}/exports"
    unknown = call(client, "post", base, tokens["manager"], {"format": "trl-preference", "options": {"colour": 1}})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"][-1] == "colour"
    mistyped = call(client, "post", base, tokens["manager"], {"format": "trl-preference", "options": {"seed": "x"}})
    assert mistyped.status_code == 422
    assert mistyped.json()["detail"][0]["loc"][-1] == "seed"
    assert not ExportSnapshot.objects.exists()


def test_a_project_without_items_cannot_be_exported(tokens: dict[str, str], export_dir: Path, client: Any) -> None:
    empty: Any = ProjectFactory(slug="empty")
    response = call(client, "post", "/api/projects/empty/exports", tokens["superuser"], {"format": "trl-preference"})
    assert response.status_code == 400
    assert response.json() == {"detail": f"project {empty.slug} has no items to export"}


# --- candidates -----------------------------------------------------------------------------------


def test_a_manager_records_a_candidates_score(labelled: Project, tokens: dict[str, str], client: Any) -> None:
    candidate = RoutingCandidate.objects.create(project=labelled, budget=0.25, strategy="random")
    before = timezone.now()
    response = call(
        client,
        "post",
        f"/api/candidates/{candidate.pk}/score",
        tokens["manager"],
        {"score": 0.734, "metric": "pairwise_accuracy"},
    )
    assert response.status_code == 200
    data = response.json()
    assert data["id"] == candidate.pk
    assert data["project"] == "api-prefs"
    assert data["budget"] == 0.25
    assert data["score"] == 0.734
    assert data["score_source"] == "external"
    assert data["metric"] == "pairwise_accuracy"
    candidate.refresh_from_db()
    assert candidate.score == 0.734
    assert candidate.scored_at is not None
    assert candidate.scored_at >= before


def test_a_score_that_is_not_finite_is_400(labelled: Project, tokens: dict[str, str], client: Any) -> None:
    candidate = RoutingCandidate.objects.create(project=labelled, budget=0.5)
    response = call(client, "post", f"/api/candidates/{candidate.pk}/score", tokens["manager"], {"score": "NaN"})
    assert response.status_code == 400
    assert response.json() == {"detail": "score must be a finite number, not nan"}
    candidate.refresh_from_db()
    assert candidate.score is None


# --- schema ---------------------------------------------------------------------------------------


def test_the_openapi_schema_lists_the_paths_and_the_bearer_scheme(client: Any) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "HybridPref API"
    assert schema["info"]["version"] == "1"
    assert set(schema["paths"]) == {
        "/api/projects",
        "/api/projects/{slug}",
        "/api/projects/{slug}/items",
        "/api/projects/{slug}/items/{item_id}",
        "/api/projects/{slug}/annotations",
        "/api/projects/{slug}/judgments",
        "/api/projects/{slug}/routing-runs",
        "/api/projects/{slug}/routing-runs/{run_id}",
        "/api/projects/{slug}/exports",
        "/api/projects/{slug}/exports/{version}",
        "/api/projects/{slug}/exports/{version}/files/{name}",
        "/api/candidates/{candidate_id}/score",
    }
    assert set(schema["paths"]["/api/projects/{slug}/exports"]) == {"get", "post"}
    assert any(s.get("scheme") == "bearer" for s in schema["components"]["securitySchemes"].values())
    options = schema["components"]["schemas"]["ExportOptionsIn"]["properties"]
    assert set(options) == set(OPTION_KEYS)


def test_the_docs_page_is_off_so_nothing_loads_from_a_cdn(client: Any) -> None:
    assert client.get("/api/docs").status_code in (302, 404)
