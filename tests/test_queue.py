"""The work queue on PostgreSQL: leases, overlap per tier, expert routing, and many annotators at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp.models import AnnotatorProfile, Assignment, HumanAnnotation, Item, Membership, Project
from webapp.services.annotations import submit_annotation
from webapp.services.queue import QueueClosed, claim_next, display_order, lease_duration, queue_items

ASPECTS = ["overall", "helpful"]


def answers(project: Project) -> dict[str, Any]:
    """A complete, valid pairwise answer (shown order) for the project's scheme."""
    return {
        "preferences": dict.fromkeys(project.aspects, "A-is-slightly-better"),
        "confidence": {project.aspects[0]: "fairly-confident"},
        "justification": "A answers the question; B does not.",
    }


def make_annotator(
    project: Project, name: str, tier: str = AnnotatorProfile.NORMAL, domains: list[str] | None = None
) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    AnnotatorProfileFactory(user=user, tier=tier, domains=domains or [])
    return user


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def queue_project(db: None) -> Project:
    return ProjectFactory(slug="queue", aspects=ASPECTS, overlap_normal=2, overlap_expert=1)


def claim_and_submit(project: Project, user: Any) -> Assignment | None:
    assignment = claim_next(project, user)
    if assignment is not None:
        submit_annotation(assignment.pk, user, answers(project))
    return assignment


# --- leases ---------------------------------------------------------------------------------


def test_a_second_claim_returns_the_same_leased_assignment(queue_project: Project) -> None:
    ItemFactory.create_batch(3, project=queue_project)
    alice = make_annotator(queue_project, "alice")

    first = claim_next(queue_project, alice)
    assert first is not None
    assert first.status == Assignment.LEASED
    assert first.lease_expires_at > timezone.now() + lease_duration() - timedelta(minutes=1)
    second = claim_next(queue_project, alice)
    assert second is not None
    assert second.pk == first.pk
    assert Assignment.objects.filter(annotator=alice).count() == 1
    assert Item.objects.get(pk=first.item_id).status == Item.IN_PROGRESS


def test_the_default_lease_is_thirty_minutes(queue_project: Project) -> None:
    ItemFactory(project=queue_project)
    alice = make_annotator(queue_project, "alice")
    before = timezone.now()
    assignment = claim_next(queue_project, alice)
    assert assignment is not None
    lease = assignment.lease_expires_at - before
    assert timedelta(minutes=29) < lease <= timedelta(minutes=30, seconds=5)


def test_the_lease_follows_the_setting(queue_project: Project, settings: Any) -> None:
    settings.ANNOTATION_LEASE_MINUTES = 5
    ItemFactory(project=queue_project)
    alice = make_annotator(queue_project, "alice")
    assignment = claim_next(queue_project, alice)
    assert assignment is not None
    assert timedelta(minutes=4) < assignment.lease_expires_at - timezone.now() <= timedelta(minutes=5)


def test_the_display_order_is_a_seeded_permutation_recorded_on_the_assignment(queue_project: Project) -> None:
    ItemFactory(project=queue_project, responses=["one", "two", "three"])
    alice = make_annotator(queue_project, "alice")
    assignment = claim_next(queue_project, alice)
    assert assignment is not None
    assert sorted(assignment.display_order) == [0, 1, 2]
    assert assignment.display_order == display_order(assignment.item_id, alice.pk, 3)
    assert Assignment.objects.get(pk=assignment.pk).display_order == assignment.display_order


def test_display_orders_vary_over_items_and_annotators() -> None:
    orders = {tuple(display_order(item_id, 7, 2)) for item_id in range(40)}
    assert orders == {(0, 1), (1, 0)}
    assert display_order(3, 4, 5) == display_order(3, 4, 5)


def test_an_expired_lease_frees_the_slot_for_someone_else(queue_project: Project) -> None:
    queue_project.overlap_normal = 1
    queue_project.save()
    item = ItemFactory(project=queue_project)
    alice, bob = make_annotator(queue_project, "alice"), make_annotator(queue_project, "bob")

    mine = claim_next(queue_project, alice)
    assert mine is not None
    assert mine.item_id == item.pk
    assert claim_next(queue_project, bob) is None  # the only slot is leased

    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    taken = claim_next(queue_project, bob)
    assert taken is not None
    assert taken.item_id == item.pk

    # Alice comes back: her lease is gone and so is the slot; she is not given the item again.
    assert claim_next(queue_project, alice) is None
    assert Assignment.objects.get(pk=mine.pk).status == Assignment.EXPIRED


