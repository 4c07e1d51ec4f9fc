"""Dataset exports in the manager UI: start a snapshot, watch it, download its files (streamed)."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp import selectors
from webapp.exporting.aggregate import LABEL_SOURCES, RULES
from webapp.exporting.formats import FORMATS, TIES
from webapp.models import ExportSnapshot, Item, Judge, Membership, Project
from webapp.services import dispatch
from webapp.services.exports import ExportFailed, enqueue_export, snapshot_file
from webapp.views import HtmxHttpRequest


def _manager_project(request: HtmxHttpRequest, slug: str) -> Project:
    return selectors.manager_project(request.user, slug, "Only the project's managers export its data.")


def _context(project: Project, **extra: object) -> dict[str, object]:
    snapshots = list(project.exports.select_related("created_by")[:50])
    return {
        "project": project,
        "role": Membership.MANAGER,
        "snapshots": snapshots,
        "running": any(s.status == ExportSnapshot.RUNNING for s in snapshots),
        "formats": FORMATS,
        "file_types": ExportSnapshot.FILE_TYPES,
        "label_sources": LABEL_SOURCES,
        "rules": RULES,
        "ties": TIES,
        "routes": Item.ROUTES,
        "judges": Judge.objects.filter(judgments__item__project=project).distinct().values_list("name", flat=True),
        "form": {},
        "error": "",
        **extra,
    }


@require_GET
def exports_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    dispatch.resend_unsent(project, from_page=True)  # what the broker refused before, if it answers now
    template = "webapp/exports.html"
    if request.htmx:
        template += "#snapshots"
    return render(request, template, _context(project))


@require_POST
def export_start(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    post = request.POST
    form = {
        k: post.get(k, "")
        for k in ("format", "file_type", "label_source", "rule", "ai_judge", "aspect", "seed", "test_fraction", "ties")
    }
    form["conversational"] = post.get("conversational", "")
    form["no_margin"] = post.get("no_margin", "")
    try:
        options = {
            "label_source": form["label_source"] or "hybrid",
            "rule": form["rule"] or "majority",
            "ai_judge": form["ai_judge"] or None,
            "aspect": form["aspect"] or "overall",
            "seed": int(form["seed"] or 0),
            "test_fraction": float(form["test_fraction"] or 0.1),
            "conversational": bool(form["conversational"]),
            "ties": form["ties"] or "drop",
            "with_margin": not form["no_margin"],
        }
        snapshot = enqueue_export(
            project,
            format=form["format"],
            file_type=form["file_type"] or "jsonl",
            options=options,
            routes=[r for r in post.getlist("route") if r] or None,
            user=request.user,
        )
    except ValueError as exc:  # ExportFailed, or a seed / fraction that is not a number
        message = str(exc) if isinstance(exc, ExportFailed) else f"seed and test fraction must be numbers ({exc})"
        return render(request, "webapp/exports.html", _context(project, form=form, error=message), status=400)
    if snapshot.unsent:
        messages.warning(request, f"Export v{snapshot.version} is saved but not started: {dispatch.UNREACHABLE}")
    else:
        messages.success(request, f"Export v{snapshot.version} started.")
    return redirect("exports", slug=project.slug)


@require_GET
def export_download(request: HtmxHttpRequest, slug: str, version: int, name: str) -> FileResponse:
    project = _manager_project(request, slug)
    snapshot = ExportSnapshot.objects.filter(project=project, version=version).first()
    if snapshot is None:
        raise Http404("No such export")
    try:
        path = snapshot_file(snapshot, name)
    except FileNotFoundError:
        raise Http404("No such file in this export") from None
    # FileResponse streams the file in blocks; nothing is read whole into memory.
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"{project.slug}-v{version}-{path.name}")
