"""The manager's routing page: features, a budget control, routing runs and their summaries."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp import selectors
from webapp.models import Membership, Project, RoutingCandidate, RoutingRun
from webapp.services.routing import RoutingError, route_project
from webapp.views import HtmxHttpRequest


def _manager_project(request: HtmxHttpRequest, slug: str) -> Project:
    return selectors.manager_project(request.user, slug, "Only the project's managers route its items.")


def _context(project: Project, **extra: object) -> dict[str, object]:
    n_items = project.items.count()
    with_features = project.items.filter(features__has_key="lexical").count()
    routes = dict(project.items.values("route").annotate(n=Count("id")).values_list("route", "n"))
    return {
        "project": project,
        "role": Membership.MANAGER,
        "n_items": n_items,
        "with_features": with_features,
        "features_missing": n_items - with_features,
        "routes": routes,
        "runs": project.routing_runs.select_related("created_by")[:20],
        "strategies": RoutingRun.STRATEGIES,
        "scored": RoutingCandidate.objects.filter(project=project, score__isnull=False).count(),
        "judges": sorted(
            set(project.items.filter(judgments__status="done").values_list("judgments__judge__name", flat=True))
        ),
        "error": "",
        "form": {},
        **extra,
    }


@require_GET
def routing_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    template = "webapp/routing.html"
    if request.htmx:
        template += "#status"
    return render(request, template, _context(project))


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
        budget_value = float(form["budget"])
        budget: float | int = int(budget_value) if budget_value > 1 else budget_value
        run = route_project(
            project,
            strategy=form["strategy"],
            budget=budget,
            seed=int(form["seed"] or 0),
            n_candidates=int(form["candidates"] or 1024),
            judge=form["judge"] or None,
            user=request.user,
        )
    except (RoutingError, ValueError) as exc:
        message = str(exc) if isinstance(exc, RoutingError) else f"budget, seed and candidates must be numbers ({exc})"
        return render(request, "webapp/routing.html", _context(project, error=message, form=form), status=400)
    messages.success(request, f"Routing run {run.pk}: {run.budget_n} items to humans.")
    return redirect("routing", slug=project.slug)