def test_an_expired_lease_is_renewed_while_the_slot_is_still_free(queue_project: Project) -> None:
    ItemFactory(project=queue_project)
    alice = make_annotator(queue_project, "alice")
    mine = claim_next(queue_project, alice)
    assert mine is not None
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=5))

    again = claim_next(queue_project, alice)
    assert again is not None
    assert again.pk == mine.pk
    assert again.lease_expires_at > timezone.now()
    assert Assignment.objects.get(pk=mine.pk).status == Assignment.LEASED


# --- never twice, overlap per tier ----------------------------------------------------------


def test_an_annotator_never_gets_the_same_item_twice(queue_project: Project) -> None:
    items = ItemFactory.create_batch(4, project=queue_project)
    alice = make_annotator(queue_project, "alice")
    seen = []
    while (assignment := claim_and_submit(queue_project, alice)) is not None:
        seen.append(assignment.item_id)
    assert sorted(seen) == sorted(i.pk for i in items)


def test_a_skipped_item_is_not_offered_again_to_the_same_annotator(queue_project: Project) -> None:
    from webapp.services.annotations import skip_assignment

    item = ItemFactory(project=queue_project)
    alice, bob = make_annotator(queue_project, "alice"), make_annotator(queue_project, "bob")
    mine = claim_next(queue_project, alice)
    assert mine is not None
    skip_assignment(mine.pk, alice, "Outside my expertise")
    assert claim_next(queue_project, alice) is None
    # The skipped slot is free again for others.
    assert claim_next(queue_project, bob).item_id == item.pk  # type: ignore[union-attr]


def test_overlap_is_counted_per_tier(queue_project: Project) -> None:
    # overlap_normal=2, overlap_expert=1: one item takes two normal and one expert annotator.
    item = ItemFactory(project=queue_project)
    normals = [make_annotator(queue_project, f"normal{k}") for k in range(3)]
    experts = [make_annotator(queue_project, f"expert{k}", tier=AnnotatorProfile.EXPERT) for k in range(2)]

    assert claim_and_submit(queue_project, normals[0]) is not None
    assert claim_and_submit(queue_project, normals[1]) is not None
    assert claim_next(queue_project, normals[2]) is None  # the normal slots are full ...
    expert = claim_next(queue_project, experts[0])  # ... the expert slot is not
    assert expert is not None
    assert expert.item_id == item.pk
    assert expert.tier == AnnotatorProfile.EXPERT
    assert claim_next(queue_project, experts[1]) is None  # one expert slot, leased

    tiers = Counter(Assignment.objects.filter(item=item).values_list("tier", flat=True))
    assert tiers == {"normal": 2, "expert": 1}


def test_a_tier_with_overlap_zero_gets_nothing(queue_project: Project) -> None:
    queue_project.overlap_expert = 0
    queue_project.save()
    ItemFactory(project=queue_project)
    expert = make_annotator(queue_project, "expert", tier=AnnotatorProfile.EXPERT)
    with pytest.raises(QueueClosed):
        claim_next(queue_project, expert)


def test_an_item_is_complete_once_every_slot_of_every_tier_is_submitted(queue_project: Project) -> None:
    item = ItemFactory(project=queue_project)
    first, second = make_annotator(queue_project, "n1"), make_annotator(queue_project, "n2")
    expert = make_annotator(queue_project, "e1", tier=AnnotatorProfile.EXPERT)

    assert item.status == Item.PENDING
    claim_and_submit(queue_project, first)
    item.refresh_from_db()
    assert item.status == Item.IN_PROGRESS
    claim_and_submit(queue_project, second)
    item.refresh_from_db()
    assert item.status == Item.IN_PROGRESS  # the expert slot is still open
    claim_and_submit(queue_project, expert)
    item.refresh_from_db()
    assert item.status == Item.COMPLETE
    assert HumanAnnotation.objects.filter(item=item).count() == 3


# --- experts and routing --------------------------------------------------------------------


def test_experts_get_items_of_their_domains_first(queue_project: Project) -> None:
    queue_project.overlap_expert = 2
    queue_project.save()
    plain = ItemFactory(project=queue_project, metadata={"subject": "History"})
    by_subject = ItemFactory(project=queue_project, metadata={"subject": "Chemistry"})
    by_study = ItemFactory(project=queue_project, metadata={"subject_study": "Biology"})
    by_category = ItemFactory(project=queue_project, metadata={"category": "Chemistry"})
    no_metadata = ItemFactory(project=queue_project)

    chemist = make_annotator(queue_project, "chemist", tier=AnnotatorProfile.EXPERT, domains=["Chemistry", "Biology"])
    got = []
    while (assignment := claim_and_submit(queue_project, chemist)) is not None:
        got.append(assignment.item_id)
    assert set(got[:3]) == {by_subject.pk, by_study.pk, by_category.pk}
    assert set(got[3:]) == {plain.pk, no_metadata.pk}

    # A normal annotator's order ignores domains (items already started first, then by id).
    normal = make_annotator(queue_project, "normal", domains=["History"])
    first = claim_next(queue_project, normal)
    assert first is not None
    assert first.item_id == plain.pk


