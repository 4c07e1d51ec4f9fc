"""Writes for projects and memberships."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from webapp import scheme as sch
from webapp.models import Membership, Project


class ProjectError(ValueError):
    pass


def create_project(
    *,
    slug: str,
    name: str = "",
    kind: str = sch.PAIRWISE,
    scale: str = sch.LIKERT5,
    aspects: list[str] | None = None,
    reasons: dict[str, list[str]] | None = None,
    rating_attributes: list[str] | None = None,
    guidelines: str = "",
    state: str = Project.ACTIVE,
    **options: Any,
) -> Project:
    """Create a project after checking its scheme; raises ProjectError naming each bad field."""
    aspects = list(aspects) if aspects is not None else list(sch.DEFAULT_ASPECTS)  # [] is an error, not "default"
    problems = sch.validate_scheme_config(
        kind=kind, scale=scale, aspects=aspects, reasons=reasons or {}, rating_attributes=rating_attributes or []
    )
    if slugify(slug) != slug or not slug:
        problems.append(("slug", f"{slug!r} is not a slug (lowercase letters, digits, '-' and '_')"))
    if state not in Project.STATES:
        problems.append(("state", f"{state!r} is not one of {', '.join(Project.STATES)}"))
    if "cost_per_human_annotation" in options:
        try:
            options["cost_per_human_annotation"] = Decimal(str(options["cost_per_human_annotation"]))
        except InvalidOperation:
            problems.append(("cost_per_human_annotation", "not a number"))
    for key in ("overlap_normal", "overlap_expert", "human_budget", "justification_min_length"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            problems.append((key, "must be a non-negative integer"))
    if problems:
        raise ProjectError("; ".join(f"{f}: {m}" for f, m in problems))
    try:
        with transaction.atomic():
            return Project.objects.create(
                slug=slug,
                name=name or slug,
                kind=kind,
                scale=scale,
                aspects=aspects,
                reasons=reasons or {},
                rating_attributes=rating_attributes or [],
                guidelines=guidelines,
                state=state,
                **options,
            )
    except IntegrityError as exc:
        if Project.objects.filter(slug=slug).exists():
            raise ProjectError(f"slug: a project {slug!r} already exists") from None
        raise ProjectError(str(exc)) from None


def add_member(project: Project, user: Any, role: str) -> Membership:
    if role not in Membership.ROLES:
        raise ProjectError(f"role: {role!r} is not one of {', '.join(Membership.ROLES)}")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership
