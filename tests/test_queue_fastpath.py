"""The submit's fast path: the next item claimed in the submit's transaction
(services.annotations.submit_and_claim_next, queue.try_claim_next), as claim_next would, never waiting for a lock."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import AnnotatorProfile, Assignment, HumanAnnotation, Item, Membership, Project
from webapp.services.annotations import submit_and_claim_next
from webapp.services.queue import QueueClosed, claim_next, try_claim_next

ASPECTS = ["overall", "helpful"]


def answers(project: Project) -> dict[str, Any]:
    return {
        "preferences": dict.fromkeys(project.aspects, "A-is-slightly-better"),
        "confidence": {project.aspects[0]: "fairly-confident"},
        "justification": "A answers the question; B does not.",
    }


def make_annotator(project: Project, name: str) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    AnnotatorProfileFactory(user=user, tier=AnnotatorProfile.NORMAL)
    return user


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def project(db: None) -> Project:
    return ProjectFactory(slug="fast", aspects=ASPECTS, overlap_normal=2, overlap_expert=0)


@pytest.mark.django_db(transaction=True)
def test_try_claim_next_needs_a_transaction() -> None:
    project = ProjectFactory(slug="bare", aspects=ASPECTS, overlap_normal=2, overlap_expert=0)
    ItemFactory(project=project)
    alice = make_annotator(project, "alice")
    with pytest.raises(RuntimeError, match="transaction"):
        try_claim_next(project, alice)


# On SQLite (the embedded demo) try_claim_next leaves every claim to claim_next, after the submit's commit.
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is PostgreSQL's")


@postgres_only
def test_the_next_item_comes_with_the_submit_in_claim_nexts_order(project: Project) -> None:
    items = ItemFactory.create_batch(4, project=project)
    alice, bob = make_annotator(project, "alice"), make_annotator(project, "bob")
    first = claim_next(project, alice)
    assert first is not None
    assert first.item_id == items[0].pk
    bobs = claim_next(project, bob)
    assert bobs is not None
    assert bobs.item_id == items[0].pk  # the started item first

    annotation, created, claimed = submit_and_claim_next(bobs.pk, bob, answers(project), project=project)
    assert created
    assert annotation.assignment_id == bobs.pk
    assert claimed is not None
    assert claimed.item_id == items[1].pk
    assert claimed.status == Assignment.LEASED
    assert Assignment.objects.get(pk=bobs.pk).status == Assignment.SUBMITTED
    assert Item.objects.get(pk=items[1].pk).status == Item.IN_PROGRESS
    # alice's started item (one slot taken, one submitted) is complete only after her submit.
    assert Item.objects.get(pk=items[0].pk).status == Item.IN_PROGRESS
    _, _, alices_next = submit_and_claim_next(first.pk, alice, answers(project), project=project)
    assert Item.objects.get(pk=items[0].pk).status == Item.COMPLETE
    assert alices_next is not None
    assert alices_next.item_id == items[1].pk  # started by bob: most filled first


def test_an_annotator_holding_another_lease_is_left_to_claim_next(project: Project) -> None:
    ItemFactory.create_batch(3, project=project)
    alice = make_annotator(project, "alice")
    first = claim_next(project, alice)
    assert first is not None
    with transaction.atomic():
        assert try_claim_next(project, alice) == (False, None)
    assert claim_next(project, alice) == first  # the lease, renewed


@postgres_only
def test_routes_decided_in_the_statement_match_queue_routes(project: Project) -> None:
    unrouted = ItemFactory(project=project, route=Item.UNROUTED)
    alice, bob = make_annotator(project, "alice"), make_annotator(project, "bob")
    started = claim_next(project, alice)
    assert started is not None
    assert started.item_id == unrouted.pk
    human = ItemFactory(project=project, route=Item.HUMAN)
    # Once an item is routed to humans, the started unrouted item (one slot free) is no longer offered.
    with transaction.atomic():
        claimed, assignment = try_claim_next(project, bob)
    assert claimed
    assert assignment is not None
    assert assignment.item_id == human.pk


def test_a_closed_queue_leaves_the_submit_saved(project: Project) -> None:
    ItemFactory.create_batch(2, project=project)
    alice = make_annotator(project, "alice")
    assignment = claim_next(project, alice)
    assert assignment is not None
    AnnotatorProfile.objects.filter(user=alice).update(active=False)
    _, created, claimed = submit_and_claim_next(assignment.pk, alice, answers(project), project=project)
    assert created
    assert claimed is None
    assert HumanAnnotation.objects.filter(assignment=assignment).exists()
    with pytest.raises(QueueClosed):
        claim_next(project, alice)


N_THREADS = 12


@postgres_only  # (threads on one SQLite test database lock each other out, as in test_queue)
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n_items", [pytest.param(60, id="60-items"), pytest.param(8, id="8-items")])
def test_annotators_submitting_and_claiming_at_once_fill_every_item_exactly(n_items: int) -> None:
    project = ProjectFactory(slug="fastcrowd", aspects=ASPECTS, overlap_normal=2, overlap_expert=0)
    items = ItemFactory.create_batch(n_items, project=project)
    users = [make_annotator(project, f"fast{k}") for k in range(N_THREADS)]
    barrier = threading.Barrier(N_THREADS)
    errors: list[BaseException] = []
    submitted: dict[int, list[int]] = {}
    fast = Counter[str]()
    lock = threading.Lock()

    def work(user: Any) -> None:
        mine: list[int] = []
        try:
            local_project = Project.objects.get(pk=project.pk)
            barrier.wait(timeout=30)
            assignment = claim_next(local_project, user)
            while assignment is not None:
                annotation, created, claimed = submit_and_claim_next(
                    assignment.pk, user, answers(local_project), project=local_project
                )
                assert created
                mine.append(annotation.pk)
                with lock:
                    fast["in the submit" if claimed is not None else "after it"] += 1
                assignment = claimed if claimed is not None else claim_next(local_project, user)
        except BaseException as exc:
            errors.append(exc)
        finally:
            submitted[user.pk] = mine
            connection.close()

    threads = [threading.Thread(target=work, args=(user,)) for user in users]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors
    rows = list(HumanAnnotation.objects.filter(item__project=project).values_list("pk", "item_id", "annotator"))
    assert len(rows) == n_items * 2
    assert set(Counter(item for _, item, _ in rows).values()) == {2}
    assert max(Counter((item, user) for _, item, user in rows).values()) == 1
    assert {pk for pks in submitted.values() for pk in pks} == {pk for pk, _, _ in rows}
    assert set(Item.objects.filter(project=project).values_list("status", flat=True)) == {Item.COMPLETE}
    assert Assignment.objects.filter(item__in=items).exclude(status=Assignment.SUBMITTED).count() == 0
    if n_items > N_THREADS:  # (with fewer items than annotators, every claim may meet locked or filled items)
        assert fast["in the submit"] > 0
    print(f"\n{N_THREADS} threads, {n_items} items: {time.monotonic() - started:.2f}s, {dict(fast)}")