def test_an_expert_without_domains_gets_items_in_order(queue_project: Project) -> None:
    items = ItemFactory.create_batch(3, project=queue_project, metadata={"subject": "Chemistry"})
    expert = make_annotator(queue_project, "expert", tier=AnnotatorProfile.EXPERT)
    assignment = claim_next(queue_project, expert)
    assert assignment is not None
    assert assignment.item_id == items[0].pk


def test_items_routed_to_ai_never_enter_the_queue(queue_project: Project) -> None:
    ai = ItemFactory(project=queue_project, route=Item.AI)
    unrouted = ItemFactory(project=queue_project, route=Item.UNROUTED)
    alice = make_annotator(queue_project, "alice")

    assert list(queue_items(queue_project)) == [unrouted]
    got = []
    while (assignment := claim_and_submit(queue_project, alice)) is not None:
        got.append(assignment.item_id)
    assert got == [unrouted.pk]
    assert not Assignment.objects.filter(item=ai).exists()


def test_once_any_item_is_routed_to_humans_only_those_are_queued(queue_project: Project) -> None:
    ItemFactory(project=queue_project, route=Item.UNROUTED)
    ItemFactory(project=queue_project, route=Item.AI)
    human = ItemFactory.create_batch(2, project=queue_project, route=Item.HUMAN)
    alice = make_annotator(queue_project, "alice")

    got = []
    while (assignment := claim_and_submit(queue_project, alice)) is not None:
        got.append(assignment.item_id)
    assert sorted(got) == sorted(i.pk for i in human)


# --- closed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [Project.CLOSED, Project.DRAFT])
def test_a_project_that_is_not_active_gives_nothing(queue_project: Project, state: str) -> None:
    ItemFactory(project=queue_project)
    alice = make_annotator(queue_project, "alice")
    queue_project.state = state
    queue_project.save()
    with pytest.raises(QueueClosed, match="not open"):
        claim_next(queue_project, alice)
    assert not Assignment.objects.exists()


def test_an_inactive_annotator_gets_nothing(queue_project: Project) -> None:
    ItemFactory(project=queue_project)
    alice = make_annotator(queue_project, "alice")
    AnnotatorProfile.objects.filter(user=alice).update(active=False)
    with pytest.raises(QueueClosed, match="paused"):
        claim_next(queue_project, alice)

    bob = make_annotator(queue_project, "bob")
    bob.is_active = False
    bob.save()
    with pytest.raises(QueueClosed):
        claim_next(queue_project, bob)
    assert not Assignment.objects.exists()


def test_a_user_without_a_profile_gets_a_normal_one(queue_project: Project) -> None:
    ItemFactory(project=queue_project)
    carol = UserFactory(username="carol")
    MembershipFactory(project=queue_project, user=carol)
    assignment = claim_next(queue_project, carol)
    assert assignment is not None
    assert assignment.tier == AnnotatorProfile.NORMAL
    assert AnnotatorProfile.objects.get(user=carol).tier == AnnotatorProfile.NORMAL


# --- many annotators at once ----------------------------------------------------------------

