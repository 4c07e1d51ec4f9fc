"""The integrity rules are database constraints: they hold for every write, not only through forms."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tests.factories import AnnotatorProfileFactory, ItemFactory, ProjectFactory, UserFactory
from webapp.models import (
    AnnotatorProfile,
    Assignment,
    HumanAnnotation,
    ImportJob,
    Item,
    Judge,
    Judgment,
    Membership,
    Project,
    Response,
)

pytestmark = pytest.mark.django_db


def rejected(constraint: str | None = None) -> pytest.RaisesContext[IntegrityError]:
    """The write fails at the database, naming the constraint when given."""
    return pytest.raises(IntegrityError, match=constraint)


@pytest.fixture
def item(project):
    return ItemFactory(project=project, external_id="i1")


@pytest.fixture
def judge():
    return Judge.objects.create(name="gpt-judge", backend=Judge.OPENAI, model="gpt-4o")


# --- Project --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("kind", "triplet", "project_kind_valid"),
        ("scale", "likert10", "project_scale_valid"),
        ("state", "archived", "project_state_valid"),
        ("cost_per_human_annotation", Decimal("-0.01"), "project_cost_nonnegative"),
        ("slug", "", "project_slug_not_empty"),
    ],
)
def test_a_project_update_with_a_bad_value_is_refused_by_the_database(project, field, value, constraint):
    with rejected(constraint), transaction.atomic():
        Project.objects.filter(pk=project.pk).update(**{field: value})
    project.refresh_from_db()
    assert getattr(project, field) != value


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [("kind", "triplet", "project_kind_valid"), ("scale", "yes-no", "project_scale_valid")],
)
def test_a_project_created_without_forms_still_cannot_hold_a_bad_value(field, value, constraint):
    with rejected(constraint), transaction.atomic():
        Project.objects.create(slug="raw", name="raw", **{field: value})
    assert not Project.objects.filter(slug="raw").exists()


def test_raw_sql_cannot_put_a_bad_state_on_a_project(project):
    with rejected("project_state_valid"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE webapp_project SET state = %s WHERE id = %s", ["deleted", project.pk])


def test_two_projects_cannot_share_a_slug(project):
    with rejected("slug"), transaction.atomic():
        Project.objects.create(slug=project.slug, name="again")


def test_a_valid_project_saves(db):
    project = Project.objects.create(slug="ok", name="OK", kind="ranking", scale="strength7", state="closed")
    assert Project.objects.get(pk=project.pk).kind == "ranking"


# --- Membership and profiles ----------------------------------------------------------------


def test_a_membership_role_must_be_manager_or_annotator(project):
    user = UserFactory()
    with rejected("membership_role_valid"), transaction.atomic():
        Membership.objects.create(project=project, user=user, role="owner")


def test_a_user_joins_a_project_once(project):
    user = UserFactory()
    Membership.objects.create(project=project, user=user, role=Membership.ANNOTATOR)
    with rejected("membership_unique"), transaction.atomic():
        Membership.objects.create(project=project, user=user, role=Membership.MANAGER)


def test_an_annotator_tier_must_be_normal_or_expert(db):
    with rejected("annotator_tier_valid"), transaction.atomic():
        AnnotatorProfile.objects.create(user=UserFactory(), tier="guru")


def test_an_existing_profile_cannot_be_updated_to_a_bad_tier(db):
    profile = AnnotatorProfileFactory()
    with rejected("annotator_tier_valid"), transaction.atomic():
        AnnotatorProfile.objects.filter(pk=profile.pk).update(tier="admin")


# --- Item and Response ----------------------------------------------------------------------


def test_external_ids_are_unique_within_a_project(item):
    with rejected("item_external_id_unique"), transaction.atomic():
        Item.objects.create(project=item.project, external_id=item.external_id, prompt="again")


def test_the_same_external_id_may_be_used_in_another_project(item):
    other = ProjectFactory()
    assert Item.objects.create(project=other, external_id=item.external_id, prompt="x").pk


def test_an_item_needs_an_external_id(project):
    with rejected("item_external_id_not_empty"), transaction.atomic():
        Item.objects.create(project=project, external_id="", prompt="hello")


def test_an_item_needs_a_prompt_or_a_conversation(project):
    with rejected("item_has_prompt_or_conversation"), transaction.atomic():
        Item.objects.create(project=project, external_id="empty", prompt="", conversation=None)


def test_an_item_with_only_a_conversation_is_fine(project):
    item = Item.objects.create(
        project=project, external_id="conv", prompt="", conversation=[{"role": "user", "content": "hi"}]
    )
    assert item.pk


def test_an_items_prompt_cannot_be_blanked_when_it_has_no_conversation(item):
    with rejected("item_has_prompt_or_conversation"), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(prompt="")


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [("route", "robot", "item_route_valid"), ("status", "done", "item_status_valid")],
)
def test_an_item_route_and_status_are_checked(item, field, value, constraint):
    with rejected(constraint), transaction.atomic():
        Item.objects.filter(pk=item.pk).update(**{field: value})


def test_two_responses_cannot_take_the_same_position(item):
    with rejected("response_position_unique"), transaction.atomic():
        Response.objects.create(item=item, position=0, text="a rival A")
    assert list(item.responses.values_list("position", flat=True)) == [0, 1]


# --- HumanAnnotation ------------------------------------------------------------------------


def test_an_annotation_cannot_have_both_a_user_and_an_external_annotator(item):
    with rejected("annotation_has_one_annotator"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, annotator=UserFactory(), external_annotator="worker-7")


def test_an_annotation_needs_a_user_or_an_external_annotator(item):
    with rejected("annotation_has_one_annotator"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, annotator=None, external_annotator="")


def test_either_kind_of_annotator_alone_is_fine(item):
    HumanAnnotation.objects.create(item=item, annotator=UserFactory())
    HumanAnnotation.objects.create(item=item, external_annotator="worker-7", imported=True)
    assert item.human_annotations.count() == 2


def test_a_user_annotates_an_item_once(item):
    user = UserFactory()
    HumanAnnotation.objects.create(item=item, annotator=user, preferences={"overall": "Tie"})
    with rejected("annotation_once_per_user"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, annotator=user, preferences={"overall": "A-is-clearly-better"})


def test_the_same_user_may_annotate_different_items(project, item):
    user = UserFactory()
    other = ItemFactory(project=project)
    HumanAnnotation.objects.create(item=item, annotator=user)
    HumanAnnotation.objects.create(item=other, annotator=user)
    assert HumanAnnotation.objects.filter(annotator=user).count() == 2


def test_an_external_annotator_annotates_an_item_once(item):
    HumanAnnotation.objects.create(item=item, external_annotator="worker-7")
    with rejected("annotation_once_per_external_annotator"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, external_annotator="worker-7")


def test_an_annotation_tier_must_be_normal_or_expert(item):
    with rejected("annotation_tier_valid"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, external_annotator="w", tier="crowd")


def test_an_annotation_cannot_take_negative_time(item):
    with rejected("annotation_time_nonnegative"), transaction.atomic():
        HumanAnnotation.objects.create(item=item, external_annotator="w", time_spent=-1.0)


# --- Judgment and Judge ---------------------------------------------------------------------


def test_a_judge_gives_one_verdict_per_item_order_and_prompt_version(item, judge):
    Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", labels={"overall": "Tie"})
    with rejected("judgment_unique_per_order_and_prompt"), transaction.atomic():
        Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1")
    # Another order or another prompt version is another judgment.
    Judgment.objects.create(item=item, judge=judge, order="1-0", prompt_version="v1")
    Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v2")
    assert item.judgments.count() == 3


def test_a_judgment_cannot_cost_less_than_nothing(item, judge):
    with rejected("judgment_cost_nonnegative"), transaction.atomic():
        Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", cost=Decimal("-0.000001"))


def test_a_judgment_may_cost_nothing_or_be_unpriced(item, judge):
    Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", cost=Decimal("0"))
    Judgment.objects.create(item=item, judge=judge, order="1-0", prompt_version="v1", cost=None)
    assert item.judgments.count() == 2


def test_a_judgment_status_is_checked(item, judge):
    with rejected("judgment_status_valid"), transaction.atomic():
        Judgment.objects.create(item=item, judge=judge, order="0-1", prompt_version="v1", status="maybe")


def test_a_judge_backend_is_checked(db):
    with rejected("judge_backend_valid"), transaction.atomic():
        Judge.objects.create(name="mystery", backend="oracle")


# --- Assignment and ImportJob ---------------------------------------------------------------


def test_an_item_is_assigned_to_an_annotator_once(item):
    user = UserFactory()
    expires = timezone.now() + timedelta(minutes=30)
    Assignment.objects.create(item=item, annotator=user, display_order=[1, 0], lease_expires_at=expires)
    with rejected("assignment_once_per_annotator"), transaction.atomic():
        Assignment.objects.create(item=item, annotator=user, display_order=[0, 1], lease_expires_at=expires)
    Assignment.objects.create(item=item, annotator=UserFactory(), display_order=[0, 1], lease_expires_at=expires)
    assert item.assignments.count() == 2


def test_an_assignment_status_is_checked(item):
    with rejected("assignment_status_valid"), transaction.atomic():
        Assignment.objects.create(
            item=item, annotator=UserFactory(), display_order=[0, 1], lease_expires_at=timezone.now(), status="lost"
        )


def test_an_import_job_status_is_checked(project):
    with rejected("importjob_status_valid"), transaction.atomic():
        ImportJob.objects.create(project=project, path="/tmp/x.jsonl", status="paused")
