"""The manager's routing page: features and tags, proxy scores, a budget control with its preview, routing runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp import selectors
from webapp.models import Judge, Membership, Project, RoutingCandidate, RoutingJob, RoutingRun
from webapp.services.routing import (
    BudgetPreview,
    CurvePoint,
    RoutingError,
    budget_curve,
    budget_preview,
    parse_budget,
    route_project,
    start_proxy_scoring,
)
from webapp.services.tagging import count_tagged, start_tagging
from webapp.views import HtmxHttpRequest

PREVIEW_FIELDS = ("budget", "judge", "seed", "candidates")


def _manager_project(request: HtmxHttpRequest, slug: str) -> Project:
    return selectors.manager_project(request.user, slug, "Only the project's managers route its items.")


def _context(project: Project, **extra: object) -> dict[str, object]:
    n_items = project.items.count()
    embeddings = settings.ROUTING_EMBEDDINGS  # features of the other kind are computed again
    with_features = project.items.filter(features__has_key="lexical", features__lexical_embeddings=embeddings).count()
    routes = dict(project.items.values("route").annotate(n=Count("id")).values_list("route", "n"))
    jobs = {kind: project.routing_jobs.filter(kind=kind).select_related("judge").first() for kind in RoutingJob.KINDS}
    features_running = bool(with_features) and with_features < n_items
    return {
        "project": project,
        "role": Membership.MANAGER,
        "n_items": n_items,
        "with_features": with_features,
        "embeddings": embeddings,
        "features_missing": n_items - with_features,
        "tagged": count_tagged(project),
        "tagging_job": jobs[RoutingJob.TAGGING],
        "proxy_job": jobs[RoutingJob.PROXY],
        "polling": features_running or any(j is not None and j.active for j in jobs.values()),
        "taggers": Judge.objects.filter(backend=Judge.OPENAI, active=True).order_by("name"),
        "unscored": RoutingCandidate.objects.filter(project=project, score__isnull=True).count(),
        "routes": routes,
        "runs": project.routing_runs.select_related("created_by")[:20],
        "strategies": RoutingRun.STRATEGIES,
        "scored": RoutingCandidate.objects.filter(project=project, score__isnull=False).count(),
        "judges": sorted(
            set(project.items.filter(judgments__status="done").values_list("judgments__judge__name", flat=True))
        ),
        "error": "",
        "job_error": "",
        "form": {},
        "preview": None,
        "preview_error": "",
        **extra,
    }


def _preview(project: Project, form: dict[str, str]) -> tuple[BudgetPreview | None, str]:
    """The budget preview for the form's values, or the reason there is none."""
    try:
        return (
            budget_preview(
                project,
                parse_budget(form.get("budget") or "0.25"),
                judge=form.get("judge") or None,
                seed=int(form.get("seed") or 0),
                n_candidates=int(form.get("candidates") or 1024),
            ),
            "",
        )
    except RoutingError as exc:
        return None, str(exc)
    except ValueError as exc:
        return None, f"budget, seed and candidates must be numbers ({exc})"


@require_GET
def routing_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    if request.htmx:
        return render(request, "webapp/routing.html#status", _context(project))
    preview, preview_error = _preview(project, {})
    return render(request, "webapp/routing.html", _context(project, preview=preview, preview_error=preview_error))


@require_GET
def routing_preview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """What a budget buys before routing: the preview partial for htmx, else the whole page with it."""
    project = _manager_project(request, slug)
    form = {k: request.GET.get(k, "").strip() for k in PREVIEW_FIELDS}
    preview, preview_error = _preview(project, form)
    if request.htmx:
        return render(
            request,
            "webapp/routing.html#preview",
            {"project": project, "preview": preview, "preview_error": preview_error, "form": form},
        )
    context = _context(project, preview=preview, preview_error=preview_error, form=form)
    return render(request, "webapp/routing.html", context, status=400 if preview_error else 200)


@require_POST
def tagging_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    judge = Judge.objects.filter(name=request.POST.get("judge", "").strip()).first()
    try:
        if judge is None:
            raise RoutingError("judge: choose an OpenAI-compatible judge to tag with")
        job = start_tagging(project, judge, force=request.POST.get("force") == "on", user=request.user)
    except RoutingError as exc:
        return render(request, "webapp/routing.html", _context(project, job_error=str(exc)), status=400)
    if job.total:
        messages.success(request, f"Tagging {job.total} item(s) with {judge.name} on a worker (job {job.pk}).")
    else:
        messages.info(request, "Every item is tagged with the current prompt already (tick “again” to redo them).")
    return redirect("routing", slug=project.slug)


