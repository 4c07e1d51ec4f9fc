"""Gold items, the qualification test and the pause rule (services/gold.py), on PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import scheme as sch
from webapp.models import (
    Assignment,
    GoldItem,
    GoldResult,
    HumanAnnotation,
    Item,
    Membership,
    Project,
    QualificationAttempt,
)
from webapp.services import gold
from webapp.services.annotations import submit_and_claim_next, submit_annotation
from webapp.services.exports import stream_items
from webapp.services.queue import QueueClosed, claim_next, queue_size
from webapp.services.routing import project_labels

pytestmark = pytest.mark.django_db

A_CLEAR, A_SLIGHT, TIE, B_SLIGHT, B_CLEAR = sch.LIKERT5_LABELS


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def study() -> Project:
    return ProjectFactory(slug="prefstudy", aspects=["overall", "helpful"], overlap_normal=1, overlap_expert=0)


def annotator(project: Project, name: str, role: str = Membership.ANNOTATOR) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=role)
    AnnotatorProfileFactory(user=user)
    return user


def items(project: Project, n: int, prefix: str = "q") -> list[Item]:
    return [ItemFactory(project=project, external_id=f"{prefix}{k}") for k in range(n)]


def make_gold(project: Project, n: int, *, label: str = A_CLEAR, qualification: bool = False) -> list[Item]:
    made = items(project, n, prefix="qual" if qualification else "g")
    for k, item in enumerate(made):
        gold.set_gold(project, item, preferences={"overall": label}, qualification=qualification, position=k)
    project.refresh_from_db()
    return made


def answer(assignment: Assignment, canonical: str) -> dict[str, Any]:
    """Answers, on the order shown, that say `canonical` (a label on canonical order) for every aspect."""
    shown = sch.mirror_label(canonical) if assignment.display_order[0] == 1 else canonical
    return {"preferences": {"overall": shown, "helpful": shown}, "confidence": {"overall": "fairly-confident"}}


def gold_ids(project: Project) -> set[int]:
    return set(GoldItem.objects.filter(project=project).values_list("item_id", flat=True))


# --- gold is never a regular item ---------------------------------------------------------------------


def test_gold_items_never_come_from_the_queue_nor_count_in_its_size(study: Project) -> None:
    regular = items(study, 3)
    make_gold(study, 2)
    alice = annotator(study, "alice")
    assert queue_size(study) == 3
    served = []
    while (assignment := claim_next(study, alice)) is not None:
        served.append(assignment.item_id)
        submit_annotation(assignment.pk, alice, answer(assignment, A_CLEAR), project=study)
    assert served == [i.pk for i in regular]  # gold_rate 0: no gold at all


def test_gold_is_not_exported_nor_routed(study: Project) -> None:
    regular = items(study, 2)
    golden = make_gold(study, 1)
    HumanAnnotation.objects.create(item=golden[0], external_annotator="x", preferences={"overall": A_CLEAR})
    with transaction.atomic():
        assert [e.external_id for e in stream_items(study)] == [i.external_id for i in regular]
    assert list(project_labels(study).item_ids) == [i.pk for i in regular]


def test_a_gold_item_is_served_past_the_overlap_and_is_never_completed_by_it(study: Project) -> None:
    (golden,) = make_gold(study, 1)
    items(study, 2)
    Project.objects.filter(pk=study.pk).update(gold_rate=1.0)
    study.refresh_from_db()
    users = [annotator(study, name) for name in ("alice", "bob", "carol")]  # overlap 1, three annotators
    for user in users:
        assignment = claim_next(study, user)
        assert assignment is not None
        assert assignment.item_id == golden.pk
        submit_annotation(assignment.pk, user, answer(assignment, A_CLEAR), project=study)
    assert GoldResult.objects.filter(item=golden, correct=True).count() == 3
    # The regular items are untouched by the gold answers: still pending, still in the queue.
    assert set(Item.objects.exclude(pk=golden.pk).values_list("status", flat=True)) == {Item.PENDING}
    assert queue_size(study) == 2


# --- mixing -------------------------------------------------------------------------------------------


def test_gold_is_mixed_in_at_the_rate_reproducibly_and_never_twice(study: Project) -> None:
    items(study, 220)
    make_gold(study, 70)
    Project.objects.filter(pk=study.pk).update(gold_rate=0.2)
    study.refresh_from_db()
    alice = annotator(study, "alice")
    golden = gold_ids(study)
    served: list[int] = []
    assignment = claim_next(study, alice)
    for _ in range(200):
        assert assignment is not None
        served.append(assignment.item_id)
        _, _, claimed = submit_and_claim_next(
            assignment.pk, alice, answer(assignment, A_CLEAR), project=study, profile=None
        )
        assignment = claimed or claim_next(study, alice)
    mixed = [pk for pk in served if pk in golden]
    assert 25 <= len(mixed) <= 55  # 200 claims at 0.2: 40 expected
    assert len(set(mixed)) == len(mixed)  # never the same gold item twice
    # Reproducible: the n-th claim is gold exactly where the seeded draw says so.
    assert [pk in golden for pk in served] == [gold.roll(study, alice, n) < 0.2 for n in range(200)]


def test_without_gold_the_claim_and_the_submit_never_ask_about_it(study: Project) -> None:
    items(study, 3)
    alice = annotator(study, "alice")
    assignment = claim_next(study, alice)
    assert assignment is not None
    with CaptureQueriesContext(connection) as queries:
        submit_and_claim_next(assignment.pk, alice, answer(assignment, A_CLEAR), project=study)
    text = " ".join(q["sql"] for q in queries.captured_queries)
    assert "golditem" not in text
    assert "membership" not in text


def test_a_gold_item_drawn_in_the_submit_waits_for_a_lease_held_in_another_tab(study: Project) -> None:
    (regular,) = items(study, 1)
    make_gold(study, 2)
    Project.objects.filter(pk=study.pk).update(gold_rate=1.0)
    study.refresh_from_db()
    alice = annotator(study, "alice")
    first = claim_next(study, alice)
    assert first is not None
    assert first.item_id in gold_ids(study)
    other_tab = Assignment.objects.create(
        item=regular, annotator=alice, display_order=[0, 1], lease_expires_at=first.lease_expires_at
    )
    _, created, claimed = submit_and_claim_next(first.pk, alice, answer(first, A_CLEAR), project=study)
    assert created
    assert claimed is None  # not a second lease: claim_next decides
    assert claim_next(study, alice) == other_tab


def test_an_expired_lease_on_a_gold_item_is_renewed_and_its_submit_saved(study: Project) -> None:
    from datetime import timedelta

    from django.utils import timezone

    (golden,) = make_gold(study, 1)
    Project.objects.filter(pk=study.pk).update(gold_rate=1.0)
    study.refresh_from_db()
    alice, bob = annotator(study, "alice"), annotator(study, "bob")
    mine = claim_next(study, alice)
    assert mine is not None
    theirs = claim_next(study, bob)
    assert theirs is not None
    submit_annotation(theirs.pk, bob, answer(theirs, A_CLEAR), project=study)  # overlap 1: the "slot" is taken
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    assert claim_next(study, alice) == mine  # renewed: a gold item has room for everyone
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    _, created = submit_annotation(mine.pk, alice, answer(mine, A_CLEAR), project=study)
    assert created
    assert GoldResult.objects.filter(item=golden).count() == 2


# --- scoring ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold_label", "given", "correct"),
    [
        (A_CLEAR, A_SLIGHT, True),  # the direction counts, not the strength
        (A_SLIGHT, A_CLEAR, True),
        (A_CLEAR, B_SLIGHT, False),
        (A_CLEAR, TIE, False),  # a tie never matches a preference
        (TIE, TIE, True),
        (TIE, B_SLIGHT, True),  # a gold tie accepts the weakest preference either way
        (TIE, A_CLEAR, False),
        (-3, -1, True),
        (2, -2, False),
        (0, 1, True),
        (0, -2, False),
        (1, 0, False),
        (A_CLEAR, None, False),
    ],
)
def test_labels_match_by_direction_with_the_tie_rule(gold_label: Any, given: Any, correct: bool) -> None:
    assert gold.label_matches(gold_label, given) is correct


def test_every_aspect_of_the_gold_answer_must_match(study: Project) -> None:
    item = ItemFactory(project=study)
    golden = gold.set_gold(study, item, preferences={"overall": A_CLEAR, "helpful": TIE})
    both = HumanAnnotation(item=item, preferences={"overall": A_SLIGHT, "helpful": B_SLIGHT})
    assert gold.score(study, golden, both)[0]
    one_wrong = HumanAnnotation(item=item, preferences={"overall": A_SLIGHT, "helpful": B_CLEAR})
    correct, details = gold.score(study, golden, one_wrong)
    assert not correct
    assert details["helpful"] == {"gold": TIE, "given": B_CLEAR, "correct": False}


def test_a_preferred_response_is_the_first_aspects_side_or_the_top_of_a_ranking(study: Project) -> None:
    item = ItemFactory(project=study)
    golden = gold.set_gold(study, item, preferred=1)
    assert gold.score(study, golden, HumanAnnotation(preferences={"overall": B_SLIGHT, "helpful": A_CLEAR}))[0]
    assert not gold.score(study, golden, HumanAnnotation(preferences={"overall": TIE}))[0]
    ranked = ProjectFactory(slug="ranked", kind=sch.RANKING, aspects=["overall"])
    three = ItemFactory(project=ranked, responses=["x", "y", "z"])
    top = gold.set_gold(ranked, three, preferred=2)
    assert gold.score(ranked, top, HumanAnnotation(ranking=[2, 0, 1]))[0]
    assert not gold.score(ranked, top, HumanAnnotation(ranking=[[2, 0], 1]))[0]  # a tie at the top
    with pytest.raises(gold.GoldError, match="preferred response"):
        gold.set_gold(ranked, three, preferences={"overall": A_CLEAR})


def test_gold_answers_are_checked_against_the_scheme(study: Project) -> None:
    item = ItemFactory(project=study)
    with pytest.raises(gold.GoldError, match="scale"):
        gold.set_gold(study, item, preferences={"overall": 2})
    with pytest.raises(gold.GoldError, match="aspect"):
        gold.set_gold(study, item, preferences={"harmless": A_CLEAR})
    with pytest.raises(gold.GoldError, match="2 responses"):
        gold.set_gold(study, item, preferred=2)
    with pytest.raises(gold.GoldError, match="not both"):
        gold.set_gold(study, item, preferences={"overall": A_CLEAR}, preferred=0)
    assert not GoldItem.objects.exists()


def test_a_submitted_gold_answer_is_recorded_once_with_the_accuracy(study: Project) -> None:
    make_gold(study, 2)
    Project.objects.filter(pk=study.pk).update(gold_rate=1.0)
    study.refresh_from_db()
    alice = annotator(study, "alice")
    first = claim_next(study, alice)
    assert first is not None
    submit_annotation(first.pk, alice, answer(first, A_SLIGHT), project=study)
    submit_annotation(first.pk, alice, answer(first, A_SLIGHT), project=study)  # a double submit
    second = claim_next(study, alice)
    assert second is not None
    submit_annotation(second.pk, alice, answer(second, B_CLEAR), project=study)
    results = GoldResult.objects.filter(annotator=alice).order_by("at")
    assert [(r.item_id, r.correct) for r in results] == [(first.item_id, True), (second.item_id, False)]
    assert results[0].annotation == HumanAnnotation.objects.get(assignment=first)
    assert gold.accuracy(study, alice) == (2, 1, 0.5)
    (row,) = gold.project_accuracy(study)
    assert (row.username, row.answered, row.correct, row.accuracy) == ("alice", 2, 1, 0.5)


def test_the_database_keeps_gold_consistent(study: Project) -> None:
    item = ItemFactory(project=study)
    alice = annotator(study, "alice")
    for bad in ({"gold_rate": 1.5}, {"gold_rate": -0.1}, {"qualification_pass_mark": 2}, {"pause_below": 1.01}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Project.objects.filter(pk=study.pk).update(**bad)
    with pytest.raises(IntegrityError), transaction.atomic():
        GoldItem.objects.create(project=study, item=item, preferences={"overall": A_CLEAR}, preferred=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        GoldItem.objects.create(project=study, item=item)  # no answer
    GoldResult.objects.create(project=study, annotator=alice, item=item, correct=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        GoldResult.objects.create(project=study, annotator=alice, item=item, correct=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.filter(user=alice).update(paused=True)  # a pause needs its time


# --- the qualification test ---------------------------------------------------------------------------


def qualifying(study: Project, n: int = 4, pass_mark: float = 0.75) -> list[Item]:
    test = make_gold(study, n, qualification=True)
    gold.update_settings(
        study,
        gold_rate=0,
        qualification_required=True,
        qualification_pass_mark=pass_mark,
        pause_below=None,
        pause_min_gold=5,
    )
    study.refresh_from_db()
    return test


def test_qualification_items_come_first_in_order_then_a_pass_opens_the_queue(study: Project) -> None:
    regular = items(study, 2)
    test = qualifying(study)
    alice = annotator(study, "alice")
    served = []
    for k in range(4):
        assignment = claim_next(study, alice)
        assert assignment is not None
        served.append(assignment.item_id)
        if k == 0:
            assert Membership.objects.get(user=alice).qualification == Membership.TESTING
        # Three right of four: 0.75, the pass mark.
        submit_annotation(assignment.pk, alice, answer(assignment, B_CLEAR if k == 2 else A_CLEAR), project=study)
    assert served == [i.pk for i in test]
    membership = Membership.objects.get(user=alice)
    assert membership.qualification == Membership.PASSED
    (attempt,) = QualificationAttempt.objects.filter(membership=membership)
    assert (attempt.n_items, attempt.n_correct, attempt.score, attempt.passed) == (4, 3, 0.75, True)
    assert attempt.finished_at is not None
    nxt = claim_next(study, alice)
    assert nxt is not None
    assert nxt.item_id == regular[0].pk


def test_a_failed_test_closes_the_queue_and_the_page_says_so(study: Project, client: Any) -> None:
    items(study, 2)
    qualifying(study, n=3, pass_mark=0.9)
    alice = annotator(study, "alice")
    assignment = claim_next(study, alice)
    for k in range(3):
        assert assignment is not None
        label = A_CLEAR if k < 2 else B_CLEAR  # 2 of 3 right: below 0.9
        _, _, claimed = submit_and_claim_next(assignment.pk, alice, answer(assignment, label), project=study)
        assignment = claimed or (claim_next(study, alice) if k < 2 else None)
    membership = Membership.objects.get(user=alice)
    assert membership.qualification == Membership.FAILED
    attempt = QualificationAttempt.objects.get(membership=membership)
    assert (attempt.n_correct, attempt.n_items, attempt.passed) == (2, 3, False)
    with pytest.raises(QueueClosed, match="qualification"):
        claim_next(study, alice)
    client.force_login(alice)
    page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert "You did not pass this project&#x27;s qualification test" in page
    assert Assignment.objects.filter(annotator=alice).count() == 3  # no regular item

    # A manager passes her by hand: the attempt says who, and the queue opens.
    gold.pass_by_hand(study, membership.pk, UserFactory(username="boss"))
    assert Membership.objects.get(user=alice).qualification == Membership.PASSED
    assert claim_next(study, alice) is not None


def test_a_skipped_qualification_item_counts_as_wrong(study: Project) -> None:
    from webapp.services.annotations import skip_assignment

    items(study, 1)
    qualifying(study, n=2, pass_mark=0.5)
    alice = annotator(study, "alice")
    first = claim_next(study, alice)
    assert first is not None
    skip_assignment(first.pk, alice, "outside my expertise")
    second = claim_next(study, alice)
    assert second is not None
    assert second.item_id != first.item_id
    submit_annotation(second.pk, alice, answer(second, A_CLEAR), project=study)
    assert Membership.objects.get(user=alice).qualification == Membership.PASSED  # 1 of 2 = 0.5
    attempt = QualificationAttempt.objects.get(membership__user=alice)
    assert (attempt.n_correct, attempt.n_items) == (1, 2)


def test_managers_and_passed_annotators_skip_the_test(study: Project) -> None:
    regular = items(study, 2)
    qualifying(study)
    boss = annotator(study, "boss", role=Membership.MANAGER)
    first = claim_next(study, boss)
    assert first is not None
    assert first.item_id == regular[0].pk
    *others, last = Item.objects.filter(gold__qualification=True)
    for item in others:
        gold.unset_gold(study, item)
    with pytest.raises(gold.GoldError, match="last qualification item"):
        gold.unset_gold(study, last)


# --- pausing ------------------------------------------------------------------------------------------


def test_an_annotator_below_the_accuracy_is_paused_until_a_manager_unpauses(study: Project, client: Any) -> None:
    items(study, 5)
    make_gold(study, 10)
    gold.update_settings(
        study,
        gold_rate=1.0,
        qualification_required=False,
        qualification_pass_mark=0.9,
        pause_below=0.7,
        pause_min_gold=3,
    )
    study.refresh_from_db()
    alice = annotator(study, "alice")
    labels = [A_CLEAR, B_CLEAR, B_CLEAR]  # right, wrong, wrong: 1/3 after the third
    for k, label in enumerate(labels):
        assignment = claim_next(study, alice)
        assert assignment is not None
        submit_annotation(assignment.pk, alice, answer(assignment, label), project=study)
        paused = Membership.objects.get(user=alice).paused
        assert paused is (k == 2)  # not before pause_min_gold answers
    membership = Membership.objects.get(user=alice)
    assert "33%" in membership.paused_reason
    assert membership.paused_at is not None
    with pytest.raises(QueueClosed, match="paused"):
        claim_next(study, alice)
    client.force_login(alice)
    page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert "You are paused in this project" in page
    assert "gold accuracy 33% over 3 answers" in page

    boss = annotator(study, "boss", role=Membership.MANAGER)
    client.force_login(boss)
    gold_page = client.get(f"/p/{study.slug}/gold/").content.decode()
    assert "paused" in gold_page
    assert "33%" in gold_page
    response = client.post(f"/p/{study.slug}/gold/members/{membership.pk}/unpause")
    assert response.status_code == 302
    membership.refresh_from_db()
    assert not membership.paused
    assert membership.unpaused_at is not None
    # Back to work; the rule counts the answers since the unpause (one wrong answer: too few to pause).
    assignment = claim_next(study, alice)
    assert assignment is not None
    submit_annotation(assignment.pk, alice, answer(assignment, B_CLEAR), project=study)
    assert not Membership.objects.get(user=alice).paused
    assert gold.accuracy(study, alice) == (4, 1, 0.25)


# --- the manager's page -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 302), ("outsider", 403), ("annotator", 403), ("manager", 200), ("admin", 200)],
)
def test_only_managers_and_admins_see_the_gold_page(study: Project, client: Any, who: str, status: int) -> None:
    (item,) = items(study, 1)
    members = {"annotator": Membership.ANNOTATOR, "manager": Membership.MANAGER}
    if who in members:
        client.force_login(annotator(study, who, role=members[who]))
    elif who == "outsider":
        client.force_login(UserFactory(username="outsider"))
    elif who == "admin":
        client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    assert client.get(f"/p/{study.slug}/gold/").status_code == status
    posts = [
        (f"/p/{study.slug}/gold/settings", {"gold_rate": "0.5"}),
        (f"/p/{study.slug}/gold/items", {"external_id": item.external_id, "pref-overall": A_CLEAR}),
        (f"/p/{study.slug}/gold/items/{item.pk}/remove", {}),
    ]
    for url, data in posts:
        code = client.post(url, data).status_code
        assert code == (302 if status in (200, 302) else 403), url
    if status == 403:
        assert not GoldItem.objects.exists()
        assert Project.objects.get(pk=study.pk).gold_rate == 0


def test_the_page_adds_and_removes_gold_items_and_saves_settings(study: Project, client: Any) -> None:
    (item, other) = items(study, 2)
    client.force_login(annotator(study, "boss", role=Membership.MANAGER))
    url = f"/p/{study.slug}/gold/"
    response = client.post(
        url + "items",
        {"external_id": item.external_id, "pref-overall": A_CLEAR, "pref-helpful": "", "qualification": "1"},
    )
    assert response.status_code == 302
    golden = GoldItem.objects.get(item=item)
    assert (golden.preferences, golden.qualification) == ({"overall": A_CLEAR}, True)
    assert Project.objects.get(pk=study.pk).gold_active
    page = client.get(url).content.decode()
    assert item.external_id in page
    assert "overall: A-is-clearly-better" in page

    bad = client.post(url + "items", {"external_id": other.external_id, "pref-overall": "A-is-best"})
    assert bad.status_code == 422
    assert "not on the project" in bad.content.decode()
    assert client.post(url + "items", {"external_id": "nope", "preferred": "0"}).status_code == 422

    response = client.post(
        url + "settings",
        {
            "gold_rate": "10%",
            "qualification_required": "1",
            "qualification_pass_mark": "0.9",
            "pause_below": "0.7",
            "pause_min_gold": "5",
        },
    )
    assert response.status_code == 302
    study.refresh_from_db()
    assert (study.gold_rate, study.qualification_required, study.pause_below) == (0.1, True, 0.7)
    assert client.post(url + "settings", {"gold_rate": "3"}).status_code == 422

    # The test's last item stays while the project requires qualification.
    assert client.post(url + f"items/{item.pk}/remove").status_code == 422
    client.post(url + "settings", {"gold_rate": "0"})
    assert client.post(url + f"items/{item.pk}/remove").status_code == 302
    assert not GoldItem.objects.exists()
    assert not Project.objects.get(pk=study.pk).gold_active


def test_the_settings_page_needs_the_csrf_token(study: Project) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator(study, "boss", role=Membership.MANAGER))
    assert client.post(f"/p/{study.slug}/gold/settings", {"gold_rate": "0.5"}).status_code == 403


def test_a_gold_item_looks_like_any_item_on_the_annotate_page(study: Project, client: Any) -> None:
    (regular,) = items(study, 1)
    make_gold(study, 1)
    Project.objects.filter(pk=study.pk).update(gold_rate=1.0)
    alice = annotator(study, "alice")
    client.force_login(alice)
    gold_page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assignment = Assignment.objects.get(annotator=alice)
    assert assignment.item_id in gold_ids(study)
    assert "gold" not in gold_page.replace(assignment.item.external_id, "").lower()
    submit_annotation(assignment.pk, alice, answer(assignment, A_CLEAR), project=study)
    regular_page = client.get(f"/p/{study.slug}/annotate/").content.decode()
    assert Assignment.objects.get(annotator=alice, status=Assignment.LEASED).item_id == regular.pk

    def skeleton(html: str) -> list[str]:
        import re

        return re.findall(r'name="([^"]+)"', html)

    assert skeleton(gold_page) == skeleton(regular_page)


def test_the_gold_command_sets_lists_and_unsets(study: Project) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    (item,) = items(study, 1)
    out = StringIO()
    call_command("gold", study.slug, "set", item.external_id, "--pref", f"overall={B_SLIGHT}", stdout=out)
    assert GoldItem.objects.get(item=item).preferences == {"overall": B_SLIGHT}
    call_command("gold", study.slug, "settings", "--rate", "0.25", "--pause-below", "0.6", stdout=out)
    study.refresh_from_db()
    assert (study.gold_rate, study.pause_below) == (0.25, 0.6)
    assert "gold rate 0.25" in out.getvalue()
    assert f"{item.external_id}: {{'overall': '{B_SLIGHT}'}} (0/0 right)" in out.getvalue()
    with pytest.raises(CommandError, match="scale"):
        call_command("gold", study.slug, "set", item.external_id, "--pref", "overall=best")
    call_command("gold", study.slug, "unset", item.external_id, stdout=out)
    assert not GoldItem.objects.exists()


# --- the embedded demo's SQLite -----------------------------------------------------------------------

SQLITE_FLOW = """
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
from webapp.models import AnnotatorProfile, Assignment, GoldResult, Item, Membership, Project, QualificationAttempt
from webapp.models import Response
from webapp.services import gold

