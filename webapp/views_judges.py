"""The manager's judging page: configure judges, start, watch, cancel and retry judge runs."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotators.labels import JURY_RULES
from annotators.registry import RUNNABLE_BACKENDS
from webapp import selectors
from webapp.models import Judge, JudgeRun, Membership, Project
from webapp.services import judging
from webapp.views import HtmxHttpRequest

JUDGE_FIELDS = ("name", "backend", "model", "base_url", "api_key_env", "weak", "members", "rule", "config")


def _manager_project(request: HtmxHttpRequest, slug: str) -> Project:
    return selectors.manager_project(request.user, slug, "Only the project's managers run judges.")


def _page_context(project: Project, **extra: Any) -> dict[str, Any]:
    runs = list(selectors.project_runs(project)[:20])
    progress = {run.pk: selectors.run_progress(run) for run in runs}
    for run in runs:
        run.progress = progress[run.pk]  # type: ignore[attr-defined]
    context: dict[str, Any] = {
        "project": project,
        "role": Membership.MANAGER,
        "judges": Judge.objects.exclude(backend=Judge.EXTERNAL).prefetch_related("members"),
        "runnable": Judge.objects.filter(backend__in=Judge.RUNNABLE, active=True),
        "backends": RUNNABLE_BACKENDS,
        "rules": JURY_RULES,
        "orders": JudgeRun.ORDERS,
        "runs": runs,
        "any_active": any(r.status in (JudgeRun.QUEUED, JudgeRun.RUNNING) for r in runs),
        "judge_form": {},
        "judge_errors": {},
        "run_errors": {},
    }
    context.update(extra)
    return context


@require_GET
def judging_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    template = "webapp/judging.html"
    if request.htmx and request.GET.get("part") == "runs":
        template += "#runs"
    return render(request, template, _page_context(project))


def _field_of(message: str) -> str:
    """JudgingError messages start with the field they are about ("model: ...")."""
    head, _, _ = message.partition(":")
    return head if head in JUDGE_FIELDS or head in ("limit", "orders", "judge", "chunk_size") else "general"


@require_POST
def judge_create(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    form = {
        k: request.POST.get(k, "").strip() for k in (*JUDGE_FIELDS, "price_prompt", "price_completion", "rpm", "tpm")
    }
    members = request.POST.getlist("members")
    errors: dict[str, str] = {}
    config: dict[str, Any] = {}
    if form["config"]:
        try:
            parsed = json.loads(form["config"])
        except json.JSONDecodeError as exc:
            parsed = None
            errors["config"] = f"not JSON: {exc}"
        if parsed is not None and not isinstance(parsed, dict):
            errors["config"] = "must be a JSON object"
        elif parsed is not None:
            config = parsed
    for key in ("base_url", "api_key_env", "weak", "rule"):
        if form[key]:
            config[key] = form[key]
    numbers: dict[str, int] = {}
    for key in ("rpm", "tpm"):
        try:
            numbers[key] = int(form[key] or 0)
        except ValueError:
            errors[key] = "a whole number"
    if not errors:
        try:
            judge = judging.create_judge(
                name=form["name"],
                backend=form["backend"],
                model=form["model"],
                config=config,
                members=members,
                price_prompt_per_m=form["price_prompt"] or "0",
                price_completion_per_m=form["price_completion"] or "0",
                requests_per_minute=numbers["rpm"],
                tokens_per_minute=numbers["tpm"],
            )
        except judging.JudgingError as exc:
            errors[_field_of(str(exc))] = str(exc)
        else:
            messages.success(request, f"Judge {judge.name} saved.")
            return redirect("judging", slug=project.slug)
    context = _page_context(project, judge_form={**form, "members": members}, judge_errors=errors)
    return render(request, "webapp/judging.html", context, status=400)


@require_POST
def run_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    errors: dict[str, str] = {}
    judge = (
        Judge.objects.filter(pk=request.POST.get("judge") or 0).first()
        if request.POST.get("judge", "").isdigit()
        else None
    )
    limit: int | None = None
    if request.POST.get("limit", "").strip():
        try:
            limit = int(request.POST["limit"])
        except ValueError:
            errors["limit"] = "limit: a whole number"
    if judge is None:
        errors["judge"] = "judge: pick a judge"
    if not errors and judge is not None:
        try:
            run = judging.start_run(
                project, judge, limit=limit, orders=request.POST.get("orders", JudgeRun.BOTH), user=request.user
            )
        except judging.JudgingError as exc:
            errors[_field_of(str(exc))] = str(exc)
        else:
            if judging.enqueue_error(run):
                messages.warning(
                    request,
                    f"Run {run.pk} is saved and queued, but the workers' queue could not be reached"
                    f" ({judging.enqueue_error(run)}): it starts once an operator resumes it"
                    f" (manage.py judge {project.slug} --judge {judge.name} --resume).",
                )
            else:
                messages.success(request, f"Run {run.pk} started: {judge.name} on {run.items_total} item(s).")
            return redirect("judging", slug=project.slug)
    return render(request, "webapp/judging.html", _page_context(project, run_errors=errors), status=400)


@require_POST
def run_cancel(request: HtmxHttpRequest, slug: str, run_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    run = selectors.run_for_project(project, run_id)
    try:
        judging.cancel_run(run)
        messages.success(request, f"Run {run.pk} cancelled.")
    except judging.JudgingError as exc:
        messages.error(request, str(exc))
    return redirect("judging", slug=project.slug)


@require_POST
def run_retry(request: HtmxHttpRequest, slug: str, run_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    run = selectors.run_for_project(project, run_id)
    if run.status in (JudgeRun.QUEUED, JudgeRun.RUNNING):
        messages.error(request, f"Run {run.pk} is still going; retry its failures once it ends.")
    else:
        n = judging.retry_failed(run)
        if judging.enqueue_error(run):
            messages.warning(
                request, f"Run {run.pk}: {n} item(s) queued again, but not sent: {judging.enqueue_error(run)}."
            )
        else:
            messages.success(
                request, f"Run {run.pk}: {n} item(s) queued again." if n else f"Run {run.pk} has no failures."
            )
    return redirect("judging", slug=project.slug)


@require_GET
def run_detail(request: HtmxHttpRequest, slug: str, run_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    run = selectors.run_for_project(project, run_id)
    failures = run.judgments.filter(status="failed").select_related("item", "judge").order_by("-updated_at")[:50]
    context = {
        "project": project,
        "role": Membership.MANAGER,
        "run": run,
        "progress": selectors.run_progress(run),
        "failures": failures,
    }
    template = "webapp/run_detail.html"
    if request.htmx:
        template += "#progress"
    return render(request, template, context)
