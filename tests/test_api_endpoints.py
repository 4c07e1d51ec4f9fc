"""The JSON API's projects, items, annotations, judgments and routing runs: every endpoint's permissions,
bulk item creation (all or nothing), pagination and NDJSON streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from routing.features import LEXICAL_FEATURES
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import api as api_module
from webapp.api import create_token, hash_token
from webapp.models import (
    ApiToken,
    ExportSnapshot,
    HumanAnnotation,
    Item,
    Judge,
    Judgment,
    Membership,
    Project,
    Response,
    RoutingCandidate,
    RoutingRun,
)
from webapp.services.exports import create_snapshot, run_snapshot

pytestmark = pytest.mark.django_db

A_CLEAR, B_SLIGHT = "A-is-clearly-better", "B-is-slightly-better"
SLUG = "api-prefs"


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def member(project: Project, username: str, role: str) -> str:
    user = UserFactory(username=username)
    MembershipFactory(project=project, user=user, role=role)
    return create_token(user, f"{username}'s laptop")


def native(external_id: str, **extra: Any) -> dict[str, Any]:
    """A valid native-format row for a pairwise project."""
    return {
        "id": external_id,
        "prompt": f"Question {external_id}?",
        "responses": [{"text": "A"}, {"text": "B"}],
    } | extra


def ndjson(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """The users here never log in with a password: hash theirs cheaply (PBKDF2 takes most of a setup)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def export_dir(tmp_path: Path, settings: Any) -> Path:
    settings.EXPORT_DIR = tmp_path / "exports"
    return settings.EXPORT_DIR


@pytest.fixture
def world(db: None, export_dir: Path) -> dict[str, Any]:
    """A pairwise project with two items (features computed), human annotations, a judgment, a routing run,
    an export snapshot and a routing candidate; and another project with an item of its own."""
    project: Any = ProjectFactory(slug=SLUG, aspects=["overall"])
    alice: Any = UserFactory(username="alice")
    judge = Judge.objects.create(name="gpt-judge", backend=Judge.EXTERNAL, model="gpt")
    items = []
    for k, label in enumerate([A_CLEAR, B_SLIGHT]):
        item: Any = ItemFactory(
            project=project,
            external_id=f"q{k}",
            prompt=f"Question {k}?",
            responses=[f"A{k}", f"B{k}"],
            features={"lexical": {name: 0.2 + 0.5 * k for name in LEXICAL_FEATURES}},
        )
        HumanAnnotation.objects.create(
            item=item, annotator=alice, tier="normal", preferences={"overall": label}, justification=f"alice {k}"
        )
        Judgment.objects.create(
            item=item, judge=judge, order="combined", prompt_version="v1", labels={"overall": label}, status="done"
        )
        items.append(item)
    run = RoutingRun.objects.create(project=project, strategy="random", budget=0.5, budget_n=1, status="done")
    snapshot = run_snapshot(create_snapshot(project, format="trl-preference").pk)
    candidate = RoutingCandidate.objects.create(project=project, budget=0.5, strategy="random")
    other: Any = ProjectFactory(slug="other-project")
    other_item: Any = ItemFactory(project=other, external_id="elsewhere")
    return {
        "project": project,
        "items": items,
        "run": run,
        "snapshot": snapshot,
        "candidate": candidate,
        "other": other,
        "other_item": other_item,
    }


@pytest.fixture
def tokens(world: dict[str, Any]) -> dict[str, str]:
    """A token per kind of caller."""
    project, other = world["project"], world["other"]
    revoked = member(project, "former", Membership.MANAGER)
    ApiToken.objects.filter(key_hash=hash_token(revoked)).update(revoked=True)
    inactive = member(project, "gone", Membership.MANAGER)
    get_user_model().objects.filter(username="gone").update(is_active=False)
    return {
        "manager": member(project, "boss", Membership.MANAGER),
        "annotator": member(project, "ann", Membership.ANNOTATOR),
        "other_manager": member(other, "elsewhere", Membership.MANAGER),
        "admin": create_token(UserFactory(username="root", is_superuser=True, is_staff=True)),
        "revoked": revoked,
        "inactive": inactive,
        "garbage": "hp_not-a-token-anyone-was-given",
    }


