"""The annotator workspace: next item, submit, skip, edit. Thin: the queue and annotations services do the work."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import get_template
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from webapp import scheme as sch
from webapp import selectors
from webapp.annotation_form import form_values, parse_form
from webapp.models import Assignment, Item, Project
from webapp.services.annotations import (
    AssignmentClosed,
    LeaseLost,
    edit_annotation,
    skip_assignment,
    submit_and_claim_next,
    submit_annotation,
)
from webapp.services.queue import QueueClosed, claim_next
from webapp.views import HtmxHttpRequest

LIKERT5_TEXT = {
    "A-is-clearly-better": "A is clearly better",
    "A-is-slightly-better": "A is slightly better",
    "Tie": "Tie",
    "B-is-slightly-better": "B is slightly better",
    "B-is-clearly-better": "B is clearly better",
}
STRENGTH7_TEXT = {-3: "A much better", -2: "A better", -1: "A slightly better", 0: "About the same"}
STRENGTH7_TEXT |= {1: "B slightly better", 2: "B better", 3: "B much better"}
SKIP_REASONS = ("Outside my expertise", "Unsafe content", "Broken prompt", "Both responses are bad")


def _scale_options(scheme: sch.Scheme) -> list[dict[str, Any]]:
    texts: dict[Any, str] = LIKERT5_TEXT if scheme.scale == sch.LIKERT5 else STRENGTH7_TEXT
    return [{"value": str(v), "text": texts[v], "key": k + 1} for k, v in enumerate(scheme.labels)]


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + k) for k in range(n)]


def workspace_context(
    project: Project,
    user: Any,
    assignment: Assignment | None,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    action: str = "",
    quota: int | selectors.Unknown | None = selectors.UNKNOWN,
) -> dict[str, Any]:
    scheme = project.scheme()
    context: dict[str, Any] = {
        "project": project,
        "scheme": scheme,
        "assignment": assignment,
        "values": values or {},
        "errors": errors or {},
        "notice": notice,
        "skip_reasons": SKIP_REASONS,
        "flags": sch.FLAGS,
        "confidence_labels": sch.CONFIDENCE_LABELS,
    }
    if assignment is None:
        context["progress"] = selectors.annotator_progress(project, user, quota)
        return context
    workspace = getattr(assignment, "workspace", None)  # the claim's statement read it (PostgreSQL)
    if workspace is not None:
        item, responses, done = workspace
        context["progress"] = selectors.annotator_progress(project, user, quota, done=done)
    elif Assignment.item.is_cached(assignment):
        item = assignment.item
        responses = list(item.responses.all())
        context["progress"] = selectors.annotator_progress(project, user, quota)
    else:  # the item with its responses and the annotator's progress, in one query
        item, responses, done = selectors.item_for_annotation(assignment.item_id, user, project)
        context["progress"] = selectors.annotator_progress(project, user, quota, done=done)
    by_position = {r.position: r for r in responses}
    shown = [by_position[i] for i in assignment.display_order]
    context.update(
        item=item,
        responses=[
            {
                "index": k,
                "letter": letter,
                "response": r,
                "ratings": [{"attr": a, "name": f"rating-{k}-{a}"} for a in scheme.rating_attributes],
            }
            for k, (letter, r) in enumerate(zip(_letters(len(shown)), shown, strict=True))
        ],
        aspects=[
            {"name": a, "reasons": scheme.reasons.get(a, ()), "options": _scale_options(scheme)} for a in scheme.aspects
        ],
        rating_range=range(sch.RATING_RANGE[0], sch.RATING_RANGE[1] + 1),
        action=action or reverse("annotate-submit", args=[project.slug, assignment.pk]),
        skip_action=reverse("annotate-skip", args=[project.slug, assignment.pk]),
    )
    return context


# The empty form's questions (the template's `questions` partial), by scheme and number of responses: the
# same HTML for every item of a project, and a good part of the cost of rendering the workspace.
_QUESTIONS: dict[tuple[str, int], str] = {}
_QUESTIONS_MAX = 256


def _questions_html(context: dict[str, Any]) -> str | None:
    """The questions partial's HTML for an empty form (no values, no errors, not editing), else None."""
    if context.get("assignment") is None or context.get("editing") or context["values"] or context["errors"]:
        return None
    key = (repr(context["scheme"]), len(context["responses"]))
    html = _QUESTIONS.get(key)
    if html is None:
        html = get_template("webapp/annotate.html#questions").render(context)
        if len(_QUESTIONS) >= _QUESTIONS_MAX:
            _QUESTIONS.clear()
        _QUESTIONS[key] = html
    return html


