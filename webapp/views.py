"""Views: thin. Reads come from selectors, writes go through services."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from webapp import selectors
from webapp.models import Item, Membership


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.projects_for_user(request.user))
    for project in projects:
        project.progress = selectors.annotator_progress(project, request.user)  # type: ignore[attr-defined]
    recent = selectors.recent_annotations(request.user)
    return render(request, "webapp/home.html", {"projects": projects, "recent": recent})


@require_GET
def project_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project, role = selectors.project_for_user(request.user, slug)
    if role != Membership.MANAGER:
        # Annotators work from the queue and never see other people's labels.
        return redirect("annotate", slug=project.slug)
    query = request.GET.get("q", "").strip()
    route = request.GET.get("route", "")
    page = Paginator(selectors.project_items(project, query, route), 50).get_page(request.GET.get("page"))
    context = {"project": project, "role": role, "page": page, "q": query, "route": route, "routes": Item.ROUTES}
    template = "webapp/project_detail.html"
    if request.htmx:
        template += "#items"
    return render(request, template, context)


@require_GET
def item_detail(request: HttpRequest, slug: str, item_id: int) -> HttpResponse:
    project, role = selectors.project_for_user(request.user, slug)
    if role != Membership.MANAGER:
        raise PermissionDenied("Only the project's managers browse items and their labels.")
    item = selectors.item_for_project(project, item_id)
    return render(request, "webapp/item_detail.html", {"project": project, "role": role, "item": item})


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