def send(client: Any, method: str, url: str, token: str | None, body: Any = None, content_type: str = "") -> Any:
    headers = bearer(token)
    if method == "get":
        return client.get(url, headers=headers)
    if isinstance(body, str):  # items: a JSON array, or NDJSON
        content_type = content_type or ("application/json" if body.startswith("[") else "application/x-ndjson")
        return client.post(url, body, content_type=content_type, headers=headers)
    return client.post(url, body if body is not None else {}, content_type="application/json", headers=headers)


# --- every endpoint's permission matrix ------------------------------------------------------------

# Who may call an endpoint: anyone with a token, the project's members, its managers, or administrators.
ANYONE, MEMBERS, MANAGERS, ADMINS = "anyone", "members", "managers", "admins"

# (name, method, URL ({slug}, {item}, {run}, {version}, {candidate}), body, who, status when allowed)
ENDPOINTS: list[tuple[str, str, str, Any, str, int]] = [
    ("list projects", "get", "/api/projects", None, ANYONE, 200),
    ("create a project", "post", "/api/projects", {"slug": "fresh", "aspects": ["overall"]}, ADMINS, 201),
    ("read a project", "get", "/api/projects/{slug}", None, MEMBERS, 200),
    ("list items", "get", "/api/projects/{slug}/items", None, MANAGERS, 200),
    ("bulk create items", "post", "/api/projects/{slug}/items", ndjson([native("new-1")]), MANAGERS, 200),
    ("read an item", "get", "/api/projects/{slug}/items/{item}", None, MANAGERS, 200),
    ("list annotations", "get", "/api/projects/{slug}/annotations", None, MANAGERS, 200),
    ("stream annotations", "get", "/api/projects/{slug}/annotations?format=ndjson", None, MANAGERS, 200),
    ("list judgments", "get", "/api/projects/{slug}/judgments", None, MANAGERS, 200),
    ("stream judgments", "get", "/api/projects/{slug}/judgments?format=ndjson", None, MANAGERS, 200),
    (
        "start a routing run",
        "post",
        "/api/projects/{slug}/routing-runs",
        {"strategy": "random", "budget": 0.5},
        MANAGERS,
        202,
    ),
    ("list routing runs", "get", "/api/projects/{slug}/routing-runs", None, MANAGERS, 200),
    ("read a routing run", "get", "/api/projects/{slug}/routing-runs/{run}", None, MANAGERS, 200),
    ("list exports", "get", "/api/projects/{slug}/exports", None, MANAGERS, 200),
    ("start an export", "post", "/api/projects/{slug}/exports", {"format": "trl-preference"}, MANAGERS, 202),
    ("read an export", "get", "/api/projects/{slug}/exports/{version}", None, MANAGERS, 200),
    (
        "download an export file",
        "get",
        "/api/projects/{slug}/exports/{version}/files/trl-preference.jsonl",
        None,
        MANAGERS,
        200,
    ),
    ("record a candidate's score", "post", "/api/candidates/{candidate}/score", {"score": 0.5}, MANAGERS, 200),
]

# The callers, and which of the above each may call.
CALLERS: dict[str | None, set[str]] = {
    None: set(),  # anonymous
    "garbage": set(),
    "revoked": set(),
    "inactive": set(),
    "annotator": {ANYONE, MEMBERS},
    "other_manager": {ANYONE},
    "manager": {ANYONE, MEMBERS, MANAGERS},
    "admin": {ANYONE, MEMBERS, MANAGERS, ADMINS},
}
UNAUTHENTICATED = {None, "garbage", "revoked", "inactive"}


def expected_status(caller: str | None, who: str, allowed: int) -> int:
    if caller in UNAUTHENTICATED:
        return 401
    return allowed if who in CALLERS[caller] else 403


def written(world: dict[str, Any]) -> dict[str, int]:
    """What a write endpoint would add."""
    return {
        "projects": Project.objects.count(),
        "items": Item.objects.count(),
        "runs": RoutingRun.objects.count(),
        "exports": ExportSnapshot.objects.count(),
        "scored": RoutingCandidate.objects.filter(score__isnull=False).count(),
    }


