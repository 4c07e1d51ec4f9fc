"""The queue's statements keep index plans: a prepared statement's generic plan, made while the assignment
table holds a few rows (a new installation), must not read that table whole (services.queue.index_plans)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import AnnotatorProfile, Membership, Project
from webapp.services import queue

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan cache"),
]

# The parameters of the queue's statements, by name, with their types (PREPARE needs them).
TYPES = {"now": "timestamptz", "overlap": "int", "project": "bigint", "tier": "varchar", "user": "bigint"}


def annotator(project: Project, name: str) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    AnnotatorProfileFactory(user=user, tier=AnnotatorProfile.NORMAL)
    return user


def queue_statements(project: Project, user: Any) -> list[tuple[str, dict[str, Any]]]:
    """The statements with which the queue looks for the user's next item (rolled back)."""
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture), transaction.atomic():
        queue._lock_by_status(project, user, AnnotatorProfile.NORMAL, 2, timezone.now())
        transaction.set_rollback(True)
    return captured


def generic_plan(sql: str, params: dict[str, Any], *, index_plans: bool) -> str:
    names = sorted(set(re.findall(r"%\((\w+)\)s", sql)))
    for k, name in enumerate(names):
        sql = sql.replace(f"%({name})s", f"${k + 1}")
    values = ", ".join(f"'{params[n].isoformat()}'" if n == "now" else f"'{params[n]}'" for n in names)
    with transaction.atomic(), connection.cursor() as cursor:
        if index_plans:
            queue.index_plans()
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE queue_plan_test({', '.join(TYPES[n] for n in names)}) AS {sql}")
        cursor.execute(f"EXPLAIN EXECUTE queue_plan_test({values})")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE queue_plan_test")
        transaction.set_rollback(True)
    return plan


def test_a_generic_plan_made_on_a_near_empty_assignment_table_uses_its_indexes() -> None:
    project = ProjectFactory(slug="plans", overlap_normal=2, overlap_expert=0)
    ItemFactory.create_batch(40, project=project)
    users = [annotator(project, f"a{k}") for k in range(12)]
    for user in users[:-1]:  # a few rows: some items started, with a slot taken
        queue.claim_next(project, user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    statements = queue_statements(project, users[-1])
    assert statements
    for sql, params in statements:
        plan = generic_plan(sql, params, index_plans=True)
        assert "Seq Scan" not in plan, plan
        assert "webapp_assignment" in plan
    # What index_plans prevents: the same generic plan, made without it, reads the table whole.
    unguarded = generic_plan(*statements[0], index_plans=False)
    assert "Seq Scan on webapp_assignment" in unguarded


def test_index_plans_lasts_for_the_transaction_only() -> None:
    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW enable_seqscan")
            return str(cursor.fetchone()[0])

    with transaction.atomic():
        queue.index_plans()
        assert setting() == "off"
    assert setting() == "on"