call_command("migrate", verbosity=0)
project = Project.objects.create(slug="s", name="S", state="active", aspects=["overall"], ask_confidence=False)
for k in range(22):
    item = Item.objects.create(project=project, external_id=f"q{k}", prompt=f"Question {k}?")
    Response.objects.bulk_create([Response(item=item, position=p, text=f"{p} of {k}") for p in (0, 1)])
for k, item in enumerate(Item.objects.order_by("id")[:10]):
    gold.set_gold(project, item, preferences={"overall": "A-is-clearly-better"}, qualification=k < 2, position=k)
gold.update_settings(project, gold_rate=0.5, qualification_required=True, qualification_pass_mark=0.5,
                     pause_below=None, pause_min_gold=1)
user = get_user_model().objects.create_user("ann", password="x" * 12)
AnnotatorProfile.objects.create(user=user)
Membership.objects.create(project=project, user=user, role="annotator")
client = Client()
client.force_login(user)
client.get("/p/s/annotate/")
for _ in range(6):
    current = Assignment.objects.get(annotator=user, status="leased")
    label = "B-is-clearly-better" if current.display_order[0] == 1 else "A-is-clearly-better"
    page = client.post(f"/p/s/annotate/{current.pk}/submit", {"pref-overall": label}, HTTP_HX_REQUEST="true")
    assert page.status_code == 200, page.content[:2000]
