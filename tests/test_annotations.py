"""Submitting, skipping and editing annotations: display order <-> canonical order, leases, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from tests.factories import AnnotatorProfileFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import scheme as sch
from webapp.models import AnnotationRevision, Assignment, HumanAnnotation, Item, Membership, Project
from webapp.services.annotations import (
    AssignmentClosed,
    LeaseLost,
    edit_annotation,
    skip_assignment,
    submit_annotation,
)
from webapp.services.queue import claim_next

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_annotator(project: Project, name: str) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    AnnotatorProfileFactory(user=user)
    return user


def lease(item: Item, user: Any, order: list[int], *, expired: bool = False) -> Assignment:
    """An assignment with a chosen display order, as claim_next would have made it."""
    delta = timedelta(minutes=-1) if expired else timedelta(minutes=30)
    return Assignment.objects.create(
        item=item, annotator=user, display_order=order, lease_expires_at=timezone.now() + delta
    )


@pytest.fixture
def pairwise() -> Project:
    return ProjectFactory(
        slug="pairs",
        aspects=["overall", "helpful"],
        reasons={"overall": ["more accurate", "clearer"]},
        rating_attributes=["helpfulness", "correctness"],
        justification_required=True,
        justification_min_length=20,
        overlap_normal=1,
    )


@pytest.fixture
def alice(pairwise: Project) -> Any:
    return make_annotator(pairwise, "alice")


def shown_answer(**overrides: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "preferences": {"overall": "A-is-clearly-better", "helpful": "A-is-slightly-better"},
        "reasons": {"overall": ["clearer"]},
        "ratings": {0: {"helpfulness": 4, "correctness": 3}, 1: {"helpfulness": 1, "correctness": 0}},
        "confidence": {"overall": "absolutely-confident"},
        "justification": "The first response shown is far clearer.",
        "time_spent": 12.5,
        "flags": [],
    }
    answer.update(overrides)
    return answer


# --- display order -> canonical order -------------------------------------------------------


def test_a_pairwise_answer_on_swapped_responses_is_stored_in_canonical_order(pairwise: Project, alice: Any) -> None:
    item = ItemFactory(project=pairwise)
    assignment = lease(item, alice, [1, 0])  # canonical B was shown first, as "A"

    annotation, created = submit_annotation(assignment.pk, alice, shown_answer())

    assert created
    stored = HumanAnnotation.objects.get(pk=annotation.pk)
    assert stored.preferences == {"overall": "B-is-clearly-better", "helpful": "B-is-slightly-better"}
    # Ratings given to the response shown first belong to canonical response 1.
    assert stored.ratings == {"1": {"helpfulness": 4, "correctness": 3}, "0": {"helpfulness": 1, "correctness": 0}}
    assert stored.reasons == {"overall": ["clearer"]}
    assert stored.confidence == {"overall": "absolutely-confident"}
    assert stored.time_spent == 12.5
    assert stored.annotator == alice
    assert stored.assignment == assignment
    assert stored.tier == "normal"
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.SUBMITTED
    assert Item.objects.get(pk=item.pk).status == Item.COMPLETE  # overlap 1


def test_a_pairwise_answer_in_canonical_order_is_stored_as_given(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    annotation, created = submit_annotation(assignment.pk, alice, shown_answer())
    assert created
    assert annotation.preferences == {"overall": "A-is-clearly-better", "helpful": "A-is-slightly-better"}
    assert annotation.payload()["ratings"] == {
        0: {"helpfulness": 4, "correctness": 3},
        1: {"helpfulness": 1, "correctness": 0},
    }


def test_strength7_labels_are_negated_when_the_responses_were_swapped(alice: Any) -> None:
    project = ProjectFactory(slug="s7", scale=sch.STRENGTH7, aspects=["overall"], ask_confidence=False)
    MembershipFactory(project=project, user=alice)
    swapped = lease(ItemFactory(project=project), alice, [1, 0])
    straight = lease(ItemFactory(project=project), alice, [0, 1])

    first, _ = submit_annotation(swapped.pk, alice, {"preferences": {"overall": -3}})
    second, _ = submit_annotation(straight.pk, alice, {"preferences": {"overall": -2}})
    assert HumanAnnotation.objects.get(pk=first.pk).preferences == {"overall": 3}
    assert HumanAnnotation.objects.get(pk=second.pk).preferences == {"overall": -2}

    tie = lease(ItemFactory(project=project), alice, [1, 0])
    third, _ = submit_annotation(tie.pk, alice, {"preferences": {"overall": 0}})
    assert HumanAnnotation.objects.get(pk=third.pk).preferences == {"overall": 0}


def test_a_tie_stays_a_tie_when_swapped(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [1, 0])
    answer = shown_answer(preferences={"overall": "Tie", "helpful": "B-is-slightly-better"})
    annotation, _ = submit_annotation(assignment.pk, alice, answer)
    assert annotation.preferences == {"overall": "Tie", "helpful": "A-is-slightly-better"}


@pytest.fixture
def ranking() -> Project:
    return ProjectFactory(
        slug="ranks",
        kind=sch.RANKING,
        aspects=["overall"],
        rating_attributes=["helpfulness"],
        allow_ties=True,
        ask_confidence=False,
    )


def test_a_ranking_on_a_permutation_is_stored_in_canonical_indices(ranking: Project, alice: Any) -> None:
    MembershipFactory(project=ranking, user=alice)
    item = ItemFactory(project=ranking, responses=["zero", "one", "two"])
    order = [2, 0, 1]  # shown A = canonical 2, shown B = canonical 0, shown C = canonical 1
    assignment = lease(item, alice, order)

    # Best first: shown B, then shown C, then shown A.
    answer = {"ranking": [1, 2, 0], "ratings": {0: {"helpfulness": 0}, 1: {"helpfulness": 4}}}
    annotation, created = submit_annotation(assignment.pk, alice, answer)

    assert created
    stored = HumanAnnotation.objects.get(pk=annotation.pk)
    assert stored.ranking == [0, 1, 2]
    assert stored.ranking == [order[k] for k in answer["ranking"]]
    assert stored.preferences == {}
    assert stored.payload()["ratings"] == {2: {"helpfulness": 0}, 0: {"helpfulness": 4}}


def test_a_ranking_with_ties_is_mapped_group_by_group(ranking: Project, alice: Any) -> None:
    MembershipFactory(project=ranking, user=alice)
    assignment = lease(ItemFactory(project=ranking, responses=["zero", "one", "two"]), alice, [1, 2, 0])
    # Shown C best; shown A and shown B tied behind it.
    annotation, _ = submit_annotation(assignment.pk, alice, {"ranking": [2, [0, 1]]})
    assert HumanAnnotation.objects.get(pk=annotation.pk).ranking == [0, [1, 2]]


def test_ties_are_refused_where_the_project_does_not_allow_them(ranking: Project, alice: Any) -> None:
    ranking.allow_ties = False
    ranking.save()
    MembershipFactory(project=ranking, user=alice)
    assignment = lease(ItemFactory(project=ranking, responses=["zero", "one", "two"]), alice, [0, 1, 2])
    with pytest.raises(sch.SchemeError, match="does not allow ties"):
        submit_annotation(assignment.pk, alice, {"ranking": [2, [0, 1]]})
    with pytest.raises(sch.SchemeError, match="exactly once"):
        submit_annotation(assignment.pk, alice, {"ranking": [2, 0]})
    assert not HumanAnnotation.objects.exists()


@pytest.mark.parametrize(
    "order",
    [[0, 1], [1, 0], [0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0], [3, 1, 0, 2]],
)
def test_to_display_undoes_to_canonical(order: list[int]) -> None:
    n = len(order)
    shown = sch.AnnotationPayload(
        preferences={"overall": "A-is-slightly-better"} if n == 2 else {},
        ranking=[n - 1, list(range(n - 1))] if n > 2 else [1, 0],
        ratings={k: {"helpfulness": k} for k in range(n)},
        justification="why",
    )
    canonical = sch.to_canonical(shown, order)
    assert sch.to_display(canonical, order) == shown
    # Canonical response order[k] got what shown response k got.
    assert all(canonical.ratings[order[k]] == {"helpfulness": k} for k in range(n))
    if n == 2 and order == [1, 0]:
        assert canonical.preferences == {"overall": "B-is-slightly-better"}


def test_the_stored_annotation_shows_again_in_the_order_it_was_given(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [1, 0])
    given = shown_answer()
    annotation, _ = submit_annotation(assignment.pk, alice, given)
    stored = HumanAnnotation.objects.get(pk=annotation.pk)
    again = sch.to_display(sch.AnnotationPayload.model_validate(stored.payload()), assignment.display_order)
    assert again == sch.AnnotationPayload.model_validate(given)


# --- double submit, leases ------------------------------------------------------------------


def test_a_double_submit_returns_the_first_annotation_and_stores_one(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    first, created = submit_annotation(assignment.pk, alice, shown_answer())
    again, created_again = submit_annotation(
        assignment.pk, alice, shown_answer(justification="A different text, sent by a second tab.")
    )
    assert created
    assert not created_again
    assert again.pk == first.pk
    assert HumanAnnotation.objects.count() == 1
    assert HumanAnnotation.objects.get().justification == "The first response shown is far clearer."


def test_a_submit_after_the_lease_expired_is_saved_while_the_slot_is_free(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1], expired=True)
    annotation, created = submit_annotation(assignment.pk, alice, shown_answer())
    assert created
    assert annotation.assignment_id == assignment.pk
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.SUBMITTED


def test_a_submit_after_someone_else_took_the_expired_slot_is_refused(pairwise: Project, alice: Any) -> None:
    item = ItemFactory(project=pairwise)  # overlap_normal=1
    bob = make_annotator(pairwise, "bob")
    mine = claim_next(pairwise, alice)
    assert mine is not None
    Assignment.objects.filter(pk=mine.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    theirs = claim_next(pairwise, bob)
    assert theirs is not None
    assert theirs.item_id == item.pk

    with pytest.raises(LeaseLost, match="another annotator took it"):
        submit_annotation(mine.pk, alice, shown_answer())
    assert not HumanAnnotation.objects.exists()
    assert Assignment.objects.get(pk=mine.pk).status == Assignment.LEASED
    # Bob's work is unaffected.
    submit_annotation(theirs.pk, bob, shown_answer())
    assert list(HumanAnnotation.objects.values_list("annotator__username", flat=True)) == ["bob"]


def test_a_skipped_or_expired_assignment_cannot_be_submitted(pairwise: Project, alice: Any) -> None:
    skipped = lease(ItemFactory(project=pairwise), alice, [0, 1])
    skip_assignment(skipped.pk, alice, "Outside my expertise")
    with pytest.raises(AssignmentClosed):
        submit_annotation(skipped.pk, alice, shown_answer())
    expired = lease(ItemFactory(project=pairwise), alice, [0, 1])
    Assignment.objects.filter(pk=expired.pk).update(status=Assignment.EXPIRED)
    with pytest.raises(AssignmentClosed):
        submit_annotation(expired.pk, alice, shown_answer())
    assert not HumanAnnotation.objects.exists()


def test_nothing_is_submitted_to_a_closed_project(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    Project.objects.filter(pk=pairwise.pk).update(state=Project.CLOSED)
    with pytest.raises(AssignmentClosed, match="closed"):
        submit_annotation(assignment.pk, alice, shown_answer())


def test_someone_elses_assignment_is_refused(pairwise: Project, alice: Any) -> None:
    mallory = make_annotator(pairwise, "mallory")
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    with pytest.raises(PermissionDenied):
        submit_annotation(assignment.pk, mallory, shown_answer())
    with pytest.raises(PermissionDenied):
        skip_assignment(assignment.pk, mallory, "not mine")
    annotation, _ = submit_annotation(assignment.pk, alice, shown_answer())
    with pytest.raises(PermissionDenied):
        edit_annotation(annotation.pk, mallory, shown_answer())
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.SUBMITTED
    assert not AnnotationRevision.objects.exists()


# --- skip -----------------------------------------------------------------------------------


def test_a_skip_needs_a_reason(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    for reason in ["", "   "]:
        with pytest.raises(sch.SchemeError) as info:
            skip_assignment(assignment.pk, alice, reason)
        assert info.value.problems[0][0] == "skip_reason"
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.LEASED

    skipped = skip_assignment(assignment.pk, alice, "  Unsafe content ")
    assert skipped.status == Assignment.SKIPPED
    assert Assignment.objects.get(pk=assignment.pk).skip_reason == "Unsafe content"
    # Skipping twice is harmless; a skipped slot no longer counts.
    assert skip_assignment(assignment.pk, alice, "again").status == Assignment.SKIPPED


def test_a_submitted_item_cannot_be_skipped(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    submit_annotation(assignment.pk, alice, shown_answer())
    with pytest.raises(AssignmentClosed):
        skip_assignment(assignment.pk, alice, "changed my mind")


# --- edit -----------------------------------------------------------------------------------


def test_an_edit_keeps_the_previous_version_as_a_revision(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [1, 0])
    annotation, _ = submit_annotation(assignment.pk, alice, shown_answer())
    before = HumanAnnotation.objects.get(pk=annotation.pk).payload()

    edited = edit_annotation(
        annotation.pk,
        alice,
        shown_answer(
            preferences={"overall": "B-is-slightly-better", "helpful": "Tie"},
            justification="On a second reading the second one shown is better.",
        ),
    )

    stored = HumanAnnotation.objects.get(pk=annotation.pk)
    assert stored.pk == edited.pk
    assert stored.preferences == {"overall": "A-is-slightly-better", "helpful": "Tie"}  # canonical again
    assert stored.justification == "On a second reading the second one shown is better."
    revision = AnnotationRevision.objects.get(annotation=annotation)
    assert revision.edited_by == alice
    assert (
        revision.payload["preferences"]
        == before["preferences"]
        == {
            "overall": "B-is-clearly-better",
            "helpful": "B-is-slightly-better",
        }
    )
    assert revision.payload["justification"] == "The first response shown is far clearer."
    assert HumanAnnotation.objects.count() == 1

    edit_annotation(annotation.pk, alice, shown_answer(justification="A third version, long enough."))
    assert AnnotationRevision.objects.filter(annotation=annotation).count() == 2


def test_an_invalid_edit_changes_nothing(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    annotation, _ = submit_annotation(assignment.pk, alice, shown_answer())
    with pytest.raises(sch.SchemeError):
        edit_annotation(annotation.pk, alice, shown_answer(justification="too short"))
    assert not AnnotationRevision.objects.exists()
    assert HumanAnnotation.objects.get(pk=annotation.pk).justification == "The first response shown is far clearer."


def test_edits_are_refused_once_the_project_is_closed(pairwise: Project, alice: Any) -> None:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    annotation, _ = submit_annotation(assignment.pk, alice, shown_answer())
    Project.objects.filter(pk=pairwise.pk).update(state=Project.CLOSED)
    with pytest.raises(AssignmentClosed, match="closed"):
        edit_annotation(annotation.pk, alice, shown_answer(justification="Changing it after the close."))
    assert not AnnotationRevision.objects.exists()
    assert HumanAnnotation.objects.get(pk=annotation.pk).justification == "The first response shown is far clearer."


def test_imported_annotations_cannot_be_edited_through_the_ui(pairwise: Project, alice: Any) -> None:
    item = ItemFactory(project=pairwise)
    imported = HumanAnnotation.objects.create(item=item, annotator=alice, imported=True, preferences={"overall": "Tie"})
    with pytest.raises(PermissionDenied):
        edit_annotation(imported.pk, alice, shown_answer())


# --- validation -----------------------------------------------------------------------------


def _problems(pairwise: Project, alice: Any, answer: dict[str, Any]) -> dict[str, str]:
    assignment = lease(ItemFactory(project=pairwise), alice, [0, 1])
    with pytest.raises(sch.SchemeError) as info:
        submit_annotation(assignment.pk, alice, answer)
    assert not HumanAnnotation.objects.filter(assignment=assignment).exists()
    assert Assignment.objects.get(pk=assignment.pk).status == Assignment.LEASED
    return dict(info.value.problems)


def test_a_missing_aspect_is_named(pairwise: Project, alice: Any) -> None:
    problems = _problems(pairwise, alice, shown_answer(preferences={"overall": "Tie"}))
    assert problems == {"preferences": "missing aspects: helpful"}


def test_a_short_or_missing_justification_is_refused(pairwise: Project, alice: Any) -> None:
    assert _problems(pairwise, alice, shown_answer(justification="Too short.")) == {
        "justification": "needs at least 20 characters (has 10)"
    }
    assert _problems(pairwise, alice, shown_answer(justification="   ")) == {
        "justification": "a justification is required"
    }


def test_a_missing_confidence_is_refused(pairwise: Project, alice: Any) -> None:
    assert _problems(pairwise, alice, shown_answer(confidence={})) == {"confidence": "a confidence answer is required"}


def test_every_problem_is_reported_at_once(pairwise: Project, alice: Any) -> None:
    problems = _problems(
        pairwise,
        alice,
        shown_answer(
            preferences={"overall": "A-is-much-better"},
            confidence={},
            justification="",
            ratings={0: {"helpfulness": 7}},
            reasons={"overall": ["prettier"]},
        ),
    )
    assert set(problems) == {
        "preferences.overall",
        "preferences",
        "ratings.0.helpfulness",
        "reasons.overall",
        "confidence",
        "justification",
    }