MATRIX = [
    pytest.param(name, method, url, body, who, ok, caller, id=f"{name} as {caller or 'anonymous'}")
    for name, method, url, body, who, ok in ENDPOINTS
    for caller in CALLERS
]


@pytest.mark.parametrize(("name", "method", "url", "body", "who", "ok", "caller"), MATRIX)
def test_every_endpoint_answers_each_caller_as_the_ui_would(
    world: dict[str, Any],
    tokens: dict[str, str],
    client: Any,
    name: str,
    method: str,
    url: str,
    body: Any,
    who: str,
    ok: int,
    caller: str | None,
) -> None:
    url = url.format(
        slug=SLUG,
        item=world["items"][0].pk,
        run=world["run"].pk,
        version=world["snapshot"].version,
        candidate=world["candidate"].pk,
    )
    before = written(world)
    response = send(client, method, url, tokens[caller] if caller else None, body)
    status = expected_status(caller, who, ok)
    assert response.status_code == status, (name, caller, response.content[:300])
    if response.streaming:
        b"".join(response.streaming_content)
    if status >= 400:
        if not response.streaming:
            assert "detail" in response.json()
        assert written(world) == before  # a refused call writes nothing
    elif method == "post":
        assert written(world) != before


def test_the_matrix_covers_every_operation_in_the_schema(client: Any) -> None:
    schema = client.get("/api/openapi.json").json()
    operations = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    covered = set()
    for _, method, url, *_ in ENDPOINTS:
        path = url.split("?")[0].replace("{item}", "{item_id}").replace("{run}", "{run_id}")
        path = path.replace("{candidate}", "{candidate_id}").replace("trl-preference.jsonl", "{name}")
        covered.add((method, path))
    assert operations == covered


