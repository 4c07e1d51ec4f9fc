"""Schemathesis against the API's OpenAPI schema, through Django's WSGI application: no request it makes
from the schema gets a server error (5xx), whether its path names nothing or a real project and its objects.

Requests run in this thread, inside the test's transaction (as Django's test client does, the request
signals are kept from closing the connection), with a manager's token. Few examples per operation keep it
under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from routing.features import LEXICAL_FEATURES
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.api import create_token
from webapp.models import HumanAnnotation, Judge, Judgment, Membership, RoutingCandidate, RoutingRun
from webapp.services.exports import create_snapshot, run_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SLUG = "fuzzed"


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """NDJSON request bodies: the generated array's elements, one JSON object a line."""
    rows = value if isinstance(value, list) else [value]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture
def wsgi_app(db: None) -> Iterator[WSGIHandler]:
    """Django's WSGI application, called in this thread: the request signals must not close the connection
    that holds the test's transaction (Django's test client disconnects them the same way)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(db: None, tmp_path: Path, settings: Any) -> dict[str, Any]:
    """A pairwise project with labelled items (features computed), a run, an export and a candidate."""
    settings.EXPORT_DIR = tmp_path / "exports"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    project: Any = ProjectFactory(slug=SLUG, aspects=["overall"])
    judge = Judge.objects.create(name="gpt-judge", backend=Judge.EXTERNAL)
    items = []
    for k, label in enumerate(["A-is-clearly-better", "B-is-slightly-better", "Tie"]):
        item: Any = ItemFactory(
            project=project,
            external_id=f"q{k}",
            features={"lexical": {name: 0.1 + 0.4 * k for name in LEXICAL_FEATURES}},
        )
        HumanAnnotation.objects.create(item=item, external_annotator="w", preferences={"overall": label})
        Judgment.objects.create(
            item=item, judge=judge, order="combined", prompt_version="v1", labels={"overall": label}, status="done"
        )
        items.append(item)
    boss: Any = UserFactory(username="fuzz-boss")
    MembershipFactory(project=project, user=boss, role=Membership.MANAGER)
    return {
        "manager": create_token(boss),
        "admin": create_token(UserFactory(username="fuzz-root", is_superuser=True)),
        "path": {
            "slug": SLUG,
            "item_id": items[0].pk,
            "run_id": RoutingRun.objects.create(project=project, strategy="random", budget=0.5).pk,
            "version": run_snapshot(create_snapshot(project, format="trl-preference").pk).version,
            "name": "trl-preference.jsonl",
            "candidate_id": RoutingCandidate.objects.create(project=project, budget=0.5).pk,
        },
    }


def fuzz(
    schema: Any, token: str, max_examples: int, path: dict[str, Any] | None = None, only: str | None = None
) -> list[str]:
    """Send each operation the schema's examples, then generated valid and invalid requests; answer the
    failures, one line each (none: an empty list).

    path: fixed path parameters (those an operation has), so that its requests reach a real object.
    only: the one operation to run ("POST /api/projects").
    """
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    # Bulk creation last: its new items have no routing features, and routing runs would refuse them.
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda o: o.label == BULK_CREATE)
    for operation in operations:
        if only and operation.label != only:
            continue
        fixed = {p.name: path[p.name] for p in operation.path_parameters if path and p.name in path}
        examples = operation.get_strategies_from_examples(fill_missing=True)
        strategies = {
            "examples": (st.one_of(examples), 3) if examples else None,
            "positive": (operation.as_strategy(GenerationMode.POSITIVE), max_examples),
            "negative": (operation.as_strategy(GenerationMode.NEGATIVE), max_examples),
        }
        for kind, entry in strategies.items():
            if entry is None:
                continue
            try:
                runner(*entry, fixed=fixed, headers=headers)()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports its failures as a group
                failures.append(f"{operation.label} ({kind}): {str(exc).strip()[:2000]}")
    return failures


BULK_CREATE = "POST /api/projects/{slug}/items"


def runner(strategy: Any, max_examples: int, *, fixed: dict[str, Any], headers: dict[str, str]) -> Any:
    """A Hypothesis test that sends each case (on the fixed path) and checks that the answer is not a 5xx."""

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.path_parameters = {**(case.path_parameters or {}), **fixed}
        response = case.call(headers=headers)
        STATUSES.append((case.operation.label, response.status_code))
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    return run


STATUSES: list[tuple[str, int]] = []


def test_no_generated_request_gets_a_server_error(fuzz_world: dict[str, Any], wsgi_app: WSGIHandler) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", wsgi_app)
    assert len(list(schema.get_all_operations())) == 16
    STATUSES.clear()
    failures = fuzz(schema, fuzz_world["manager"], max_examples=20, path=fuzz_world["path"])
    failures += fuzz(schema, fuzz_world["admin"], max_examples=20, only="POST /api/projects")  # admins only
    failures += fuzz(schema, fuzz_world["manager"], max_examples=5)  # paths naming nothing, or anything
    assert not failures, "\n\n".join(failures)
    # On the real project, each operation's requests got past the permission checks to a success.
    succeeded = {label for label, status in STATUSES if 200 <= status < 300}
    assert succeeded == {label for label, _ in STATUSES}
