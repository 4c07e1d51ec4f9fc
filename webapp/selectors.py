"""Reads: what a user may see, with the queries each page needs."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404

from webapp.models import Assignment, HumanAnnotation, Item, Membership, Project


def projects_for_user(user: Any) -> QuerySet[Project]:
    projects = Project.objects.all()
    if not getattr(user, "is_superuser", False):
        projects = projects.filter(memberships__user=user)
    return projects.annotate(n_items=Count("items", distinct=True)).order_by("name")


def role_in_project(user: Any, project: Project) -> str | None:
    if getattr(user, "is_superuser", False):
        return Membership.MANAGER
    membership = Membership.objects.filter(project=project, user_id=user.pk).first()
    return membership.role if membership else None


def project_for_user(user: Any, slug: str) -> tuple[Project, str]:
    """The project and the user's role in it: 404 for no such project, 403 for a non-member (as the spec asks)."""
    project, role, _ = project_membership(user, slug)
    return project, role


def project_membership(user: Any, slug: str) -> tuple[Project, str, Membership | None]:
    """project_for_user, with the user's membership (None for a site admin who is not a member).

    One query for a member: the membership and its project together.
    """
    membership = Membership.objects.select_related("project").filter(project__slug=slug, user_id=user.pk).first()
    if membership is not None:
        role = Membership.MANAGER if getattr(user, "is_superuser", False) else membership.role
        return membership.project, role, membership
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise Http404("No such project")
    if not getattr(user, "is_superuser", False):
        raise PermissionDenied("You are not a member of this project.")
    return project, Membership.MANAGER, None


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


def annotator_progress(
    project: Project, user: Any, membership: Membership | Unknown | None = UNKNOWN
) -> dict[str, int | None]:
    """done / quota for the annotator in the project (quota: the membership's, else what the queue holds).

    `membership`: the user's in the project (None: not a member), where the caller has it already.
    """
    from webapp.services.queue import queue_size  # selectors stay importable without the queue's deps

    done = Assignment.objects.filter(item__project=project, annotator=user, status=Assignment.SUBMITTED).count()
    if isinstance(membership, Unknown):
        quota = Membership.objects.filter(project=project, user_id=user.pk).values_list("quota", flat=True).first()
    else:
        quota = membership.quota if membership is not None else None
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