N_THREADS, OVERLAP = 20, 2


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "n_items",
    [
        pytest.param(100, id="100-items"),
        # Fewer items than annotators: most claims meet items that other claims hold locked.
        pytest.param(12, id="12-items"),
    ],
)
def test_twenty_annotators_at_once_fill_every_item_exactly_to_the_overlap(n_items: int) -> None:
    project = ProjectFactory(slug="crowd", aspects=ASPECTS, overlap_normal=OVERLAP, overlap_expert=0)
    items = ItemFactory.create_batch(n_items, project=project)
    users = [make_annotator(project, f"crowd{k}") for k in range(N_THREADS)]

    barrier = threading.Barrier(N_THREADS)
    submitted: dict[int, list[tuple[int, int, int]]] = {}  # user -> (annotation, item, assignment)
    errors: list[BaseException] = []
    overlapping = threading.Event()
    running = Counter[str]()
    lock = threading.Lock()

    def work(user: Any) -> None:
        mine: list[tuple[int, int, int]] = []
        try:
            # Each thread reads its own copy of the project, on its own connection.
            local_project = Project.objects.get(pk=project.pk)
            barrier.wait(timeout=30)
            while True:
                with lock:
                    running["in"] += 1
                    if running["in"] > 1:
                        overlapping.set()
                try:
                    assignment = claim_next(local_project, user)
                finally:
                    with lock:
                        running["in"] -= 1
                if assignment is None:
                    break
                annotation, created = submit_annotation(assignment.pk, user, answers(local_project))
                assert created
                mine.append((annotation.pk, assignment.item_id, assignment.pk))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            submitted[user.pk] = mine
            connection.close()

    threads = [threading.Thread(target=work, args=(user,), name=f"annotator-{user.pk}") for user in users]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=200)
    elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors
    assert overlapping.is_set(), "the threads never claimed at the same time"

    annotations = list(HumanAnnotation.objects.filter(item__project=project).values_list("pk", "item_id", "annotator"))
    assert len(annotations) == n_items * OVERLAP
    per_item = Counter(item_id for _, item_id, _ in annotations)
    assert set(per_item) == {item.pk for item in items}
    assert set(per_item.values()) == {OVERLAP}
    pairs = Counter((item_id, annotator) for _, item_id, annotator in annotations)
    assert max(pairs.values()) == 1

    # Nothing lost: every submit that returned is in the database, and nothing else is.
    returned = {entry for entries in submitted.values() for entry in entries}
    assert len(returned) == n_items * OVERLAP
    assert {pk for pk, _, _ in returned} == {pk for pk, _, _ in annotations}
    stored = dict(HumanAnnotation.objects.filter(item__project=project).values_list("pk", "assignment_id"))
    assert all(stored[pk] == assignment_id for pk, _, assignment_id in returned)

    assert Assignment.objects.filter(item__project=project).exclude(status=Assignment.SUBMITTED).count() == 0
    assert set(Item.objects.filter(project=project).values_list("status", flat=True)) == {Item.COMPLETE}
    if n_items >= N_THREADS:
        # The work was shared out, not done by one thread while the others waited.
        assert sum(1 for entries in submitted.values() if entries) > N_THREADS // 2
    print(f"\n{N_THREADS} threads, {n_items} items x {OVERLAP}: {elapsed:.2f}s")


# --- the claim's plan -------------------------------------------------------------------------


def _item_rows_filtered(plan: dict[str, Any]) -> int:
    """Rows of webapp_item that the plan's scans read and threw away (EXPLAIN ANALYZE's 'Rows Removed by Filter')."""
    removed = plan.get("Rows Removed by Filter", 0) if plan.get("Relation Name") == Item._meta.db_table else 0
    return removed + sum(_item_rows_filtered(child) for child in plan.get("Plans", []))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the claim's statements are PostgreSQL's")
def test_a_first_claim_does_not_read_the_items_of_a_bigger_project_imported_before(db: None) -> None:
    # make bench's state, smaller: another project's items (lower ids, rows of a realistic size), then this one's.
    # The planner once read the other project's items in id order on every claim (30 ms a submit).
    other = ProjectFactory(slug="other", aspects=ASPECTS)
    Item.objects.bulk_create(
        Item(project=other, external_id=f"o{k}", prompt=f"{k} " + "x" * 1500) for k in range(30_000)
    )
    project = ProjectFactory(slug="queue", aspects=ASPECTS, overlap_normal=2, overlap_expert=0)
    Item.objects.bulk_create(
        Item(project=project, external_id=f"q{k}", prompt=f"{k} " + "x" * 1500) for k in range(6_000)
    )
    # 32 annotators have done the first 640 items (two each), as in the benchmark's window.
    done = list(project.items.order_by("id")[:640])
    team = [make_annotator(project, f"a{k}") for k in range(32)]
    expires = timezone.now()
    Assignment.objects.bulk_create(
        Assignment(
            item=item,
            annotator=team[(2 * n + j) % 32],
            display_order=[0, 1],
            lease_expires_at=expires,
            status=Assignment.SUBMITTED,
        )
        for n, item in enumerate(done)
        for j in range(2)
    )
    Item.objects.filter(pk__in=[i.pk for i in done]).update(status=Item.COMPLETE)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webapp_item")
        cursor.execute("ANALYZE webapp_assignment")
    alice = team[5]

    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assignment = claim_next(project, alice)
    assert assignment is not None
    assert assignment.item.project_id == project.pk

    locking = [(sql, params) for sql, params in statements if "SKIP LOCKED" in sql]
    assert locking, "the claim locks its candidates with SKIP LOCKED"
    for sql, params in locking:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0][0]["Plan"]
        assert _item_rows_filtered(plan) < 100, sql
