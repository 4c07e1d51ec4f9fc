"""Reads: what a user may see, with the queries each page needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Avg, Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from webapp.models import (
    AnnotatorProfile,
    Assignment,
    ExportSnapshot,
    HumanAnnotation,
    Item,
    Judge,
    JudgeRun,
    Judgment,
    Membership,
    Project,
    Response,
    RoutingRun,
)
from webapp.rawsql import fetch_models


def projects_for_user(user: Any) -> QuerySet[Project]:
    projects = Project.objects.all()
    if not getattr(user, "is_superuser", False):
        projects = projects.filter(memberships__user=user)
    return projects.annotate(n_items=Count("items", distinct=True)).order_by("name")


def project_for_user(user: Any, slug: str) -> tuple[Project, str]:
    """The project and the user's role in it: 404 for no such project, 403 for a non-member (as the spec asks)."""
    access = project_access(user, slug)
    return access.project, access.role


@dataclass(frozen=True)
class Access:
    """What project_access finds: the project, the user's role in it and the membership's quota."""

    project: Project
    role: str
    quota: int | None  # the membership's (None: no quota set, or no membership)
    # The user's annotator profile where asked for (with_profile) and the user has one.
    profile: AnnotatorProfile | None = None


_PROFILE_FIELDS = ("id", "tier", "domains", "active")


def project_access(user: Any, slug: str, *, with_profile: bool = False) -> Access:
    """project_for_user's answer, with the membership's quota: the project and the membership in one query.

    with_profile: the user's AnnotatorProfile too (for the annotation queue), in the same query.
    """
    project_table, membership_table, profile_table = (
        connection.ops.quote_name(m._meta.db_table) for m in (Project, Membership, AnnotatorProfile)
    )
    columns = "".join(f", ap.{connection.ops.quote_name(f)} AS profile_{f}" for f in _PROFILE_FIELDS)
    profile_join = f" LEFT JOIN {profile_table} ap ON ap.user_id = %s" if with_profile else ""
    sql = (
        f"SELECT p.*, m.id AS member_id, m.role AS member_role, m.quota AS member_quota"  # noqa: S608
        f"{columns if with_profile else ''} FROM {project_table} p"
        f" LEFT JOIN {membership_table} m ON m.project_id = p.id AND m.user_id = %s{profile_join} WHERE p.slug = %s"
    )
    params = [user.pk, user.pk, slug] if with_profile else [user.pk, slug]
    project = next(iter(fetch_models(Project, sql, params)), None)
    if project is None:
        raise Http404("No such project")
    quota: int | None = getattr(project, "member_quota", None)
    profile = _profile_from(project, user) if with_profile else None
    if getattr(user, "is_superuser", False):
        return Access(project, Membership.MANAGER, quota, profile)
    if getattr(project, "member_id", None) is None:
        raise PermissionDenied("You are not a member of this project.")
    return Access(project, project.member_role, quota, profile)  # type: ignore[attr-defined]


def _profile_from(row: Any, user: Any) -> AnnotatorProfile | None:
    """The AnnotatorProfile in project_access's row (its profile_* columns), or None where the user has none."""
    if getattr(row, "profile_id", None) is None:
        return None
    # A raw query's extra columns come as the database gives them: JSON as text.
    domains = row.profile_domains
    if isinstance(domains, str):
        domains = json.loads(domains)
    return AnnotatorProfile.from_db(
        connection.alias,
        ["id", "user_id", "tier", "domains", "active"],
        [row.profile_id, user.pk, row.profile_tier, domains, row.profile_active],
    )


def project_items(project: Project, query: str = "", route: str = "") -> QuerySet[Item]:
    items = project.items.annotate(
        n_human=Count("human_annotations", distinct=True), n_judgments=Count("judgments", distinct=True)
    )
    if query:
        items = items.filter(Q(external_id__icontains=query) | Q(prompt__icontains=query))
    if route in Item.ROUTES:
        items = items.filter(route=route)
    return items.order_by("id")


