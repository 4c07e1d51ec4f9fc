"""The work queue: claim the next item for an annotator, atomically, with a lease.

On PostgreSQL the candidate item row is locked with `SELECT ... FOR UPDATE SKIP LOCKED`, so
concurrent annotators never wait on each other and never over-fill an item: the free slots of the
locked item are counted again after the lock (a fresh statement sees every committed claim). Only
when every item left is locked by other claims does a claim wait, briefly, for one of them. On
SQLite (the embedded demo) transactions are serialized, which gives the same guarantee.

Finding the candidates costs a few index probes, not a pass over the project: the item's status is
the queue's index (`item_queue_idx`: project, route, status, id). A claim first looks among the
items already started (status in_progress), most-filled first, then among the items with no live
slot taken, by id: the started ones and the first pending ones (claim_next sets in_progress on an
item together with its first assignment, so a pending item has none). Complete items are left out.
Only when that finds nothing to lock does the claim fall back to the full query over every item of
the queue, which is what decides "nothing left": so an item that is marked complete but has a free
slot again (the project's overlap raised since) is still handed out, after the others.
"""

from __future__ import annotations

import functools
import random
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp.models import AnnotatorProfile, Assignment, Item, Project, Response

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


def queue_routes(project: Project) -> tuple[str, ...]:
    """The routes of the items in the human queue: human once any item is routed to humans, else all but AI."""
    table = connection.ops.quote_name(Item._meta.db_table)
    with connection.cursor() as cursor:
        sql = f"SELECT 1 FROM {table} WHERE project_id = %s AND route = %s LIMIT 1"  # noqa: S608
        cursor.execute(sql, [project.pk, Item.HUMAN])
        if cursor.fetchone() is not None:
            return (Item.HUMAN,)
    return (Item.UNROUTED, Item.HUMAN)


def queue_items(project: Project, routes: tuple[str, ...] | None = None) -> QuerySet[Item]:
    """Items that enter the human queue: routed to humans, or every item while the project is unrouted."""
    # route IN (...) rather than route <> 'ai' (the same rows: route is one of three), so that
    # the queue index serves it.
    return project.items.filter(route__in=routes or queue_routes(project))


QUEUE_SIZE_SECONDS = 10.0
_queue_sizes: dict[int, tuple[float, int]] = {}


def queue_size(project: Project) -> int:
    """How many items the project's queue holds: counted at most every QUEUE_SIZE_SECONDS per process.

    It changes only with imports and routing, and counting 100,000 items on every page would cost more
    than the rest of the page.
    """
    now = time.monotonic()
    cached = _queue_sizes.get(project.pk)
    if cached is not None and cached[0] > now:
        return cached[1]
    size = queue_items(project).count()
    _queue_sizes[project.pk] = (now + QUEUE_SIZE_SECONDS, size)
    return size


def for_update(clause: str = "FOR UPDATE") -> str:
    """The row-lock clause for raw SQL; SQLite (the embedded demo) has none and serializes writers instead."""
    return f" {clause}" if connection.features.has_select_for_update else ""


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


def _profile(user: Any) -> AnnotatorProfile:
    sql = f"SELECT * FROM {_table(AnnotatorProfile)} WHERE user_id = %s"  # noqa: S608
    profile = next(iter(AnnotatorProfile.objects.raw(sql, [user.pk])), None)
    if profile is None:
        profile, _ = AnnotatorProfile.objects.get_or_create(user=user)
    return profile


def _my_lease(project: Project, user: Any) -> Assignment | None:
    """The annotator's oldest leased assignment in the project, locked (with its item row)."""
    lock = for_update()
    sql = (
        f"SELECT a.* FROM {_table(Assignment)} a JOIN {_table(Item)} i ON i.id = a.item_id"  # noqa: S608
        f" WHERE i.project_id = %s AND a.annotator_id = %s AND a.status = %s ORDER BY a.created_at LIMIT 1{lock}"
    )
    return next(iter(Assignment.objects.raw(sql, [project.pk, user.pk, Assignment.LEASED])), None)


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
    claim = _Claim(project, user, profile, overlap, now)

    with transaction.atomic():
        mine = _my_lease(project, user)
        if mine is None:
            # Nothing locked so far, so the first attempt can go on in this transaction.
            done, assignment = claim.attempt()
            if done:
                return assignment
        elif mine.lease_expires_at > now or _free_slots(mine.item_id, tier, overlap, now, exclude=mine.pk) > 0:
            mine.lease_expires_at = now + lease_duration()
            mine.save(update_fields=["lease_expires_at", "updated_at"])
            return mine
        else:
            mine.status = Assignment.EXPIRED
            mine.save(update_fields=["status", "updated_at"])

    # A failed attempt means another claim filled an item meanwhile, so this ends; the bound is a safety net.
    for _ in range(_ATTEMPTS):
        with transaction.atomic():
            done, assignment = claim.attempt()
            if done:
                return assignment
    return None


