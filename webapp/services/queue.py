"""The work queue: claim the next item for an annotator, atomically, with a lease.

On PostgreSQL the candidate item row is locked with `SELECT ... FOR UPDATE SKIP LOCKED`, so
concurrent annotators never wait on each other and never over-fill an item: the free slots of the
locked item are counted again after the lock (a fresh statement sees every committed claim). Only
when every item left is locked by other claims does a claim wait, briefly, for one of them. On
SQLite (the embedded demo) transactions are serialized, which gives the same guarantee.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp.models import AnnotatorProfile, Assignment, Item, Project

LEASE = timedelta(minutes=30)
_CANDIDATES = 5  # rows locked per claim: enough to step over a few just-filled items
_ATTEMPTS = 100


class QueueClosed(Exception):
    """The annotator may not take work here (closed project, inactive account, overlap 0)."""


def lease_duration() -> timedelta:
    minutes = getattr(settings, "ANNOTATION_LEASE_MINUTES", None)
    return timedelta(minutes=minutes) if minutes else LEASE


def display_order(item_id: int, annotator_id: int, n: int) -> list[int]:
    """A random permutation, seeded by item and annotator so that it can be re-derived."""
    order = list(range(n))
    random.Random(f"{item_id}:{annotator_id}").shuffle(order)  # noqa: S311 (not for security)
    return order


def overlap_for(project: Project, tier: str) -> int:
    return project.overlap_expert if tier == AnnotatorProfile.EXPERT else project.overlap_normal


def live_slots(now: Any) -> Q:
    """Assignments that hold a slot: submitted, or leased and not yet expired."""
    return Q(status=Assignment.SUBMITTED) | Q(status=Assignment.LEASED, lease_expires_at__gt=now)


def queue_items(project: Project) -> QuerySet[Item]:
    """Items that enter the human queue: routed to humans, or every item while the project is unrouted."""
    items = project.items.all()
    if items.filter(route=Item.HUMAN).exists():
        return items.filter(route=Item.HUMAN)
    return items.exclude(route=Item.AI)


def _profile(user: Any) -> AnnotatorProfile:
    profile, _ = AnnotatorProfile.objects.get_or_create(user=user)
    return profile


def claim_next(project: Project, user: Any) -> Assignment | None:
    """The annotator's current assignment in the project, or a newly claimed one; None when nothing is left."""
    profile = _profile(user)
    if project.state != Project.ACTIVE or not profile.active or not user.is_active:
        raise QueueClosed("This project is not open for annotation." if profile.active else "Your account is paused.")
    tier = profile.tier
    overlap = overlap_for(project, tier)
    if overlap == 0:
        raise QueueClosed(f"This project needs no {tier} annotations.")
    now = timezone.now()

    with transaction.atomic():
        mine = (
            Assignment.objects.select_for_update()
            .filter(item__project=project, annotator=user, status=Assignment.LEASED)
            .order_by("created_at")
            .first()
        )
        if mine is not None:
            if mine.lease_expires_at > now or _free_slots(mine.item_id, tier, overlap, now, exclude=mine.pk) > 0:
                mine.lease_expires_at = now + lease_duration()
                mine.save(update_fields=["lease_expires_at", "updated_at"])
                return mine
            mine.status = Assignment.EXPIRED
            mine.save(update_fields=["status", "updated_at"])

    slots = (
        Assignment.objects.filter(item=OuterRef("pk"), tier=tier)
        .filter(live_slots(now))
        .values("item")
        .annotate(n=Count("pk"))
        .values("n")
    )
    candidates = (
        queue_items(project)
        .annotate(taken=Coalesce(Subquery(slots, output_field=IntegerField()), Value(0)))
        .filter(taken__lt=overlap)
        .exclude(Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator=user)))
    )
    if tier == AnnotatorProfile.EXPERT and profile.domains:
        # Experts first get prompts from their own subjects, as MultiPref routed them.
        domain_match = Q()
        for key in ("subject", "subject_study", "category"):
            domain_match |= Q(**{f"metadata__{key}__in": profile.domains})
        candidates = candidates.alias(match=Exists(Item.objects.filter(pk=OuterRef("pk")).filter(domain_match)))
        candidates = candidates.order_by(F("match").desc(), "taken", "id")
    else:
        # Items already started first, so that labelled items get complete sooner.
        candidates = candidates.order_by(F("taken").desc(), "id")

    # A failed attempt means another claim filled an item meanwhile, so this ends; the bound is a safety net.
    for _ in range(_ATTEMPTS):
        with transaction.atomic():
            locked = list(
                candidates.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:_CANDIDATES]
            )
            if not locked:
                # SKIP LOCKED also passes over items that other claims (or submits) hold for a moment:
                # wait for one of those instead of answering "nothing left" while it still has free slots.
                locked = list(candidates.select_for_update(of=("self",)).values_list("pk", flat=True)[:1])
            if not locked:
                return None
            for item_id in locked:
                if _free_slots(item_id, tier, overlap, now) <= 0:
                    continue  # filled by a claim that committed after our snapshot
                n = Item.objects.filter(pk=item_id).values_list("responses__position", flat=True).count()
                assignment = Assignment.objects.create(
                    item_id=item_id,
                    annotator=user,
                    tier=tier,
                    display_order=display_order(item_id, user.pk, n),
                    lease_expires_at=now + lease_duration(),
                )
                Item.objects.filter(pk=item_id, status=Item.PENDING).update(status=Item.IN_PROGRESS)
                return assignment
    return None


def _free_slots(item_id: int, tier: str, overlap: int, now: Any, exclude: int | None = None) -> int:
    taken = Assignment.objects.filter(item_id=item_id, tier=tier).filter(live_slots(now))
    if exclude is not None:
        taken = taken.exclude(pk=exclude)
    return overlap - taken.count()


def slot_still_free(assignment: Assignment, project: Project) -> bool:
    """For a submit after the lease expired: is the slot still there for this annotator?"""
    return (
        _free_slots(
            assignment.item_id,
            assignment.tier,
            overlap_for(project, assignment.tier),
            timezone.now(),
            exclude=assignment.pk,
        )
        > 0
    )