def item_for_project(project: Project, item_id: int) -> Item:
    item = (
        Item.objects.filter(project=project, pk=item_id)
        .prefetch_related("responses", "human_annotations__annotator", "judgments__judge")
        .first()
    )
    if item is None:
        raise Http404("No such item")
    return item


class Unknown:
    """Not looked up yet."""


UNKNOWN = Unknown()


# The annotator's submitted assignments in a project (parameters: user, status, project).
_DONE = """(SELECT count(*) FROM {assignment} a JOIN {item} i ON i.id = a.item_id
    WHERE a.annotator_id = %s AND a.status = %s AND i.project_id = %s)"""


def _done(project: Project, user: Any) -> int:
    tables = {m.__name__.lower(): connection.ops.quote_name(m._meta.db_table) for m in (Assignment, Item)}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_DONE.format(**tables)}", [user.pk, Assignment.SUBMITTED, project.pk])
        return int(cursor.fetchone()[0])


def annotator_progress(
    project: Project, user: Any, quota: int | Unknown | None = UNKNOWN, done: int | None = None
) -> dict[str, int | None]:
    """done / quota for the annotator in the project (quota: the membership's, else what the queue holds).

    `quota`: the membership's, where the caller has it already (see project_access); `done` likewise
    (see item_for_annotation).
    """
    from webapp.services.queue import queue_size  # selectors stay importable without the queue's deps

    if done is None:
        done = _done(project, user)
    if isinstance(quota, Unknown):
        quota = Membership.objects.filter(project=project, user_id=user.pk).values_list("quota", flat=True).first()
    if quota is None:
        quota = queue_size(project)
    return {"done": done, "quota": quota}


# The columns that item_for_annotation adds to an item row `i` (named parameters: done_user, done_status,
# done_project): the annotator's done count and the item's responses as JSON. queue.try_claim_next's
# statement returns them with the item it claims (PostgreSQL).
WORKSPACE_COLUMNS = """(SELECT count(*) FROM {assignment} a JOIN {item} di ON di.id = a.item_id
    WHERE a.annotator_id = %(done_user)s AND a.status = %(done_status)s
    AND di.project_id = %(done_project)s) AS hp_done,
    (SELECT json_agg(json_build_object('id', r.id, 'position', r.position, 'model_name', r.model_name, 'text', r.text)
    ORDER BY r.position) FROM {response} r WHERE r.item_id = i.id) AS hp_responses"""


def workspace_columns(user: Any, project: Project) -> tuple[str, dict[str, Any]]:
    """WORKSPACE_COLUMNS with the table names, and its parameters."""
    tables = {m.__name__.lower(): connection.ops.quote_name(m._meta.db_table) for m in (Assignment, Item, Response)}
    params = {"done_user": user.pk, "done_status": Assignment.SUBMITTED, "done_project": project.pk}
    return WORKSPACE_COLUMNS.format(**tables), params


def workspace_from_row(item: Item) -> tuple[Item, list[Response], int]:
    """item_for_annotation's answer from an item read with WORKSPACE_COLUMNS."""
    rows = item.hp_responses or []  # type: ignore[attr-defined]
    if isinstance(rows, str | bytes):
        rows = json.loads(rows)
    responses = [Response.from_db(connection.alias, list(row), list(row.values())) for row in rows]
    for response in responses:
        Response.item.field.set_cached_value(response, item)
    return item, responses, int(item.hp_done)  # type: ignore[attr-defined]


def item_for_annotation(item_id: int, user: Any, project: Project) -> tuple[Item, list[Response], int]:
    """The item to annotate, its responses (by position) and the annotator's done count in the project.

    On PostgreSQL in one query (the responses as JSON), elsewhere in two.
    """
    if connection.vendor != "postgresql":
        responses = list(Response.objects.filter(item_id=item_id).select_related("item"))
        item = responses[0].item if responses else Item.objects.get(pk=item_id)
        return item, responses, _done(project, user)
    columns, params = workspace_columns(user, project)
    sql = f"SELECT i.*, {columns} FROM {connection.ops.quote_name(Item._meta.db_table)} i WHERE i.id = %(item)s"  # noqa: S608
    return workspace_from_row(fetch_models(Item, sql, {**params, "item": item_id})[0])


