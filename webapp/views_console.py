"""The manager console: project settings with a live preview, uploads with a validation report, people.

Thin, as the other views: reads come from selectors, writes go through services (projects, users, uploads).
Who may do what: a project's settings and data, its managers and the console admins (superusers and staff);
a new project, whoever may_create_projects; the people pages, admins (everyone) and managers (their
projects' members). See docs/console.md.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp import scheme as sch
from webapp import selectors
from webapp.importing.formats import FORMATS
from webapp.models import AnnotatorProfile, ImportJob, Item, Membership, Project, Response
from webapp.services import dispatch, uploads
from webapp.services.projects import (
    ProjectError,
    create_managed_project,
    default_settings,
    label_counts,
    parse_settings_form,
    project_settings,
    remove_member,
    set_membership,
    set_state,
    settings_form_values,
    update_project,
)
from webapp.services.users import PeopleError, create_member, parse_domains, set_active, set_profile
from webapp.views import HtmxHttpRequest
from webapp.views_annotate import _letters, _scale_options

FLAG_FIELDS = ("justification_required", "ask_confidence", "allow_ties")
TEXT_FIELDS = (
    *("name", "slug", "guidelines", "kind", "scale", "aspects", "reasons", "justification_min_length"),
    *("overlap_normal", "overlap_expert", "human_budget", "cost_per_human_annotation"),
)
# What the preview shows where a project has no item that fits the scheme (or is new).
EXAMPLE_PROMPT = "Explain in two sentences why the sky is blue."
EXAMPLE_RESPONSES = (
    "Sunlight scatters off the molecules of the air, and blue light, with its short wavelength, scatters far more "
    "than red (Rayleigh scattering). So blue light reaches our eyes from every part of the sky.",
    "The sky is blue because it reflects the oceans.",
    "Because of Rayleigh scattering: air molecules scatter short (blue) wavelengths most strongly.",
)
STATE_ACTIONS = {Project.ACTIVE: "Open for annotation", Project.CLOSED: "Close", Project.DRAFT: "Back to draft"}


def _errors(problems: list[tuple[str, str]]) -> dict[str, str]:
    """Problems by form field (several joined with '; '); those without a field under ''."""
    out: dict[str, str] = {}
    for field, message in problems:
        out[field] = f"{out[field]}; {message}" if field in out else message
    return out


# --- project settings ---------------------------------------------------------------------------------


def _settings_project(request: HttpRequest, slug: str) -> Project:
    return selectors.console_project(request.user, slug, "Only the project's managers change its settings.")


def _may_create(request: HttpRequest) -> None:
    if not selectors.may_create_projects(request.user):
        raise PermissionDenied("Only admins, and staff allowed to add projects, create projects.")


def _form_echo(data: Any) -> dict[str, Any]:
    """The settings form as submitted, to show it again."""
    form: dict[str, Any] = {k: data.get(k, "") for k in TEXT_FIELDS}
    form.update({k: data.get(k) in ("on", "1", "true", "yes") for k in FLAG_FIELDS})
    form["rating_attributes"] = data.getlist("rating_attributes")
    return form


def _preview_scheme(values: dict[str, Any], problems: list[tuple[str, str]], base: dict[str, Any]) -> sch.Scheme:
    """The scheme the form's values describe; a field with a problem keeps the saved (or default) value."""
    bad = {field for field, _ in problems}
    pick = {k: base[k] if k in bad else values[k] for k in ("kind", "scale", "aspects", "rating_attributes")}
    pick["justification_min_length"] = values["justification_min_length"] or 0
    reasons = base["reasons"] if "reasons" in bad else values["reasons"]
    return sch.Scheme(
        kind=pick["kind"],
        scale=pick["scale"],
        aspects=tuple(pick["aspects"]),
        reasons={a: tuple(r) for a, r in reasons.items() if a in pick["aspects"]},
        rating_attributes=tuple(pick["rating_attributes"]),
        justification_required=values["justification_required"],
        justification_min_length=pick["justification_min_length"],
        ask_confidence=values["ask_confidence"],
        allow_ties=values["allow_ties"],
    )


def _sample(project: Project | None, scheme: sch.Scheme) -> tuple[Item, list[Response], str]:
    """The item the preview shows: the project's first one where it fits the scheme, else the built-in example."""
    found = selectors.sample_item(project) if project is not None else None
    if found is not None:
        item, responses = found
        n = len(responses)
        if (scheme.kind == sch.PAIRWISE and n == 2) or (scheme.kind == sch.RANKING and n >= 2):
            return item, responses, f"the project's first item, {item.external_id}"
    n = 2 if scheme.kind == sch.PAIRWISE else 3
    item = Item(external_id="example", prompt=EXAMPLE_PROMPT)
    responses = [Response(position=k, text=EXAMPLE_RESPONSES[k]) for k in range(n)]
    why = "a built-in example" + (" (the project has no items yet)" if project is not None and found is None else "")
    return item, responses, why


