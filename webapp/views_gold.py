"""Gold items and the qualification test in the manager UI: the project's gold items and their answers,
the gold settings, and each annotator's gold accuracy, qualification and pause state. Managers only."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp import scheme as sch
from webapp import selectors
from webapp.models import Item, Membership, Project
from webapp.services import gold
from webapp.views import HtmxHttpRequest

WHY = "Only the project's managers see and set its gold items."


def _manager_project(request: HtmxHttpRequest, slug: str) -> Project:
    return selectors.manager_project(request.user, slug, WHY)


def _label_text(label: Any) -> str:
    return f"{label:+d}" if isinstance(label, int) and label else str(label)


def _context(project: Project, **extra: Any) -> dict[str, Any]:
    items = list(gold.gold_items(project))
    for g in items:
        g.answer_text = (  # type: ignore[attr-defined]
            f"response {chr(ord('A') + g.preferred)} preferred"
            if g.preferred is not None
            else ", ".join(f"{a}: {_label_text(v)}" for a, v in g.preferences.items())
        )
    scheme = project.scheme()
    return {
        "project": project,
        "role": Membership.MANAGER,
        "gold_items": items,
        "n_qualification": sum(1 for g in items if g.qualification),
        "annotators": gold.project_accuracy(project),
        "labels": [{"value": str(v), "text": _label_text(v)} for v in scheme.labels],
        "pairwise": project.kind == sch.PAIRWISE,
        "form": {},
        "error": "",
        "settings_error": "",
        **extra,
    }


@require_GET
def gold_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    return render(request, "webapp/gold.html", _context(project))


def _share(text: str, name: str, default: float | None) -> float | None:
    """A share from a form: "0.9" or "90%"; empty: the default."""
    text = (text or "").strip()
    if not text:
        return default
    percent = text.endswith("%")
    try:
        value = float(text.rstrip("%").strip())
    except ValueError:
        raise gold.GoldError(f"{name}: a share between 0 and 1, or a percentage") from None
    return value / 100 if percent else value


@require_POST
def gold_settings(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug)
    post = request.POST
    try:
        min_gold = post.get("pause_min_gold", "").strip() or "5"
        if not min_gold.isdigit():
            raise gold.GoldError("pause after: a whole number of gold answers")
        gold.update_settings(
            project,
            gold_rate=_share(post.get("gold_rate", ""), "gold rate", 0.0) or 0.0,
            qualification_required=bool(post.get("qualification_required")),
            qualification_pass_mark=_share(post.get("qualification_pass_mark", ""), "pass mark", 0.9) or 0.0,
            pause_below=_share(post.get("pause_below", ""), "pause below", None),
            pause_min_gold=int(min_gold),
        )
    except gold.GoldError as exc:
        return render(request, "webapp/gold.html", _context(project, settings_error=str(exc)), status=422)
    messages.success(request, "Gold settings saved.")
    return redirect("gold", slug=project.slug)


@require_POST
def gold_item_save(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Make an item gold (by its external id) with its answer, or change a gold item's answer."""
    project = _manager_project(request, slug)
    post = request.POST
    form = {k: post.get(k, "") for k in ("external_id", "preferred", "position", "note", "qualification")}
    form.update({f"pref-{a}": post.get(f"pref-{a}", "") for a in project.aspects})
    try:
        external_id = form["external_id"].strip()
        item = Item.objects.filter(project=project, external_id=external_id).first()
        if item is None:
            raise gold.GoldError(f"no item {external_id!r} in this project")
        preferences = {a: gold.parse_label(project, form[f"pref-{a}"]) for a in project.aspects}
        preferred_text = form["preferred"].strip()
        if preferred_text and not preferred_text.isdigit():
            raise gold.GoldError("preferred response: a response number (0 is A)")
        position = form["position"].strip()
        if position and not position.isdigit():
            raise gold.GoldError("position: a whole number")
        gold.set_gold(
            project,
            item,
            preferences=preferences,
            preferred=int(preferred_text) if preferred_text else None,
            qualification=bool(form["qualification"]),
            position=int(position or 0),
            note=form["note"].strip(),
            user=request.user,
        )
    except gold.GoldError as exc:
        return render(request, "webapp/gold.html", _context(project, form=form, error=str(exc)), status=422)
    messages.success(request, f"{external_id} is a gold item.")
    return redirect("gold", slug=project.slug)


@require_POST
def gold_item_remove(request: HtmxHttpRequest, slug: str, item_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    item = Item.objects.filter(project=project, pk=item_id).first()
    if item is not None:
        try:
            gold.unset_gold(project, item)
        except gold.GoldError as exc:
            return render(request, "webapp/gold.html", _context(project, error=str(exc)), status=422)
        messages.success(request, f"{item.external_id} is a regular item again.")
    return redirect("gold", slug=project.slug)


def _membership(project: Project, membership_id: int) -> Membership:
    membership = Membership.objects.filter(project=project, pk=membership_id).first()
    if membership is None:
        raise Http404("No such member")
    return membership


@require_POST
def gold_unpause(request: HtmxHttpRequest, slug: str, membership_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    membership = gold.unpause(project, _membership(project, membership_id).pk)
    messages.success(request, f"{membership.user.get_username()} can annotate again.")
    return redirect("gold", slug=project.slug)


@require_POST
def gold_qualify(request: HtmxHttpRequest, slug: str, membership_id: int) -> HttpResponse:
    project = _manager_project(request, slug)
    membership = gold.pass_by_hand(project, _membership(project, membership_id).pk, request.user)
    messages.success(request, f"{membership.user.get_username()} is qualified.")
    return redirect("gold", slug=project.slug)
