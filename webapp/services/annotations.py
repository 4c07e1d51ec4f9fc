"""Submitting, skipping and editing human annotations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.utils import timezone

from webapp import scheme as sch
from webapp.models import AnnotationRevision, AnnotatorProfile, Assignment, HumanAnnotation, Item, Project
from webapp.rawsql import fetch_models
from webapp.services import gold
from webapp.services.queue import (
    QueueClosed,
    for_update,
    index_plans,
    insert_values,
    overlap_for,
    slot_still_free,
    try_claim_next,
)


class LeaseLost(Exception):
    """The lease expired and someone else took the slot."""


class AssignmentClosed(Exception):
    """The assignment was skipped or expired: nothing can be submitted on it."""


def _locked_assignment(assignment_id: int, user: Any) -> Assignment:
    """Lock the assignment row (never the project's)."""
    assignment = (
        Assignment.objects.select_for_update(of=("self",)).select_related("item__project").get(pk=assignment_id)
    )
    if assignment.annotator_id != user.pk:
        raise PermissionDenied("This is not your assignment.")
    return assignment


def _locked_for_submit(assignment_id: int, user: Any, with_gold: bool = False) -> Assignment:
    """Lock the assignment row and its item row (never the project's), in one statement.

    Submits on one item queue here, so its slot count and "complete" status stay exact; submits on other
    items of the project go on in parallel. The assignment comes with its item's `item_status` and
    `item_project_id`, read with the lock held; with_gold (a project with gold items): and the item's gold
    answer, if any (gold.GOLD_COLUMNS), so that a regular item costs the gold rules no query.
    """
    assignment_table, item_table = (connection.ops.quote_name(m._meta.db_table) for m in (Assignment, Item))
    lock = for_update("FOR UPDATE OF a, i")
    gold_columns, gold_join = gold.submit_columns() if with_gold else ("", "")
    sql = (
        f"SELECT a.*, i.status AS item_status, i.project_id AS item_project_id{gold_columns}"  # noqa: S608
        f" FROM {assignment_table} a JOIN {item_table} i ON i.id = a.item_id{gold_join} WHERE a.id = %s{lock}"
    )
    assignment = next(iter(fetch_models(Assignment, sql, [assignment_id])), None)
    if assignment is None:
        raise Assignment.DoesNotExist(f"No assignment {assignment_id}")
    if assignment.annotator_id != user.pk:
        raise PermissionDenied("This is not your assignment.")
    return assignment


Answers = dict[str, Any] | sch.AnnotationPayload


def submit_annotation(
    assignment_id: int,
    user: Any,
    shown: Answers | Callable[[int], Answers],
    *,
    project: Project | None = None,
) -> tuple[HumanAnnotation, bool]:
    """Save the annotator's answers, given on the order shown. Returns (annotation, created).

    `shown`: the answers, or a function of the number of responses shown that returns them (the view
    reads its form with the assignment it locks here). `project`: the project the assignment must be
    in (else PermissionDenied), as the caller has it already; without it the assignment's is read.
    A second submit of the same assignment (two tabs, a network retry) returns the first annotation.
    Raises SchemeError (fields to fix), LeaseLost, AssignmentClosed, PermissionDenied or
    Assignment.DoesNotExist.
    """
    with transaction.atomic():
        index_plans()
        return _submit(assignment_id, user, shown, project)


def submit_and_claim_next(
    assignment_id: int,
    user: Any,
    shown: Answers | Callable[[int], Answers],
    *,
    project: Project,
    profile: AnnotatorProfile | None = None,
) -> tuple[HumanAnnotation, bool, Assignment | None]:
    """submit_annotation, and the annotator's next item claimed in the same transaction where that needs
    no waiting (queue.try_claim_next): one commit for both. Returns (annotation, created, the new
    assignment or None: then claim_next decides, after this commit). Raises as submit_annotation does.
    """
    with transaction.atomic():
        index_plans()
        annotation, created = _submit(assignment_id, user, shown, project)
        claimed = None
        if created:
            try:
                done, claimed = try_claim_next(project, user, profile)
            except QueueClosed:  # claim_next says why
                done = False
            if not done:
                claimed = None
    return annotation, created, claimed


def _submit(
    assignment_id: int, user: Any, shown: Answers | Callable[[int], Answers], project: Project | None
) -> tuple[HumanAnnotation, bool]:
    """submit_annotation, in the caller's transaction."""
    assignment = _locked_for_submit(assignment_id, user, with_gold=project is not None and project.gold_active)
    item_project_id: int = assignment.item_project_id  # type: ignore[attr-defined]
    if project is not None and item_project_id != project.pk:
        raise PermissionDenied("This is not your assignment.")
    if assignment.status == Assignment.SUBMITTED:
        return HumanAnnotation.objects.get(assignment=assignment), False
    if assignment.status != Assignment.LEASED:
        raise AssignmentClosed(f"This item was {assignment.status}; it cannot be submitted.")
    if project is None:
        project = Project.objects.get(pk=item_project_id)
    if project.state == Project.CLOSED:
        raise AssignmentClosed("This project is closed.")
    n = len(assignment.display_order)
    answers = shown(n) if callable(shown) else shown
    payload = sch.validate_annotation(project.scheme(), answers, n_responses=n, complete=True)
    if assignment.lease_expires_at <= timezone.now() and not slot_still_free(assignment, project):
        raise LeaseLost(
            "Your time on this item ran out and another annotator took it. Your answers are still in the form."
        )
    canonical = sch.to_canonical(payload, assignment.display_order)
    annotation = HumanAnnotation(
        item_id=assignment.item_id,
        annotator=user,
        assignment=assignment,
        tier=assignment.tier,
        **_fields(canonical),
    )
    item_status: str = assignment.item_status  # type: ignore[attr-defined]
    if connection.vendor == "postgresql":
        _save_submitted(annotation, assignment, item_status, project)
    else:
        annotation.save(force_insert=True)
        assignment.status = Assignment.SUBMITTED
        assignment.save(update_fields=["status", "updated_at"])
        _update_item_status(assignment.item_id, item_status, project)
    if project.gold_active:  # an answer on a gold item is scored and recorded (no query in other projects)
        gold.after_submit(project, user, annotation, gold.from_submit_row(assignment))
    return annotation, True


def _save_submitted(annotation: HumanAnnotation, assignment: Assignment, item_status: str, project: Project) -> None:
    """PostgreSQL: insert the annotation, mark the assignment submitted and the item complete if it now is,
    in one statement (the three of _update_item_status, save and create, without their round trips).

    Every part of the statement sees the rows as they were before it, with the item and the assignment
    locked by this transaction: the annotation's own assignment is counted as submitted by hand.
    """
    annotation_table, assignment_table, item_table = (
        connection.ops.quote_name(m._meta.db_table) for m in (HumanAnnotation, Assignment, Item)
    )
    columns, values = insert_values(annotation)
    now = timezone.now()
    complete: list[str] = []
    params: list[Any] = [*values, Assignment.SUBMITTED, now, assignment.pk, Item.COMPLETE, assignment.item_id]
    for tier in ("normal", "expert"):
        needed = overlap_for(project, tier)
        if not needed:
            continue
        complete.append(
            f"(SELECT count(*) FROM {assignment_table} WHERE item_id = %s AND tier = %s AND status = %s) + %s >= %s"  # noqa: S608
        )
        params += [assignment.item_id, tier, Assignment.SUBMITTED, int(assignment.tier == tier), needed]
    if item_status == Item.COMPLETE:
        complete.append("false")
    sql = (
        f"WITH annotation AS (INSERT INTO {annotation_table} ({', '.join(columns)})"  # noqa: S608
        f" VALUES ({', '.join(['%s'] * len(values))}) RETURNING id),"
        f" submitted AS (UPDATE {assignment_table} SET status = %s, updated_at = %s WHERE id = %s),"
        f" complete AS (UPDATE {item_table} SET status = %s WHERE id = %s AND {' AND '.join(complete) or 'true'})"
        " SELECT id FROM annotation"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        annotation.pk = cursor.fetchone()[0]
    annotation._state.adding = False
    annotation._state.db = connection.alias
    assignment.status = Assignment.SUBMITTED
    assignment.updated_at = now


def _fields(payload: sch.AnnotationPayload) -> dict[str, Any]:
    return {
        "preferences": payload.preferences,
        "ranking": payload.ranking,
        "ratings": {str(k): v for k, v in payload.ratings.items()},
        "reasons": payload.reasons,
        "own_reasons": payload.own_reasons,
        "confidence": payload.confidence,
        "justification": payload.justification,
        "time_spent": payload.time_spent,
        "flags": payload.flags,
    }


def _update_item_status(item_id: int, status: str, project: Project) -> None:
    """Mark the item complete once every tier has its annotations (`status`: the item's, read under its lock)."""
    table = connection.ops.quote_name(Assignment._meta.db_table)
    for tier in ("normal", "expert"):
        needed = overlap_for(project, tier)
        if not needed:
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE item_id = %s AND tier = %s AND status = %s",  # noqa: S608
                [item_id, tier, Assignment.SUBMITTED],
            )
            if cursor.fetchone()[0] < needed:
                return
    if status != Item.COMPLETE:
        Item.objects.filter(pk=item_id).update(status=Item.COMPLETE)


def skip_assignment(assignment_id: int, user: Any, reason: str) -> Assignment:
    """Give the item back with a reason; the annotator will not get it again."""
    reason = reason.strip()
    if not reason:
        raise sch.SchemeError([("skip_reason", "say why you skip this item")])
    with transaction.atomic():
        assignment = _locked_assignment(assignment_id, user)
        if assignment.status == Assignment.SKIPPED:
            return assignment
        if assignment.status != Assignment.LEASED:
            raise AssignmentClosed(f"This item was already {assignment.status}.")
        assignment.status = Assignment.SKIPPED
        assignment.skip_reason = reason[:2000]
        assignment.save(update_fields=["status", "skip_reason", "updated_at"])
    return assignment


def edit_annotation(annotation_id: int, user: Any, shown: dict[str, Any] | sch.AnnotationPayload) -> HumanAnnotation:
    """Change one's own annotation while the project is open; the previous version is kept as a revision."""
    with transaction.atomic():
        annotation = (
            # of=self: PostgreSQL cannot lock the nullable side of the outer join to the assignment.
            HumanAnnotation.objects.select_for_update(of=("self",))
            .select_related("item__project", "assignment")
            .get(pk=annotation_id)
        )
        if annotation.annotator_id != user.pk or annotation.assignment is None:
            raise PermissionDenied("You can only edit your own annotations.")
        project = annotation.item.project
        if project.state == Project.CLOSED:
            raise AssignmentClosed("This project is closed; its annotations can no longer change.")
        order = annotation.assignment.display_order
        payload = sch.validate_annotation(project.scheme(), shown, n_responses=len(order), complete=True)
        AnnotationRevision.objects.create(annotation=annotation, payload=annotation.payload(), edited_by=user)
        for key, value in _fields(sch.to_canonical(payload, order)).items():
            setattr(annotation, key, value)
        annotation.save()
    return annotation