def _preview_context(
    project: Project | None, values: dict[str, Any], problems: list[tuple[str, str]], base: dict[str, Any]
) -> dict[str, Any]:
    """What the annotation page's questions partial needs (see views_annotate.workspace_context), for a sample."""
    scheme = _preview_scheme(values, problems, base)
    item, responses, source = _sample(project, scheme)
    return {
        "scheme": scheme,
        "item": item,
        "sample_source": source,
        "preview_guidelines": values["guidelines"],
        "preview_problems": problems,
        "responses": [
            {
                "index": k,
                "letter": letter,
                "response": r,
                "ratings": [{"attr": a, "name": f"rating-{k}-{a}"} for a in scheme.rating_attributes],
            }
            for k, (letter, r) in enumerate(zip(_letters(len(responses)), responses, strict=True))
        ],
        "aspects": [
            {"name": a, "reasons": scheme.reasons.get(a, ()), "options": _scale_options(scheme)} for a in scheme.aspects
        ],
        "rating_range": range(sch.RATING_RANGE[0], sch.RATING_RANGE[1] + 1),
        "values": {},
        "errors": {},
        "flags": sch.FLAGS,
        "confidence_labels": sch.CONFIDENCE_LABELS,
        "editing": False,
    }


def _project_page(
    request: HttpRequest,
    project: Project | None,
    *,
    form: dict[str, Any],
    values: dict[str, Any],
    problems: list[tuple[str, str]] | None = None,
    preview_problems: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    base = project_settings(project) if project is not None else default_settings()
    context: dict[str, Any] = {
        "project": project,
        "role": Membership.MANAGER,
        "form": form,
        "form_errors": _errors(problems or []),
        "kinds": sch.KINDS,
        "scales": sch.SCALES,
        "rating_attributes": sch.RATING_ATTRIBUTES,
        "state_actions": [],
        "labels": (0, 0),
        **_preview_context(project, values, preview_problems or [], base),
    }
    if project is not None:
        context["labels"] = label_counts(project)
        context["state_actions"] = [(s, text) for s, text in STATE_ACTIONS.items() if s != project.state]
        context["n_items"] = project.items.count()
    return render(request, "webapp/console_project.html", context, status=status)


@require_http_methods(["GET", "POST"])
def project_new(request: HtmxHttpRequest) -> HttpResponse:
    _may_create(request)
    if request.method == "GET":
        values = default_settings()
        return _project_page(request, None, form=settings_form_values(values), values=values)
    values, problems = parse_settings_form(request.POST, new=True)
    if not problems:
        try:
            project = create_managed_project(request.user, values)
        except ProjectError as exc:
            problems = exc.problems
        else:
            messages.success(request, f"Project {project.slug} created as a draft. Upload its items next.")
            return redirect("project-edit", slug=project.slug)
    form = _form_echo(request.POST)
    return _project_page(
        request, None, form=form, values=values, problems=problems, preview_problems=problems, status=400
    )


@require_http_methods(["GET", "POST"])
def project_edit(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _settings_project(request, slug)
    if request.method == "GET":
        values = project_settings(project)
        return _project_page(request, project, form=settings_form_values(values, project.slug), values=values)
    values, problems = parse_settings_form(request.POST, new=False)
    if not problems:
        try:
            changed = update_project(project, values)
        except ProjectError as exc:
            problems = exc.problems
        else:
            if changed:
                messages.success(request, f"Saved: {', '.join(f.replace('_', ' ') for f in changed)}.")
            else:
                messages.info(request, "Nothing changed.")
            return redirect("project-edit", slug=project.slug)
    form = {**_form_echo(request.POST), "slug": project.slug}
    return _project_page(
        request, project, form=form, values=values, problems=problems, preview_problems=problems, status=400
    )


def _preview(request: HtmxHttpRequest, project: Project | None) -> HttpResponse:
    """The annotation form for the form's current (unsaved) values: the preview partial for htmx, else the page."""
    values, problems = parse_settings_form(request.GET, new=project is None)
    if request.htmx:
        base = project_settings(project) if project is not None else default_settings()
        context = {"project": project, **_preview_context(project, values, problems, base)}
        return render(request, "webapp/console_project.html#preview", context)
    form = {**_form_echo(request.GET), **({"slug": project.slug} if project is not None else {})}
    return _project_page(request, project, form=form, values=values, problems=problems, preview_problems=problems)


@require_GET
def project_new_preview(request: HtmxHttpRequest) -> HttpResponse:
    _may_create(request)
    return _preview(request, None)


@require_GET
def project_edit_preview(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _preview(request, _settings_project(request, slug))


@require_POST
def project_state(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _settings_project(request, slug)
    state = request.POST.get("state", "")
    try:
        set_state(project, state)
    except ProjectError as exc:
        messages.error(request, str(exc))
    else:
        said = {Project.ACTIVE: "open for annotation", Project.CLOSED: "closed", Project.DRAFT: "a draft again"}
        messages.success(request, f"{project.slug} is {said[state]}.")
    return redirect("project-edit", slug=project.slug)


# --- uploads ------------------------------------------------------------------------------------------


def _data_project(request: HttpRequest, slug: str) -> Project:
    return selectors.console_project(request.user, slug, "Only the project's managers upload its items.")


def _jobs(project: Project) -> list[dict[str, Any]]:
    return [{"job": job, "name": uploads.staged_name(job.path)} for job in selectors.project_import_jobs(project)]


def _upload_context(project: Project, **extra: Any) -> dict[str, Any]:
    jobs = _jobs(project)
    return {
        "project": project,
        "role": Membership.MANAGER,
        "formats": FORMATS,
        "extensions": sorted(uploads.EXTENSIONS),
        "max_bytes": uploads.max_upload_bytes(),
        "jobs": jobs,
        "polling": any(j["job"].status in (ImportJob.QUEUED, ImportJob.RUNNING) for j in jobs),
        "form": {"format": "native"},
        "upload_errors": {},
        **extra,
    }


@require_GET
def upload_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _data_project(request, slug)
    dispatch.resend_unsent(project, from_page=True)  # what the broker refused before, if it answers now
    template = "webapp/console_upload.html" + ("#jobs" if request.htmx else "")
    return render(request, template, _upload_context(project))


@csrf_exempt  # checked by upload_receive, once the size limit's handler is in place (Django's documented way)
@require_POST
def upload_post(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _data_project(request, slug)  # before a byte of the body is read
    limit = uploads.max_upload_bytes()
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + (1 << 20):  # far over: refused without reading the body
        message = f"the upload is over the limit of {limit // (1 << 20):,} MB"
        context = _upload_context(project, upload_errors={"file": message})
        return render(request, "webapp/console_upload.html", context, status=413)
    handler = uploads.SizeLimitHandler(limit, request)
    request.upload_handlers.insert(0, handler)
    return upload_receive(request, project, handler)


@csrf_protect
def upload_receive(request: HtmxHttpRequest, project: Project, handler: uploads.SizeLimitHandler) -> HttpResponse:
    fmt = request.POST.get("format", "native")
    upload = request.FILES.get("file")
    form = {"format": fmt}
    try:
        if handler.too_big:
            raise uploads.UploadError("file", f"over the limit of {handler.limit // (1 << 20):,} MB", 413)
        if upload is None:
            raise uploads.UploadError("file", "choose a file to upload")
        staged = uploads.stage_upload(project, request.user, upload, fmt)
    except uploads.UploadError as exc:
        context = _upload_context(project, upload_errors={exc.field: str(exc)}, form=form)
        return render(request, "webapp/console_upload.html", context, status=exc.status)
    except ValueError as exc:  # what import_file's argument checks say (the type checks come first)
        context = _upload_context(project, upload_errors={"file": str(exc)}, form=form)
        return render(request, "webapp/console_upload.html", context, status=400)
    return redirect("upload-report", slug=project.slug, token=staged.token)


def _staged(project: Project, token: str) -> uploads.StagedUpload:
    staged = uploads.load_staged(project, token)
    if staged is None:
        raise Http404("No such upload (uploads are kept for a day)")
    return staged


def _report_page(
    request: HttpRequest, project: Project, staged: uploads.StagedUpload, error: str = "", status: int = 200
) -> HttpResponse:
    job = ImportJob.objects.filter(pk=staged.job_id, project=project).first() if staged.job_id else None
    report = staged.report
    context = {
        "project": project,
        "role": Membership.MANAGER,
        "staged": staged,
        "meta": staged.meta,
        "report": report,
        "responses": sorted(report.responses.items()),
        "more_errors": report.error_total - len(report.errors),
        "job": job,
        "error": error,
    }
    return render(request, "webapp/console_upload_report.html", context, status=status)


@require_GET
def upload_report(request: HtmxHttpRequest, slug: str, token: str) -> HttpResponse:
    project = _data_project(request, slug)
    return _report_page(request, project, _staged(project, token))


@require_POST
def upload_import(request: HtmxHttpRequest, slug: str, token: str) -> HttpResponse:
    project = _data_project(request, slug)
    staged = _staged(project, token)
    update = request.POST.get("update") == "on"
    try:
        job = uploads.import_staged(project, staged, request.user, update=update)
    except uploads.UploadError as exc:
        return _report_page(request, project, staged, error=str(exc), status=exc.status)
    report = staged.report
    n = report.new + (report.changed if update else 0)
    if job.unsent:
        messages.warning(
            request, f"Import #{job.pk} of {staged.meta['name']} is saved but not started: {dispatch.UNREACHABLE}"
        )
    else:
        messages.success(request, f"Importing {n:,} item(s) from {staged.meta['name']} on a worker (import #{job.pk}).")
    return redirect("upload", slug=project.slug)


# --- people -------------------------------------------------------------------------------------------


def _people_access(request: HttpRequest) -> None:
    if not selectors.may_manage_people(request.user):
        raise PermissionDenied("Only admins and project managers manage people.")


def _managed_project(request: HttpRequest, slug: str) -> Project:
    """A project the user manages, from a form's value: 403 for any other (a manager's own projects only)."""
    project = selectors.managed_projects(request.user).filter(slug=slug).first()
    if project is None:
        raise PermissionDenied("You do not manage that project.")
    return project


def _quota(raw: str, problems: list[tuple[str, str]]) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit():
        problems.append(("quota", f"{raw!r} is not a whole number (leave it empty for no quota)"))
        return None
    return int(raw)


def _people_context(request: HtmxHttpRequest, **extra: Any) -> dict[str, Any]:
    query = request.GET.get("q", "").strip()
    managed = list(selectors.managed_projects(request.user))
    by_slug = {p.slug: p for p in managed}
    project = by_slug.get(request.GET.get("project", ""))
    page = Paginator(selectors.people_for(request.user, query, project), 50).get_page(request.GET.get("page"))
    return {
        "page": page,
        "q": query,
        "project_filter": project,
        "managed": managed,
        "is_admin": selectors.is_console_admin(request.user),
        "tiers": sch.TIERS,
        "roles": Membership.ROLES,
        "new": {"role": Membership.ANNOTATOR, "tier": AnnotatorProfile.NORMAL, "project": getattr(project, "slug", "")},
        "new_errors": {},
        "add": {"role": Membership.ANNOTATOR},
        "add_errors": {},
        "created": None,
        **extra,
    }


@require_GET
def people(request: HtmxHttpRequest) -> HttpResponse:
    _people_access(request)
    template = "webapp/console_people.html" + ("#people" if request.htmx else "")
    return render(request, template, _people_context(request))


@require_POST
def person_new(request: HtmxHttpRequest) -> HttpResponse:
    _people_access(request)
    post = request.POST
    problems: list[tuple[str, str]] = []
    slug = post.get("project", "")
    project = _managed_project(request, slug) if slug else None
    if project is None and not selectors.is_console_admin(request.user):
        problems.append(("project", "choose one of your projects: you manage the people of your projects"))
    quota = _quota(post.get("quota", ""), problems)
    form = {k: post.get(k, "") for k in ("username", "email", "tier", "domains", "project", "role", "quota")}
    if not problems:
        try:
            user, password = create_member(
                username=post.get("username", ""),
                email=post.get("email", ""),
                password=post.get("password", ""),
                tier=post.get("tier", AnnotatorProfile.NORMAL),
                domains=parse_domains(post.get("domains", "")),
                project=project,
                role=post.get("role", Membership.ANNOTATOR),
                quota=quota,
            )
        except PeopleError as exc:
            problems = exc.problems
        else:
            # The password is shown on this page once (never stored in clear, never in a message or a log).
            created = {"user": user, "password": password, "generated": not post.get("password"), "project": project}
            response = render(request, "webapp/console_people.html", _people_context(request, created=created))
            add_never_cache_headers(response)
            return response
    context = _people_context(request, new=form, new_errors=_errors(problems))
    return render(request, "webapp/console_people.html", context, status=400)


@require_POST
def person_add(request: HtmxHttpRequest) -> HttpResponse:
    """Add an existing account (by username) to one of the user's projects."""
    _people_access(request)
    post = request.POST
    problems: list[tuple[str, str]] = []
    project = _managed_project(request, post.get("project", ""))
    quota = _quota(post.get("quota", ""), problems)
    username = post.get("username", "").strip()
    person = get_user_model().objects.filter(username=username).first() if username else None
    if person is None:
        problems.append(("username", f"no account {username!r}" if username else "required"))
    if not problems and person is not None:
        try:
            set_membership(project, person, role=post.get("role", ""), quota=quota)
        except ProjectError as exc:
            problems = exc.problems
        else:
            messages.success(request, f"{person.username} is now {post.get('role')} in {project.slug}.")
            return redirect("person", user_id=person.pk)
    form = {k: post.get(k, "") for k in ("username", "project", "role", "quota")}
    context = _people_context(request, add=form, add_errors=_errors(problems))
    return render(request, "webapp/console_people.html", context, status=400)


def _person_page(request: HttpRequest, person: Any, status: int = 200, **extra: Any) -> HttpResponse:
    managed = list(selectors.managed_projects(request.user))
    mine = {p.pk for p in managed}
    is_admin = selectors.is_console_admin(request.user)
    memberships = [m for m in person.memberships.all() if is_admin or m.project_id in mine]
    may_edit, why = selectors.may_edit_account(request.user, person)
    profile = AnnotatorProfile.objects.filter(user=person).first()
    context = {
        "person": person,
        "profile": profile,
        "memberships": memberships,
        "hidden_memberships": len(person.memberships.all()) - len(memberships),
        "managed": managed,
        "account_active": person.is_active and (profile is None or profile.active),
        "may_edit": may_edit,
        "why_not": why,
        "tiers": sch.TIERS,
        "roles": Membership.ROLES,
        "profile_form": {
            "tier": profile.tier if profile else AnnotatorProfile.NORMAL,
            "domains": ", ".join(profile.domains) if profile else "",
        },
        "profile_errors": {},
        "member_form": {"role": Membership.ANNOTATOR},
        "member_errors": {},
        **extra,
    }
    return render(request, "webapp/console_person.html", context, status=status)


def _person(request: HttpRequest, user_id: int) -> Any:
    _people_access(request)
    return selectors.person_for(request.user, user_id)


def _editable(request: HttpRequest, person: Any) -> None:
    allowed, why = selectors.may_edit_account(request.user, person)
    if not allowed:
        raise PermissionDenied(why)


@require_GET
def person(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    return _person_page(request, _person(request, user_id))


@require_POST
def person_profile(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    person = _person(request, user_id)
    _editable(request, person)
    form = {"tier": request.POST.get("tier", ""), "domains": request.POST.get("domains", "")}
    try:
        set_profile(person, tier=form["tier"], domains=parse_domains(form["domains"]))
    except PeopleError as exc:
        return _person_page(request, person, 400, profile_form=form, profile_errors=_errors(exc.problems))
    messages.success(request, f"{person.username}: {form['tier']} tier, domains saved.")
    return redirect("person", user_id=person.pk)


@require_POST
def person_active(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    person = _person(request, user_id)
    _editable(request, person)
    active = request.POST.get("active") == "1"
    set_active(person, active)
    said = "reactivated: they can log in and annotate" if active else "deactivated: no login, no work"
    messages.success(request, f"{person.username} {said}.")
    return redirect("person", user_id=person.pk)


@require_POST
def person_membership(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    """Add the person to one of the user's projects, or change their role and quota there."""
    person = _person(request, user_id)
    project = _managed_project(request, request.POST.get("project", ""))
    problems: list[tuple[str, str]] = []
    quota = _quota(request.POST.get("quota", ""), problems)
    role = request.POST.get("role", "")
    if not problems:
        try:
            set_membership(project, person, role=role, quota=quota)
        except ProjectError as exc:
            problems = exc.problems
        else:
            shown = "no quota" if quota is None else f"quota {quota}"
            messages.success(request, f"{person.username}: {role} in {project.slug}, {shown}.")
            return redirect("person", user_id=person.pk)
    form = {k: request.POST.get(k, "") for k in ("project", "role", "quota")}
    return _person_page(request, person, 400, member_form=form, member_errors=_errors(problems))


@require_POST
def person_membership_remove(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
    person = _person(request, user_id)
    project = _managed_project(request, request.POST.get("project", ""))
    try:
        remove_member(project, person)
    except ProjectError as exc:
        return _person_page(request, person, 400, member_errors=_errors(exc.problems))
    messages.success(request, f"{person.username} is no longer in {project.slug} (their annotations stay).")
    if person.pk == request.user.pk and not selectors.may_manage_people(request.user):
        return redirect("home")
    if selectors.people_for(request.user).filter(pk=person.pk).exists():
        return redirect("person", user_id=person.pk)
    return redirect("people")