class _Claim:
    """The search for a new item: one attempt per transaction, tried again while claims race for the items."""

    def __init__(self, project: Project, user: Any, profile: AnnotatorProfile, overlap: int, now: Any) -> None:
        self.project, self.user, self.profile, self.overlap, self.now = project, user, profile, overlap, now
        self.tier = profile.tier
        self.by_domain = self.tier == AnnotatorProfile.EXPERT and bool(profile.domains)
        self.by_status = connection.vendor == "postgresql" and not self.by_domain

    @functools.cached_property
    def routes(self) -> tuple[str, ...]:
        return queue_routes(self.project)

    @functools.cached_property
    def candidates(self) -> QuerySet[Item]:
        """Every item of the queue with a free slot for the annotator, in the order they are handed out."""
        candidates = _open(queue_items(self.project, self.routes), self.user, self.tier, self.overlap, self.now)
        if self.by_domain:
            # Experts first get prompts from their own subjects, as MultiPref routed them.
            domain_match = Q()
            for key in ("subject", "subject_study", "category"):
                domain_match |= Q(**{f"metadata__{key}__in": self.profile.domains})
            candidates = candidates.alias(match=Exists(Item.objects.filter(pk=OuterRef("pk")).filter(domain_match)))
            return candidates.order_by(F("match").desc(), F("taken").asc(), "id")
        # Items already started first, so that labelled items get complete sooner.
        return candidates.order_by(F("taken").desc(), "id")

    def attempt(self) -> tuple[bool, Assignment | None]:
        """In a transaction: (True, the new assignment or None for nothing left), or (False, None) to try again."""
        tier, overlap, now = self.tier, self.overlap, self.now
        # (item id, its status where known)
        locked: list[tuple[int, str | None]] = []
        if self.by_status:
            locked = list(_lock_by_status(self.project, self.routes, self.user, tier, overlap, now))
        if not locked:
            pks = self.candidates.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)
            locked = [(pk, None) for pk in pks[:_CANDIDATES]]
        if not locked:
            # SKIP LOCKED also passes over items that other claims (or submits) hold for a moment:
            # wait for one of those instead of answering "nothing left" while it still has free slots.
            pks = self.candidates.select_for_update(of=("self",)).values_list("pk", flat=True)
            locked = [(pk, None) for pk in pks[:1]]
        if not locked:
            return True, None
        for item_id, status in locked:
            free, n = _recount(item_id, tier, overlap, now)
            if free <= 0:
                continue  # filled by a claim that committed after our snapshot
            assignment = Assignment.objects.create(
                item_id=item_id,
                annotator=self.user,
                tier=tier,
                display_order=display_order(item_id, self.user.pk, n),
                lease_expires_at=now + lease_duration(),
            )
            if status in (None, Item.PENDING):  # the status read with the lock held is current
                Item.objects.filter(pk=item_id, status=Item.PENDING).update(status=Item.IN_PROGRESS)
            return True, assignment
        return False, None


def _open(items: QuerySet[Item], user: Any, tier: str, overlap: int, now: Any) -> QuerySet[Item]:
    """The items with a free slot in the tier that the annotator has never had, annotated with `taken`."""
    slots = (
        Assignment.objects.filter(item=OuterRef("pk"), tier=tier)
        .filter(live_slots(now))
        .values("item")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        items.annotate(taken=Coalesce(Subquery(slots, output_field=IntegerField()), Value(0)))
        .filter(taken__lt=overlap)
        .exclude(Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator=user)))
    )


_TAKEN = """(SELECT count(*) FROM {assignment} a WHERE a.item_id = i.id AND a.tier = %(tier)s
    AND (a.status = %(submitted)s OR (a.status = %(leased)s AND a.lease_expires_at > %(now)s)))"""