def test_an_unknown_project_or_another_projects_object_is_404(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    manager, admin = tokens["manager"], tokens["admin"]
    for path in ("", "/items", "/annotations", "/judgments", "/routing-runs", "/exports"):
        response = send(client, "get", f"/api/projects/no-such-project{path}", admin)
        assert response.status_code == 404
        assert response.json() == {"detail": "No such project"}
    other_item = world["other_item"].pk
    assert send(client, "get", f"/api/projects/{SLUG}/items/{other_item}", manager).status_code == 404
    other_run = RoutingRun.objects.create(project=world["other"], strategy="random", budget=1, budget_n=1)
    response = send(client, "get", f"/api/projects/{SLUG}/routing-runs/{other_run.pk}", manager)
    assert response.status_code == 404
    assert response.json() == {"detail": "No such routing run"}
    assert send(client, "get", f"/api/projects/{SLUG}/items/99999999999999999999", manager).status_code == 404


def test_a_non_member_is_told_403_not_the_projects_contents(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    response = send(client, "get", f"/api/projects/{SLUG}", tokens["other_manager"])
    assert response.status_code == 403
    assert response.json() == {"detail": "You are not a member of this project."}
    response = send(client, "get", f"/api/projects/{SLUG}/items", tokens["annotator"])
    assert response.status_code == 403
    assert response.json() == {"detail": "Only the project's managers may do this."}


# --- projects -------------------------------------------------------------------------------------


def test_each_caller_lists_only_the_projects_they_may_see_with_their_role(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    def listed(token: str) -> dict[str, tuple[str, int]]:
        page = send(client, "get", "/api/projects", token).json()
        assert page["count"] == len(page["items"])
        return {p["slug"]: (p["role"], p["n_items"]) for p in page["items"]}

    assert listed(tokens["admin"]) == {SLUG: ("manager", 2), "other-project": ("manager", 1)}
    assert listed(tokens["manager"]) == {SLUG: ("manager", 2)}
    assert listed(tokens["annotator"]) == {SLUG: ("annotator", 2)}
    assert listed(tokens["other_manager"]) == {"other-project": ("manager", 1)}
    loner = create_token(UserFactory(username="loner"))
    assert listed(loner) == {}


def test_a_project_shows_its_scheme_and_counts_to_its_members(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    data = send(client, "get", f"/api/projects/{SLUG}", tokens["annotator"]).json()
    assert data["slug"] == SLUG
    assert data["role"] == "annotator"
    assert data["scheme"]["kind"] == "pairwise"
    assert data["scheme"]["scale"] == "likert5"
    assert data["scheme"]["aspects"] == ["overall"]
    assert data["counts"] == {
        "items": 2,
        "items_by_route": {"unrouted": 2, "human": 0, "ai": 0},
        "items_by_status": {"pending": 2, "in_progress": 0, "complete": 0, "skipped": 0},
        "human_annotations": 2,
        "judgments": 2,
        "routing_runs": 1,
        "exports": 1,
    }


def test_an_admin_creates_a_project_with_its_scheme(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    body = {
        "slug": "helpsteer",
        "name": "HelpSteer",
        "scale": "strength7",
        "aspects": ["overall", "helpful"],
        "reasons": {"overall": ["clearer"]},
        "rating_attributes": ["helpfulness"],
        "overlap_normal": 3,
        "cost_per_human_annotation": "0.25",
    }
    response = send(client, "post", "/api/projects", tokens["admin"], body)
    assert response.status_code == 201
    data = response.json()
    assert data["slug"] == "helpsteer"
    assert data["scheme"]["scale"] == "strength7"
    assert data["scheme"]["reasons"] == {"overall": ["clearer"]}
    assert data["cost_per_human_annotation"] == 0.25
    assert data["counts"]["items"] == 0
    project = Project.objects.get(slug="helpsteer")
    assert project.overlap_normal == 3
    assert not project.memberships.exists()  # a superuser sees every project anyway


def test_staff_with_the_add_project_permission_create_a_project_and_manage_it(
    world: dict[str, Any], client: Any
) -> None:
    staff: Any = UserFactory(username="staffer", is_staff=True)
    token = create_token(staff)
    assert send(client, "post", "/api/projects", token, {"slug": "staffed"}).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="add_project"))
    response = send(client, "post", "/api/projects", token, {"slug": "staffed"})
    assert response.status_code == 201
    assert response.json()["role"] == "manager"
    assert Membership.objects.get(project__slug="staffed", user=staff).role == Membership.MANAGER
    assert send(client, "get", "/api/projects/staffed/items", token).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"slug": "x", "kind": "triplet"}, "kind", "'triplet' is not one of pairwise, ranking"),
        ({"slug": "x", "scale": "stars"}, "scale", "'stars' is not one of likert5, strength7"),
        ({"slug": "x", "aspects": []}, "aspects", "at least one aspect is needed"),
        ({"slug": "x", "aspects": ["a b"]}, "aspects", "'a b' must be letters, digits, '-' or '_'"),
        ({"slug": "x", "reasons": {"style": ["nice"]}}, "reasons", "reasons given for unknown aspect 'style'"),
        ({"slug": "x", "rating_attributes": ["charm"]}, "rating_attributes", "'charm' is not one of"),
        ({"slug": "Not A Slug"}, "slug", "not a slug"),
        ({"slug": SLUG}, "slug", f"a project {SLUG!r} already exists"),
    ],
)
def test_a_bad_project_is_400_naming_the_field_and_nothing_is_written(
    world: dict[str, Any], tokens: dict[str, str], client: Any, body: dict[str, Any], field: str, message: str
) -> None:
    before = Project.objects.count()
    response = send(client, "post", "/api/projects", tokens["admin"], body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    assert errors[0]["message"].startswith(message)
    assert Project.objects.count() == before


def test_a_mistyped_or_unstorable_project_field_is_422_by_name(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    for body, field in [
        ({"slug": "x", "overlap_normal": 40000}, "overlap_normal"),
        ({"slug": "x", "colour": "red"}, "colour"),
        ({"slug": "x", "name": "nul\u0000"}, "name"),
        ({"slug": "x", "state": "open"}, "state"),
        ({"slug": "x", "cost_per_human_annotation": "0.00001"}, "cost_per_human_annotation"),
    ]:
        response = send(client, "post", "/api/projects", tokens["admin"], body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"][-1] == field
    assert not Project.objects.filter(slug="x").exists()


# --- items ----------------------------------------------------------------------------------------


def test_items_are_paginated_with_next_and_previous_links(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    project = world["project"]
    for k in range(2, 5):
        ItemFactory(project=project, external_id=f"q{k}")
    base = f"/api/projects/{SLUG}/items"
    first = send(client, "get", f"{base}?limit=2", tokens["manager"]).json()
    assert first["count"] == 5
    assert [i["external_id"] for i in first["items"]] == ["q0", "q1"]
    assert first["previous"] is None
    assert first["next"] == f"http://testserver{base}?limit=2&offset=2"
    second = send(client, "get", first["next"], tokens["manager"]).json()
    assert [i["external_id"] for i in second["items"]] == ["q2", "q3"]
    assert second["previous"] == f"http://testserver{base}?limit=2&offset=0"
    last = send(client, "get", second["next"], tokens["manager"]).json()
    assert [i["external_id"] for i in last["items"]] == ["q4"]
    assert last["next"] is None
    item = first["items"][0]
    assert item["n_human"] == 1
    assert item["n_judgments"] == 1
    assert item["route"] == "unrouted"
    assert send(client, "get", f"{base}?limit=1001", tokens["manager"]).status_code == 422
    assert send(client, "get", f"{base}?limit=0", tokens["manager"]).status_code == 422
    assert send(client, "get", f"{base}?offset=-1", tokens["manager"]).status_code == 422
    assert send(client, "get", f"{base}?offset=99999999999999999999", tokens["manager"]).status_code == 422
    assert send(client, "get", f"{base}?offset=100", tokens["manager"]).json()["items"] == []


def test_the_default_page_holds_100_rows(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    Item.objects.bulk_create([Item(project=world["project"], external_id=f"bulk-{k}", prompt="p") for k in range(120)])
    page = send(client, "get", f"/api/projects/{SLUG}/items", tokens["manager"]).json()
    assert page["count"] == 122
    assert len(page["items"]) == 100
    assert page["next"].endswith("?limit=100&offset=100")


def test_items_filter_by_route_and_status_and_keep_the_filter_in_next_links(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    project = world["project"]
    Item.objects.filter(external_id="q1").update(route="human", status="complete")
    for k in range(3):
        ItemFactory(project=project, external_id=f"h{k}", route="human")
    base = f"/api/projects/{SLUG}/items"

    def ids(query: str) -> list[str]:
        return [i["external_id"] for i in send(client, "get", f"{base}?{query}", tokens["manager"]).json()["items"]]

    assert ids("route=human") == ["q1", "h0", "h1", "h2"]
    assert ids("route=human&status=complete") == ["q1"]
    assert ids("route=unrouted") == ["q0"]
    page = send(client, "get", f"{base}?route=human&limit=3", tokens["manager"]).json()
    assert page["next"] == f"http://testserver{base}?route=human&limit=3&offset=3"
    assert send(client, "get", f"{base}?route=robot", tokens["manager"]).status_code == 422


def test_an_item_comes_with_its_responses_in_canonical_order(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    item = world["items"][1]
    data = send(client, "get", f"/api/projects/{SLUG}/items/{item.pk}", tokens["manager"]).json()
    assert data["external_id"] == "q1"
    assert data["prompt"] == "Question 1?"
    assert [(r["position"], r["text"], r["model_name"]) for r in data["responses"]] == [
        (0, "A1", "model-0"),
        (1, "B1", "model-1"),
    ]
    assert data["features"]["lexical"]["rouge"] == pytest.approx(0.7)


def test_a_manager_bulk_creates_items_from_a_json_array(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    rows = [
        native("n1", metadata={"source": "api"}),
        native(
            "n2",
            human_annotations=[{"annotator": "w1", "labels": {"overall": A_CLEAR}}],
            llm_annotations=[{"judge": "gpt-judge", "labels": {"overall": B_SLIGHT}}],
        ),
    ]
    response = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], rows)
    assert response.status_code == 200
    assert response.json() == {"created": 2, "updated": 0, "unchanged": 0, "changed_not_updated": []}
    n1 = Item.objects.get(project=world["project"], external_id="n1")
    assert n1.metadata == {"source": "api"}
    assert list(Response.objects.filter(item=n1).values_list("text", flat=True)) == ["A", "B"]
    n2 = Item.objects.get(project=world["project"], external_id="n2")
    assert HumanAnnotation.objects.get(item=n2).external_annotator == "w1"
    assert Judgment.objects.get(item=n2).judge.name == "gpt-judge"


def test_ndjson_items_are_created_and_a_resend_changes_nothing_unless_asked(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    url = f"/api/projects/{SLUG}/items"
    body = ndjson([native("n1"), native("n2")])
    first = send(client, "post", url, tokens["manager"], body)
    assert first.json() == {"created": 2, "updated": 0, "unchanged": 0, "changed_not_updated": []}
    again = send(client, "post", url, tokens["manager"], body)
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 2, "changed_not_updated": []}
    changed = ndjson([native("n1", prompt="Changed?"), native("n2")])
    kept = send(client, "post", url, tokens["manager"], changed)
    assert kept.json() == {"created": 0, "updated": 0, "unchanged": 1, "changed_not_updated": ["n1"]}
    assert Item.objects.get(external_id="n1").prompt == "Question n1?"
    updated = send(client, "post", f"{url}?update=true", tokens["manager"], changed)
    assert updated.json() == {"created": 0, "updated": 1, "unchanged": 1, "changed_not_updated": []}
    assert Item.objects.get(external_id="n1").prompt == "Changed?"


def test_ndjson_sent_as_application_json_is_read_line_by_line(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    body = ndjson([native("n1"), native("n2")])
    response = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], body, "application/json")
    assert response.status_code == 200
    assert response.json()["created"] == 2


@pytest.mark.parametrize(
    ("body", "row", "field", "message"),
    [
        (ndjson([native("n1"), {"id": "n2", "prompt": "?"}]), "line 2", "responses", "Field required"),
        (ndjson([native("n1"), native("n2", responses=[{"text": "only one"}])]), "line 2", "responses", "a pairwise"),
        (ndjson([native("n1"), "{not json"]), "line 2", "", "invalid JSON"),
        (ndjson([native("n1"), native("n1")]), "line 2", "id", "duplicate id 'n1' (also at line 1)"),
        (ndjson([native("n1", colour="red")]), "line 1", "colour", "unknown field"),
        (ndjson([native("n1", prompt="nul\u0000")]), "line 1", "prompt", "contains a NUL character"),
        (
            ndjson([native("n1", human_annotations=[{"annotator": "w", "labels": {"overall": "Best"}}])]),
            "line 1",
            "human_annotations.0.preferences.overall",  # as the file import names it
            "",
        ),
        (json.dumps([native("n1"), native("n2", id="")]), "item 2", "id", "must not be empty"),
        (json.dumps([native("n1"), 7]), "item 2", "", "expected a JSON object"),
        ("", "", "", "the request holds no items"),
    ],
)
def test_a_bad_row_is_400_naming_the_row_and_field_and_nothing_is_written(
    world: dict[str, Any], tokens: dict[str, str], client: Any, body: str, row: str, field: str, message: str
) -> None:
    items = Item.objects.count()
    response = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], body)
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["total"] == len(data["errors"]) == 1
    error = data["errors"][0]
    assert (error["row"], error["field"]) == (row, field)
    assert message in error["message"]
    assert message in data["detail"]
    assert Item.objects.count() == items  # not even the good rows


def test_every_bad_row_is_reported_up_to_fifty(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    body = ndjson([native(f"n{k}", responses=[]) for k in range(60)])
    data = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], body).json()
    assert data["total"] == 60
    assert len(data["errors"]) == 50
    assert data["errors"][49]["row"] == "line 50"
    assert data["detail"].endswith("(and 59 more)")


def test_a_body_over_the_limit_is_413_and_writes_nothing(
    world: dict[str, Any], tokens: dict[str, str], client: Any, settings: Any
) -> None:
    settings.API_MAX_BULK_BYTES = 100
    response = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], ndjson([native("n1")] * 3))
    assert response.status_code == 413
    assert "over 100 bytes" in response.json()["detail"]
    assert not Item.objects.filter(external_id="n1").exists()