def recent_annotations(user: Any, limit: int = 20) -> QuerySet[HumanAnnotation]:
    return (
        HumanAnnotation.objects.filter(annotator=user)
        .select_related("item__project")
        .annotate(n_revisions=Count("revisions"))
        .order_by("-updated_at")[:limit]
    )


def own_annotation(user: Any, annotation_id: int) -> HumanAnnotation:
    annotation = (
        HumanAnnotation.objects.select_related("item__project", "assignment")
        .filter(pk=annotation_id, annotator=user)
        .first()
    )
    if annotation is None:
        raise Http404("No such annotation")
    return annotation


@dataclass(frozen=True)
class RunProgress:
    """A judge run's state for the progress bar and the run page. Units: item x order (a jury: items)."""

    total: int
    done: int
    failed: int
    remaining: int
    eta_s: float | None
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    mean_latency_ms: float | None
    # Items whose verdict changed with the response order (MT-Bench: counted as ties).
    inconsistent: int

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def percent(self) -> int:
        return int(100 * self.finished / self.total) if self.total else 100


def run_progress(run: JudgeRun) -> RunProgress:
    rows = Judgment.objects.filter(run=run)
    jury = run.judge.backend == Judge.JURY
    units = (
        rows.filter(judge_id=run.judge_id, order=Judgment.COMBINED)
        if jury
        else rows.filter(judge_id=run.judge_id).exclude(order=Judgment.COMBINED)
    )
    counts = dict(units.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    done, failed, pending = (counts.get(s, 0) for s in (Judgment.DONE, Judgment.FAILED, Judgment.PENDING))
    # Cost and tokens: every call the run made (a jury's members' too), not the merged rows.
    usage = rows.exclude(order=Judgment.COMBINED).aggregate(
        pt=Sum("prompt_tokens"), ct=Sum("completion_tokens"), cost=Sum("cost"), latency=Avg("latency_ms")
    )
    inconsistent = rows.filter(judge_id=run.judge_id, order=Judgment.COMBINED, order_inconsistent=True).count()
    eta = None
    finished = done + failed
    if run.started_at and finished and pending and run.status == JudgeRun.RUNNING:
        elapsed = (timezone.now() - run.started_at).total_seconds()
        eta = elapsed / finished * pending
    return RunProgress(
        total=done + failed + pending,
        done=done,
        failed=failed,
        remaining=pending,
        eta_s=eta,
        prompt_tokens=usage["pt"] or 0,
        completion_tokens=usage["ct"] or 0,
        cost=usage["cost"] or Decimal(0),
        mean_latency_ms=usage["latency"],
        inconsistent=inconsistent,
    )


def project_runs(project: Project) -> QuerySet[JudgeRun]:
    return JudgeRun.objects.filter(project=project).select_related("judge", "created_by").order_by("-created_at")


def run_for_project(project: Project, run_id: int) -> JudgeRun:
    run = JudgeRun.objects.select_related("judge").filter(project=project, pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    return run


def manager_project(user: Any, slug: str, why: str) -> Project:
    """The project, for one of its managers; 404 for no such project, 403 (saying `why`) for anyone else."""
    project, role = project_for_user(user, slug)
    if role != Membership.MANAGER:
        raise PermissionDenied(why)
    return project


# --- the HTTP API's reads -------------------------------------------------------------------------


def api_projects(user: Any) -> QuerySet[Project]:
    """The projects the user may see, by slug, each with n_items and member_role: the user's role in it as
    project_access has it (a superuser sees every project, as a manager)."""
    n_items = Item.objects.filter(project=OuterRef("pk")).order_by().values("project").annotate(n=Count("id"))
    projects = Project.objects.annotate(n_items=Coalesce(Subquery(n_items.values("n")), 0))
    if getattr(user, "is_superuser", False):
        return projects.annotate(member_role=Value(Membership.MANAGER)).order_by("slug")
    memberships = Membership.objects.filter(project=OuterRef("pk"), user_id=user.pk)
    return (
        projects.filter(Exists(memberships))
        .annotate(member_role=Subquery(memberships.values("role")[:1]))
        .order_by("slug")
    )


def project_counts(project: Project) -> dict[str, Any]:
    """What the project holds: items (by route and by status), human annotations, judgments, runs, exports."""
    by_route = dict(project.items.order_by().values_list("route").annotate(n=Count("id")).values_list("route", "n"))
    by_status = dict(project.items.order_by().values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {
        "items": sum(by_route.values()),
        "items_by_route": {route: by_route.get(route, 0) for route in Item.ROUTES},
        "items_by_status": {status: by_status.get(status, 0) for status in Item.STATUSES},
        "human_annotations": HumanAnnotation.objects.filter(item__project=project).count(),
        "judgments": Judgment.objects.filter(item__project=project).count(),
        "routing_runs": project.routing_runs.count(),
        "exports": project.exports.count(),
    }


def api_items(project: Project, *, route: str | None = None, status: str | None = None) -> QuerySet[Item]:
    """The project's items by id, with their counts of human annotations and judgments (page rows only)."""
    items = project.items.all()
    if route:
        items = items.filter(route=route)
    if status:
        items = items.filter(status=status)
    n_human = HumanAnnotation.objects.filter(item=OuterRef("pk")).order_by().values("item").annotate(n=Count("id"))
    n_judgments = Judgment.objects.filter(item=OuterRef("pk")).order_by().values("item").annotate(n=Count("id"))
    return items.annotate(
        n_human=Coalesce(Subquery(n_human.values("n")), 0),
        n_judgments=Coalesce(Subquery(n_judgments.values("n")), 0),
    ).order_by("id")


def api_item(project: Project, item_id: int) -> Item:
    """One of the project's items with its responses (by position); 404 for any other."""
    item = api_items(project).filter(pk=item_id).prefetch_related("responses").first()
    if item is None:
        raise Http404("No such item")
    return item


# What annotation and judgment rows leave out of their item (only its id and external id are shown).
_ITEM_BULK = ("item__prompt", "item__conversation", "item__metadata", "item__features", "item__route_reason")


def project_annotations(
    project: Project, *, item: str | None = None, tier: str | None = None
) -> QuerySet[HumanAnnotation]:
    """The human annotations on the project's items, by id; `item` is an item's external id."""
    annotations = HumanAnnotation.objects.filter(item__project=project)
    if item:
        annotations = annotations.filter(item__external_id=item)
    if tier:
        annotations = annotations.filter(tier=tier)
    return annotations.select_related("item", "annotator").defer(*_ITEM_BULK).order_by("id")


def project_judgments(
    project: Project, *, judge: str | None = None, status: str | None = None, order: str | None = None
) -> QuerySet[Judgment]:
    """The judgments on the project's items, by id; `judge` is a judge's name, `order` one like "0-1" or "combined"."""
    judgments = Judgment.objects.filter(item__project=project)
    if judge:
        judgments = judgments.filter(judge__name=judge)
    if status:
        judgments = judgments.filter(status=status)
    if order:
        judgments = judgments.filter(order=order)
    return judgments.select_related("item", "judge").defer("raw_output", *_ITEM_BULK).order_by("id")


def project_routing_runs(project: Project) -> QuerySet[RoutingRun]:
    return RoutingRun.objects.filter(project=project).select_related("created_by").order_by("-created_at", "-id")


def routing_run_for_project(project: Project, run_id: int) -> RoutingRun:
    run = project_routing_runs(project).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such routing run")
    return run


def project_exports(project: Project) -> QuerySet[ExportSnapshot]:
    return ExportSnapshot.objects.filter(project=project).order_by("-version")


def may_create_projects(user: Any) -> bool:
    """Whoever may add a project in the admin site: a superuser, or staff with the add_project permission."""
    return bool(getattr(user, "is_superuser", False)) or (
        bool(getattr(user, "is_staff", False)) and user.has_perm("webapp.add_project")
    )


# --- the manager console's reads (views_console.py) ---------------------------------------------------
# Imports local to these functions: the module's import block is shared by several features.


def is_console_admin(user: Any) -> bool:
    """An admin of the manager console: a superuser or staff member (every project, every person)."""
    return bool(getattr(user, "is_superuser", False) or getattr(user, "is_staff", False))


def managed_projects(user: Any) -> QuerySet[Project]:
    """The projects whose settings, data and people the user manages: an admin's all, a manager's own."""
    projects = Project.objects.all()
    if not is_console_admin(user):
        projects = projects.filter(memberships__user_id=user.pk, memberships__role=Membership.MANAGER)
    return projects.order_by("name", "slug")


def console_project(user: Any, slug: str, why: str) -> Project:
    """The project, for one of its managers or an admin; 404 for no such project, 403 (saying `why`) for anyone else."""
    if is_console_admin(user):
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise Http404("No such project")
        return project
    return manager_project(user, slug, why)


def may_manage_people(user: Any) -> bool:
    """Whoever may open the people pages: an admin, or the manager of at least one project."""
    return is_console_admin(user) or Membership.objects.filter(user_id=user.pk, role=Membership.MANAGER).exists()


def people_for(user: Any, query: str = "", project: Project | None = None) -> QuerySet[Any]:
    """The accounts the user may manage (an admin: all; a manager: their projects' members), by username.

    Each with its annotator profile and its memberships (with their projects) prefetched.
    """
    from django.contrib.auth import get_user_model
    from django.db.models import Prefetch

    people = get_user_model().objects.all()
    if not is_console_admin(user):
        managed = Membership.objects.filter(user_id=user.pk, role=Membership.MANAGER).values("project_id")
        people = people.filter(Exists(Membership.objects.filter(user_id=OuterRef("pk"), project_id__in=managed)))
    if project is not None:
        people = people.filter(Exists(Membership.objects.filter(user_id=OuterRef("pk"), project=project)))
    if query:
        people = people.filter(Q(username__icontains=query) | Q(email__icontains=query))
    memberships = Membership.objects.select_related("project").order_by("project__name", "project__slug")
    return (
        people.select_related("annotator_profile")
        .prefetch_related(Prefetch("memberships", queryset=memberships))
        .order_by("username")
    )


def person_for(user: Any, person_id: int) -> Any:
    """One account the user may manage (see people_for); 404 for any other, so that a manager learns nothing."""
    person = people_for(user).filter(pk=person_id).first()
    if person is None:
        raise Http404("No such person")
    return person


def may_edit_account(actor: Any, person: Any) -> tuple[bool, str]:
    """Whether the actor may change the person's account (active, tier, domains), and if not, why.

    An admin may, except on their own account and (staff) on a superuser's. A manager may only where the
    person is neither admin nor manager anywhere and every project of theirs is one the actor manages: an
    account is shared by all its projects, and pausing it pauses it everywhere.
    """
    if actor.pk == person.pk:
        return False, "This is your own account."
    if person.is_superuser and not actor.is_superuser:
        return False, "Only a superuser changes a superuser's account."
    if is_console_admin(actor):
        return True, ""
    if person.is_staff or person.is_superuser:
        return False, "Only an admin changes an admin's account."
    roles = {(m.project_id, m.role) for m in Membership.objects.filter(user_id=person.pk)}
    if any(role == Membership.MANAGER for _, role in roles):
        return False, "Only an admin changes the account of a project manager."
    mine = set(
        Membership.objects.filter(user_id=actor.pk, role=Membership.MANAGER).values_list("project_id", flat=True)
    )
    if any(project_id not in mine for project_id, _ in roles):
        return False, "They also work in projects you do not manage: only an admin changes their account."
    return True, ""


def project_import_jobs(project: Project, limit: int = 10) -> list[Any]:
    """The project's latest file imports (ImportJob), newest first."""
    from webapp.models import ImportJob

    return list(ImportJob.objects.filter(project=project).select_related("created_by").order_by("-created_at")[:limit])


def sample_item(project: Project) -> tuple[Item, list[Response]] | None:
    """The project's first item with its responses (by position), or None for a project without items."""
    item = project.items.order_by("id").first()
    if item is None:
        return None
    return item, list(item.responses.order_by("position"))