_CANDIDATE = """SELECT i.id, i.status, t.taken FROM {item} i CROSS JOIN LATERAL (SELECT {taken} AS taken) t
    WHERE i.project_id = %(project)s AND {where} AND t.taken < %(overlap)s
    AND NOT EXISTS (SELECT 1 FROM {assignment} m WHERE m.item_id = i.id AND m.annotator_id = %(user)s)
    ORDER BY {order} LIMIT %(limit)s FOR UPDATE OF i SKIP LOCKED"""


def _lock_by_status(
    project: Project, routes: tuple[str, ...], user: Any, tier: str, overlap: int, now: Any
) -> list[tuple[int, str]]:
    """Lock (SKIP LOCKED) the first candidates in the queue's order, found through the item status.

    PostgreSQL only. The order is the full query's (most slots taken first, then by id) over the items
    that are not complete: the started items with a slot taken, else the first items with none taken,
    started or pending. Returns (item id, status) pairs.
    """
    tables = {
        "item": connection.ops.quote_name(Item._meta.db_table),
        "assignment": connection.ops.quote_name(Assignment._meta.db_table),
    }

    def candidates(where: str, order: str) -> str:
        return _CANDIDATE.format(where=where, order=order, taken=_TAKEN.format(**tables), **tables)

    params = {
        "project": project.pk,
        "routes": list(routes),
        "started": [Item.IN_PROGRESS, Item.SKIPPED],
        "pending": Item.PENDING,
        "tier": tier,
        "overlap": overlap,
        "user": user.pk,
        "now": now,
        "submitted": Assignment.SUBMITTED,
        "leased": Assignment.LEASED,
        "limit": _CANDIDATES,
    }
    started = "i.route = ANY(%(routes)s) AND i.status = ANY(%(started)s)"
    with connection.cursor() as cursor:
        cursor.execute(candidates(f"{started} AND t.taken > 0", "t.taken DESC, i.id"), params)
        found = cursor.fetchall()
        if found:
            return [(pk, status) for pk, status, _ in found]
        # No started item with a slot taken: the first with none taken, started or pending (one ordered
        # index scan per route).
        parts = [candidates(f"{started} AND t.taken = 0", "i.id")]
        for k, route in enumerate(routes):
            params[f"route{k}"] = route
            parts.append(candidates(f"i.route = %(route{k})s AND i.status = %(pending)s", "i.id"))
        # The SQL is built from constants and table names only; every value is a parameter.
        union = " UNION ALL ".join(f"SELECT * FROM ({part}) c{k}" for k, part in enumerate(parts))  # noqa: S608
        cursor.execute(union, params)
        fresh = cursor.fetchall()
    # taken is 0 on a pending item (claim_next creates an item's first assignment and sets in_progress
    # with it); were it not, the full query's order still applies among the rows found.
    return [(pk, status) for _, pk, status in sorted((-taken, pk, status) for pk, status, taken in fresh)][:_CANDIDATES]


def _recount(item_id: int, tier: str, overlap: int, now: Any) -> tuple[int, int]:
    """After the lock, in a fresh statement: the item's free slots in the tier and its number of responses."""
    if connection.vendor != "postgresql":
        n = Item.objects.filter(pk=item_id).values_list("responses__position", flat=True).count()
        return _free_slots(item_id, tier, overlap, now), n
    tables = {
        "item": connection.ops.quote_name(Item._meta.db_table),
        "assignment": connection.ops.quote_name(Assignment._meta.db_table),
        "response": connection.ops.quote_name(Response._meta.db_table),
    }
    # One statement for the two counts; the responses counted as the item LEFT JOIN them, as before.
    sql = (
        "SELECT {taken}, (SELECT count(*) FROM {item} i2 LEFT JOIN {response} r ON r.item_id = i2.id"
        " WHERE i2.id = i.id) FROM {item} i WHERE i.id = %(item)s"
    )
    params = {
        "item": item_id,
        "tier": tier,
        "now": now,
        "submitted": Assignment.SUBMITTED,
        "leased": Assignment.LEASED,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql.format(taken=_TAKEN.format(**tables), **tables), params)
        row = cursor.fetchone()
    if row is None:  # the item was deleted meanwhile
        return 0, 0
    return overlap - row[0], row[1]


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