def _render(request: HtmxHttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    template = "webapp/annotate.html" + ("#workspace" if request.htmx else "")
    context["questions_html"] = _questions_html(context)
    return render(request, template, context, status=status)


def _errors(exc: sch.SchemeError) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, message in exc.problems:
        key = field.split(".")[0] if field.startswith(("ranking", "ratings", "flags")) else field
        out[key] = f"{out[key]}; {message}" if key in out else message
    return out


def _next(request: HtmxHttpRequest, access: selectors.Access, notice: str = "") -> HttpResponse:
    project = access.project
    try:
        assignment = claim_next(project, request.user, profile=access.profile)
    except QueueClosed as exc:
        context = workspace_context(project, request.user, None, notice=str(exc), quota=access.quota)
        return _render(request, context)
    return _render(request, workspace_context(project, request.user, assignment, notice=notice, quota=access.quota))


@require_http_methods(["GET"])
def annotate(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _next(request, selectors.project_access(request.user, slug, with_profile=True))


def _assignment(project: Project, user: Any, assignment_id: int) -> Assignment:
    """The user's assignment in the project, or 403."""
    assignment_table, item_table = (connection.ops.quote_name(m._meta.db_table) for m in (Assignment, Item))
    sql = (
        f"SELECT a.* FROM {assignment_table} a JOIN {item_table} i ON i.id = a.item_id"  # noqa: S608
        " WHERE a.id = %s AND a.annotator_id = %s AND i.project_id = %s"
    )
    assignment = next(iter(Assignment.objects.raw(sql, [assignment_id, user.pk, project.pk])), None)
    if assignment is None:
        raise PermissionDenied("This is not your assignment.")
    return assignment


@require_POST
def annotate_submit(request: HtmxHttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    access = selectors.project_access(request.user, slug, with_profile=True)
    project = access.project
    scheme = project.scheme()
    # The submit checks the assignment (the user's, in this project: else 403) and locks it, then reads the
    # form, knowing how many responses the assignment shows.
    answers = functools.partial(parse_form, scheme, request.POST)
    claimed: Assignment | None = None
    try:
        if request.htmx:  # and the next item, in the same transaction where that needs no waiting
            _, created, claimed = submit_and_claim_next(
                assignment_id, request.user, answers, project=project, profile=access.profile
            )
        else:
            _, created = submit_annotation(assignment_id, request.user, answers, project=project)
    except Assignment.DoesNotExist:
        raise PermissionDenied("This is not your assignment.") from None
    except sch.SchemeError as exc:
        assignment = _assignment(project, request.user, assignment_id)
        context = workspace_context(project, request.user, assignment, values=request.POST, errors=_errors(exc))
        return _render(request, context, status=200 if request.htmx else 422)
    except (LeaseLost, AssignmentClosed) as exc:
        assignment = _assignment(project, request.user, assignment_id)
        context = workspace_context(project, request.user, assignment, values=request.POST, notice=str(exc))
        context["blocked"] = True
        return _render(request, context, status=200 if request.htmx else 409)
    notice = "Saved." if created else "Already saved: this item was submitted before."
    if not request.htmx:
        messages.success(request, notice)
        return redirect("annotate", slug=project.slug)
    if claimed is not None:
        return _render(request, workspace_context(project, request.user, claimed, notice=notice, quota=access.quota))
    return _next(request, access, notice)


@require_POST
def annotate_skip(request: HtmxHttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    access = selectors.project_access(request.user, slug, with_profile=True)
    project = access.project
    assignment = _assignment(project, request.user, assignment_id)
    try:
        skip_assignment(assignment.pk, request.user, request.POST.get("skip_reason", ""))
    except sch.SchemeError as exc:
        context = workspace_context(project, request.user, assignment, values=request.POST, errors=_errors(exc))
        return _render(request, context, status=200 if request.htmx else 422)
    except AssignmentClosed as exc:
        return _next(request, access, str(exc))
    if not request.htmx:
        return redirect("annotate", slug=project.slug)
    return _next(request, access, "Skipped.")


@require_http_methods(["GET", "POST"])
def annotation_edit(request: HtmxHttpRequest, slug: str, annotation_id: int) -> HttpResponse:
    project, _ = selectors.project_for_user(request.user, slug)
    annotation = selectors.own_annotation(request.user, annotation_id)
    if annotation.item.project_id != project.pk or annotation.assignment is None:
        raise PermissionDenied("You can only edit your own annotations.")
    assignment = annotation.assignment
    action = reverse("annotation-edit", args=[project.slug, annotation.pk])
    if request.method == "POST":
        data = parse_form(project.scheme(), request.POST, len(assignment.display_order))
        try:
            edit_annotation(annotation.pk, request.user, data)
        except sch.SchemeError as exc:
            context = workspace_context(
                project, request.user, assignment, values=request.POST, errors=_errors(exc), action=action
            )
            context["editing"] = annotation
            return render(request, "webapp/annotate.html", context, status=422)
        except AssignmentClosed as exc:
            messages.error(request, str(exc))
            return redirect("home")
        messages.success(request, f"Your annotation of {annotation.item.external_id} was updated.")
        return redirect("home")
    shown = sch.to_display(sch.AnnotationPayload.model_validate(annotation.payload()), assignment.display_order)
    context = workspace_context(
        project, request.user, assignment, values=form_values(shown, project.scheme()), action=action
    )
    context["editing"] = annotation
    return render(request, "webapp/annotate.html", context)