def test_the_body_is_read_in_chunks(
    world: dict[str, Any], tokens: dict[str, str], client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.services import api_support

    monkeypatch.setattr(api_support, "READ_CHUNK", 7)
    body = ndjson([native(f"n{k}") for k in range(5)])
    response = send(client, "post", f"/api/projects/{SLUG}/items", tokens["manager"], body)
    assert response.json()["created"] == 5


# --- annotations and judgments ----------------------------------------------------------------------


def test_annotations_are_paginated_and_filtered(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    base = f"/api/projects/{SLUG}/annotations"
    page = send(client, "get", f"{base}?limit=1", tokens["manager"]).json()
    assert page["count"] == 2
    assert page["next"] == f"http://testserver{base}?limit=1&offset=1"
    first = page["items"][0]
    assert first["item_external_id"] == "q0"
    assert first["annotator"] == "alice"
    assert first["preferences"] == {"overall": A_CLEAR}
    assert first["justification"] == "alice 0"
    assert first["imported"] is False
    only = send(client, "get", f"{base}?item=q1", tokens["manager"]).json()
    assert [a["item_external_id"] for a in only["items"]] == ["q1"]
    assert send(client, "get", f"{base}?tier=expert", tokens["manager"]).json()["count"] == 0
    elsewhere = world["other_item"]
    HumanAnnotation.objects.create(item=elsewhere, external_annotator="x", preferences={"overall": A_CLEAR})
    assert send(client, "get", base, tokens["manager"]).json()["count"] == 2  # not another project's


def ndjson_lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    text = b"".join(response.streaming_content).decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_annotations_stream_as_ndjson_one_object_a_line_like_the_pages(
    world: dict[str, Any], tokens: dict[str, str], client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_module, "STREAM_CHUNK", 2)  # several fetches from the server-side cursor
    for k in range(2, 7):
        item: Any = ItemFactory(project=world["project"], external_id=f"q{k}")
        HumanAnnotation.objects.create(item=item, external_annotator=f"w{k}", preferences={"overall": A_CLEAR})
    base = f"/api/projects/{SLUG}/annotations"
    lines = ndjson_lines(send(client, "get", f"{base}?format=ndjson&limit=1", tokens["manager"]))
    assert len(lines) == 7  # every row: limit and offset do not apply
    page = send(client, "get", f"{base}?limit=1000", tokens["manager"]).json()
    assert lines == page["items"]
    assert [line["item_external_id"] for line in lines] == [f"q{k}" for k in range(7)]
    assert lines[-1]["annotator"] is None
    assert lines[-1]["external_annotator"] == "w6"
    filtered = ndjson_lines(send(client, "get", f"{base}?format=ndjson&item=q3", tokens["manager"]))
    assert [line["external_annotator"] for line in filtered] == ["w3"]


def test_an_empty_ndjson_stream_is_empty(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    response = send(client, "get", f"/api/projects/{SLUG}/annotations?format=ndjson&tier=expert", tokens["manager"])
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b""


def test_judgments_are_paginated_filtered_and_streamed(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    other_judge = Judge.objects.create(name="rm", backend=Judge.EXTERNAL)
    Judgment.objects.create(
        item=world["items"][0], judge=other_judge, order="0-1", prompt_version="v1", status="failed", error="x"
    )
    base = f"/api/projects/{SLUG}/judgments"
    page = send(client, "get", base, tokens["manager"]).json()
    assert page["count"] == 3
    first = page["items"][0]
    assert first["judge"] == "gpt-judge"
    assert first["item_external_id"] == "q0"
    assert first["order"] == "combined"
    assert first["labels"] == {"overall": A_CLEAR}
    assert first["cost"] is None
    assert send(client, "get", f"{base}?judge=rm", tokens["manager"]).json()["count"] == 1
    assert send(client, "get", f"{base}?status=done", tokens["manager"]).json()["count"] == 2
    assert send(client, "get", f"{base}?order=0-1", tokens["manager"]).json()["count"] == 1
    lines = ndjson_lines(send(client, "get", f"{base}?format=ndjson&status=failed", tokens["manager"]))
    assert [(line["judge"], line["error"]) for line in lines] == [("rm", "x")]
    assert send(client, "get", f"{base}?status=maybe", tokens["manager"]).status_code == 422


# --- routing runs ---------------------------------------------------------------------------------


def test_a_manager_starts_a_routing_run_and_reads_it_back(
    world: dict[str, Any], tokens: dict[str, str], client: Any
) -> None:
    base = f"/api/projects/{SLUG}/routing-runs"
    body = {"strategy": "random", "budget": 0.5, "seed": 4, "candidates": 16}
    response = send(client, "post", base, tokens["manager"], body)
    assert response.status_code == 202
    run = response.json()
    assert run["strategy"] == "random"
    assert run["budget"] == 0.5
    assert run["budget_n"] == 1
    assert run["seed"] == 4
    assert run["n_candidates"] == 16
    assert run["status"] == "done"
    assert run["created_by"] == "boss"
    assert Item.objects.filter(project=world["project"], route="human").count() == 1
    assert Item.objects.filter(project=world["project"], route="ai").count() == 1
    assert send(client, "get", f"{base}/{run['id']}", tokens["manager"]).json() == run
    listed = send(client, "get", base, tokens["manager"]).json()
    assert listed["count"] == 2
    assert listed["items"][0] == run  # newest first


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        ({"strategy": "coin-toss", "budget": 0.5}, 400, "unknown strategy 'coin-toss'"),
        ({"strategy": "random", "budget": 1.5}, 400, "budget: a count above 1 must be whole"),
        ({"strategy": "ppm-topk", "budget": 0.5}, 400, "the performance model needs"),
        ({"strategy": "random", "budget": 0}, 422, "budget"),
        ({"strategy": "random", "budget": "NaN"}, 422, "budget"),
        ({"strategy": "random", "budget": 0.5, "seed": -1}, 422, "seed"),
        ({"strategy": "random", "budget": 0.5, "speed": 2}, 422, "speed"),
    ],
)
def test_a_routing_run_that_cannot_be_made_is_refused_and_writes_nothing(
    world: dict[str, Any], tokens: dict[str, str], client: Any, body: dict[str, Any], status: int, problem: str
) -> None:
    response = send(client, "post", f"/api/projects/{SLUG}/routing-runs", tokens["manager"], body)
    assert response.status_code == status
    detail = response.json()["detail"]
    if status == 400:
        assert problem in detail
    else:
        assert detail[0]["loc"][-1] == problem
    assert RoutingRun.objects.count() == 1
    assert not Item.objects.exclude(route="unrouted").exists()


def test_routing_runs_are_paginated(world: dict[str, Any], tokens: dict[str, str], client: Any) -> None:
    for budget in (0.1, 0.2):
        RoutingRun.objects.create(project=world["project"], strategy="random", budget=budget)
    base = f"/api/projects/{SLUG}/routing-runs"
    page = send(client, "get", f"{base}?limit=2", tokens["admin"]).json()
    assert page["count"] == 3
    assert [r["budget"] for r in page["items"]] == [0.2, 0.1]
    assert page["next"] == f"http://testserver{base}?limit=2&offset=2"


def test_pages_and_streams_take_the_same_few_queries_however_many_rows(
    world: dict[str, Any], tokens: dict[str, str], client: Any, django_assert_max_num_queries: Any
) -> None:
    judge = Judge.objects.get(name="gpt-judge")
    for k in range(2, 30):
        item: Any = ItemFactory(project=world["project"], external_id=f"q{k}")
        HumanAnnotation.objects.create(item=item, external_annotator=f"w{k}", preferences={"overall": A_CLEAR})
        Judgment.objects.create(item=item, judge=judge, order="combined", prompt_version="v1", status="done")
    for path in ("items", "annotations", "judgments", "annotations?format=ndjson", "judgments?format=ndjson"):
        # The token (and its last use), the project with the membership, the count and the page (or the cursor).
        with django_assert_max_num_queries(6):
            response = send(client, "get", f"/api/projects/{SLUG}/{path}", tokens["manager"])
            if response.streaming:
                assert len(b"".join(response.streaming_content).splitlines()) == 30
            else:
                assert len(response.json()["items"]) == 30