assert Membership.objects.get(user=user).qualification == "passed"
assert QualificationAttempt.objects.get().passed
assert GoldResult.objects.filter(annotator=user, correct=True).count() >= 2
gold.update_settings(project, gold_rate=1.0, qualification_required=True, qualification_pass_mark=0.5,
                     pause_below=0.99, pause_min_gold=1)
current = Assignment.objects.get(annotator=user, status="leased")
if current.item_id not in set(gold.gold_items(project).values_list("item_id", flat=True)):
    page = client.post(f"/p/s/annotate/{current.pk}/submit", {"pref-overall": "Tie"}, HTTP_HX_REQUEST="true")
    current = Assignment.objects.get(annotator=user, status="leased")
label = "A-is-clearly-better" if current.display_order[0] == 1 else "B-is-clearly-better"  # wrong
page = client.post(f"/p/s/annotate/{current.pk}/submit", {"pref-overall": label}, HTTP_HX_REQUEST="true")
assert b"You are paused in this project" in page.content, page.content[:3000]
print("ok")
"""


def test_the_gold_rules_work_on_the_embedded_sqlite_database(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "HYBRIDPREF_MODE": "development",
        "HYBRIDPREF_DATA_DIR": str(tmp_path),
    }
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", SQLITE_FLOW], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
