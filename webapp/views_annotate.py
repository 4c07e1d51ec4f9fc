"""The annotator workspace: next item, submit, skip, edit. Thin: the queue and annotations services do the work."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from webapp import scheme as sch
from webapp import selectors
from webapp.annotation_form import form_values, parse_form
from webapp.models import Assignment, Item, Project, Response
from webapp.services.annotations import AssignmentClosed, LeaseLost, edit_annotation, skip_assignment, submit_annotation
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
        "progress": selectors.annotator_progress(project, user, quota),
        "values": values or {},
        "errors": errors or {},
        "notice": notice,
        "skip_reasons": SKIP_REASONS,
        "flags": sch.FLAGS,
        "confidence_labels": sch.CONFIDENCE_LABELS,
    }
    if assignment is None:
        return context
    if Assignment.item.is_cached(assignment):
        item = assignment.item
        responses = list(item.responses.all())
    else:  # the item with its responses, in one query
        responses = list(Response.objects.filter(item_id=assignment.item_id).select_related("item"))
        item = responses[0].item if responses else assignment.item
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


def _render(request: HtmxHttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    template = "webapp/annotate.html" + ("#workspace" if request.htmx else "")
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
        assignment = claim_next(project, request.user)
    except QueueClosed as exc:
        context = workspace_context(project, request.user, None, notice=str(exc), quota=access.quota)
        return _render(request, context)
    return _render(request, workspace_context(project, request.user, assignment, notice=notice, quota=access.quota))


@require_http_methods(["GET"])
def annotate(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _next(request, selectors.project_access(request.user, slug))


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
    access = selectors.project_access(request.user, slug)
    project = access.project
    assignment = _assignment(project, request.user, assignment_id)
    data = parse_form(project.scheme(), request.POST, len(assignment.display_order))
    try:
        _, created = submit_annotation(assignment.pk, request.user, data)
    except sch.SchemeError as exc:
        context = workspace_context(project, request.user, assignment, values=request.POST, errors=_errors(exc))
        return _render(request, context, status=200 if request.htmx else 422)
    except (LeaseLost, AssignmentClosed) as exc:
        context = workspace_context(project, request.user, assignment, values=request.POST, notice=str(exc))
        context["blocked"] = True
        return _render(request, context, status=200 if request.htmx else 409)
    notice = "Saved." if created else "Already saved: this item was submitted before."
    if not request.htmx:
        messages.success(request, notice)
        return redirect("annotate", slug=project.slug)
    return _next(request, access, notice)


@require_POST
def annotate_skip(request: HtmxHttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    access = selectors.project_access(request.user, slug)
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
