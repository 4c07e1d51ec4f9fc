"""Reads: what a user may see, with the queries each page needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from webapp.models import Assignment, HumanAnnotation, Item, Membership, Project


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
