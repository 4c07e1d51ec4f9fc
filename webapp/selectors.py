"""Reads: what a user may see, with the queries each page needs."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from webapp.models import Assignment, HumanAnnotation, Item, Judge, JudgeRun, Judgment, Membership, Project


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


def project_access(user: Any, slug: str) -> Access:
    """project_for_user's answer, with the membership's quota: the project and the membership in one query."""
    project_table, membership_table = (connection.ops.quote_name(m._meta.db_table) for m in (Project, Membership))
    sql = (
        f"SELECT p.*, m.id AS member_id, m.role AS member_role, m.quota AS member_quota FROM {project_table} p"  # noqa: S608
        f" LEFT JOIN {membership_table} m ON m.project_id = p.id AND m.user_id = %s WHERE p.slug = %s"
    )
    project = next(iter(Project.objects.raw(sql, [user.pk, slug])), None)
    if project is None:
        raise Http404("No such project")
    quota: int | None = getattr(project, "member_quota", None)
    if getattr(user, "is_superuser", False):
        return Access(project, Membership.MANAGER, quota)
    if getattr(project, "member_id", None) is None:
        raise PermissionDenied("You are not a member of this project.")
    return Access(project, project.member_role, quota)  # type: ignore[attr-defined]


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


def annotator_progress(project: Project, user: Any, quota: int | Unknown | None = UNKNOWN) -> dict[str, int | None]:
    """done / quota for the annotator in the project (quota: the membership's, else what the queue holds).

    `quota`: the membership's, where the caller has it already (see project_access).
    """
    from webapp.services.queue import queue_size  # selectors stay importable without the queue's deps

    assignment_table, item_table = (connection.ops.quote_name(m._meta.db_table) for m in (Assignment, Item))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {assignment_table} a JOIN {item_table} i ON i.id = a.item_id"  # noqa: S608
            " WHERE a.annotator_id = %s AND a.status = %s AND i.project_id = %s",
            [user.pk, Assignment.SUBMITTED, project.pk],
        )
        done = cursor.fetchone()[0]
    if isinstance(quota, Unknown):
        quota = Membership.objects.filter(project=project, user_id=user.pk).values_list("quota", flat=True).first()
    if quota is None:
        quota = queue_size(project)
    return {"done": done, "quota": quota}


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