@require_POST
def proxy_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    try:
        new = int(request.POST.get("new", "").strip() or 0)
        job = start_proxy_scoring(
            project,
            judge=request.POST.get("judge", "").strip() or None,
            new=new,
            force=request.POST.get("force") == "on",
            user=request.user,
        )
    except (RoutingError, ValueError) as exc:
        message = str(exc) if isinstance(exc, RoutingError) else "new candidates must be a whole number"
        return render(request, "webapp/routing.html", _context(project, job_error=message), status=400)
    if job.total:
        messages.success(request, f"Scoring {job.total} candidate(s) with the proxy on a worker (job {job.pk}).")
    else:
        messages.info(request, "Every candidate has a score already: make new ones, or tick “again” to rescore.")
    return redirect("routing", slug=project.slug)


@require_POST
def features_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    from webapp.tasks import compute_features

    project = _manager_project(request, slug)
    transaction.on_commit(lambda: compute_features.delay(project.pk))
    messages.success(request, "Computing features on a worker; this page shows the progress.")
    return redirect("routing", slug=project.slug)


@require_POST
def routing_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    form = {k: request.POST.get(k, "").strip() for k in ("strategy", "budget", "seed", "judge", "candidates")}
    try:
        run = route_project(
            project,
            strategy=form["strategy"],
            budget=parse_budget(form["budget"]),
            seed=int(form["seed"] or 0),
            n_candidates=int(form["candidates"] or 1024),
            judge=form["judge"] or None,
            user=request.user,
        )
    except (RoutingError, ValueError) as exc:
        message = str(exc) if isinstance(exc, RoutingError) else f"budget, seed and candidates must be numbers ({exc})"
        preview, preview_error = _preview(project, form)
        context = _context(project, error=message, form=form, preview=preview, preview_error=preview_error)
        return render(request, "webapp/routing.html", context, status=400)
    messages.success(request, f"Routing run {run.pk}: {run.budget_n} items to humans.")
    return redirect("routing", slug=project.slug)


@dataclass(frozen=True)
class CurveChart:
    """The predicted-score curve as SVG coordinates (drawn by routing.html#curve, no script)."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: str  # the polyline's "x,y x,y ..."
    dots: list[tuple[float, float, str]]  # x, y, tooltip
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    rows: list[CurvePoint]


def curve_chart(points: Sequence[CurvePoint], *, width: int = 640, height: int = 220) -> CurveChart | None:
    """Predicted score (y) against the share of items sent to humans (x); None without points."""
    if not points:
        return None
    left, right, top, bottom = 56.0, float(width - 16), 12.0, float(height - 28)
    lo = min(p.predicted_score for p in points)
    hi = max(p.predicted_score for p in points)
    if hi - lo < 1e-9:  # a flat curve: centre it
        lo, hi = lo - 0.01, hi + 0.01

    def sx(share: float) -> float:
        return round(left + (right - left) * share, 2)

    def sy(score: float) -> float:
        return round(bottom - (bottom - top) * (score - lo) / (hi - lo), 2)

    dots = [
        (
            sx(p.share),
            sy(p.predicted_score),
            f"{p.share:.0%} to humans ({p.budget_n} items): predicted {p.predicted_score:.4f}, cost {p.total_cost:.2f}",
        )
        for p in points
    ]
    return CurveChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=" ".join(f"{x},{y}" for x, y, _ in dots),
        dots=dots,
        x_ticks=[(sx(s), f"{s:.0%}") for s in (0.0, 0.25, 0.5, 0.75, 1.0)],
        y_ticks=[(sy(v), f"{v:.3f}") for v in (lo, (lo + hi) / 2, hi)],
        rows=list(points),
    )


@require_GET
def routing_curve(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Predicted score and cost across budgets: the partial for htmx, else the whole page with it."""
    project = _manager_project(request, slug)
    judge = request.GET.get("judge", "").strip() or None
    try:
        seed = max(0, int(request.GET.get("seed", "").strip() or 0))
    except ValueError:
        seed = 0
    points, why = budget_curve(project, judge=judge, seed=seed)
    curve = {"curve": curve_chart(points), "curve_note": why or "", "curve_loaded": True}
    if request.htmx:
        return render(request, "webapp/routing.html#curve", {"project": project, **curve})
    preview, preview_error = _preview(project, {})
    context = _context(project, preview=preview, preview_error=preview_error, **curve)
    return render(request, "webapp/routing.html", context)
