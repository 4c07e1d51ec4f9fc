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

Gold items (services/gold.py) are never in the queue. Where a project uses gold (Project.gold_active, or
qualification_required: read from the project row the request has loaded, so a project without gold runs
the statements below unchanged), every claim first asks services.gold: a paused or failed annotator gets
nothing (QueueClosed), an annotator in the qualification test gets its next item, and a claim drawn for
gold (the project's gold_rate) gets a gold item the annotator has not had; the statements then leave the
gold items out.
"""

from __future__ import annotations

import functools
import random
import time
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp import selectors
from webapp.models import AnnotatorProfile, Assignment, GoldItem, Item, Project, Response
from webapp.rawsql import fetch_models, models_from_cursor

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
    items = project.items.filter(route__in=routes or queue_routes(project))
    if project.gold_active:  # gold items are never regular items
        items = items.filter(~Exists(GoldItem.objects.filter(item=OuterRef("pk"))))
    return items


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


def index_plans() -> None:
    """In the caller's transaction (PostgreSQL): plan its statements without sequential scans.

    The web app's statements are prepared, and PostgreSQL gives a prepared statement a generic plan after
    five runs and keeps it until the tables' statistics change. Made while the assignment table holds a
    few rows (a new installation or project), that plan reads the whole table for every item it looks at,
    and goes on doing so as the table grows until autovacuum analyzes it (a minute or more: the queue's
    claim went from 0.3 to 7 ms within 2,500 submits). The queue's and the submit's statements find their
    rows through indexes at any size, so in their transactions sequential scans are off: every plan made
    there, generic or not, is an index plan. SET LOCAL ends with the transaction.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


def _profile(user: Any) -> AnnotatorProfile:
    sql = f"SELECT * FROM {_table(AnnotatorProfile)} WHERE user_id = %s"  # noqa: S608
    profile = next(iter(fetch_models(AnnotatorProfile, sql, [user.pk])), None)
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
    return next(iter(fetch_models(Assignment, sql, [project.pk, user.pk, Assignment.LEASED])), None)


def _open_queue(project: Project, user: Any, profile: AnnotatorProfile | None) -> tuple[AnnotatorProfile, int]:
    """The annotator's profile and overlap in the project; QueueClosed where they may not take work there."""
    if profile is None:
        profile = _profile(user)
    if project.state != Project.ACTIVE or not profile.active or not user.is_active:
        raise QueueClosed("This project is not open for annotation." if profile.active else "Your account is paused.")
    overlap = overlap_for(project, profile.tier)
    if overlap == 0:
        raise QueueClosed(f"This project needs no {profile.tier} annotations.")
    return profile, overlap


def claim_next(project: Project, user: Any, profile: AnnotatorProfile | None = None) -> Assignment | None:
    """The annotator's current assignment in the project, or a newly claimed one; None when nothing is left.

    `profile`: the user's AnnotatorProfile where the caller has it already (see selectors.project_access).
    """
    profile, overlap = _open_queue(project, user, profile)
    tier = profile.tier
    now = timezone.now()
    claim = _Claim(project, user, profile, overlap, now)
    gold = _gold(project)
    plan = gold.plan_claim(project, user) if gold else None  # raises QueueClosed: paused, failed the test

    with transaction.atomic():
        index_plans()
        mine = _my_lease(project, user)
        if mine is None:
            if gold and plan:  # a qualification item, or a claim drawn for gold
                served = gold.serve(plan, project, user, profile, now)
                if served is not None or plan.kind == gold.QUALIFY:  # the test comes before the queue
                    return served
            # Nothing locked so far, so the first attempt can go on in this transaction.
            done, assignment = claim.attempt()
            if done:
                return assignment
        elif (
            mine.lease_expires_at > now
            or (gold and gold.is_gold(mine.item_id))  # a gold item's slot is never taken by another
            or _free_slots(mine.item_id, tier, overlap, now, exclude=mine.pk) > 0
        ):
            mine.lease_expires_at = now + lease_duration()
            mine.save(update_fields=["lease_expires_at", "updated_at"])
            return mine
        else:
            mine.status = Assignment.EXPIRED
            mine.save(update_fields=["status", "updated_at"])

    # A failed attempt means another claim filled an item meanwhile, so this ends; the bound is a safety net.
    for _ in range(_ATTEMPTS):
        with transaction.atomic():
            index_plans()
            done, assignment = claim.attempt()
            if done:
                return assignment
    return None


def try_claim_next(
    project: Project, user: Any, profile: AnnotatorProfile | None = None
) -> tuple[bool, Assignment | None]:
    """claim_next's common case, in the caller's transaction and without waiting for any lock.

    Returns (True, the new assignment), or (False, None) where claim_next has to decide: the annotator
    holds a lease in the project already, or every candidate is locked by other transactions or was
    filled meanwhile, or nothing is left. Raises QueueClosed. As it never waits, a transaction that
    holds locks (a submit's) can claim the next item before it commits without risking a deadlock;
    on (False, None) call claim_next after the commit.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("try_claim_next needs a transaction")
    profile, overlap = _open_queue(project, user, profile)
    claim = _Claim(project, user, profile, overlap, timezone.now())
    if not claim.by_status:  # SQLite, or an expert matched by domain: claim_next does it all
        return False, None
    gold = _gold(project)
    if gold:
        plan = gold.plan_claim(project, user)  # raises QueueClosed: paused, failed the test
        if plan is not None:  # a gold item now; the qualification test's items come from claim_next
            served = gold.serve_now(plan, project, user, profile, claim.now) if plan.kind == gold.GOLD else None
            return (True, served) if served is not None else (False, None)
    # One statement finds and locks the candidates, and finds nothing where the annotator holds a lease.
    done, assignment = claim.attempt(wait=False, unless_leased=True)
    return (True, assignment) if done and assignment is not None else (False, None)


def _gold(project: Project) -> Any:
    """services.gold where the project uses gold items or a qualification test, else None (no query)."""
    if not (project.gold_active or project.qualification_required):
        return None
    from webapp.services import gold  # it imports this module

    return gold


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

    def attempt(self, wait: bool = True, unless_leased: bool = False) -> tuple[bool, Assignment | None]:
        """In a transaction: (True, the new assignment or None for nothing left), or (False, None) to try again.

        wait=False: never wait for a lock; (False, None) where only a locked item is left. unless_leased
        (with by_status): (False, None) where the annotator holds a lease in the project, or where the
        status probe finds nothing.
        """
        tier, overlap, now = self.tier, self.overlap, self.now
        # (item id, its status and number of responses where known)
        locked: list[tuple[int, str | None, int | None]] = []
        if self.by_status:
            locked = list(_lock_by_status(self.project, self.user, tier, overlap, now, unless_leased=unless_leased))
            if not locked and unless_leased:
                return False, None
        if not locked:
            pks = self.candidates.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)
            locked = [(pk, None, None) for pk in pks[:_CANDIDATES]]
        if not locked and not wait:
            return False, None
        if not locked:
            # SKIP LOCKED also passes over items that other claims (or submits) hold for a moment:
            # wait for one of those instead of answering "nothing left" while it still has free slots.
            pks = self.candidates.select_for_update(of=("self",)).values_list("pk", flat=True)
            locked = [(pk, None, None) for pk in pks[:1]]
        if not locked:
            return True, None
        for item_id, status, n_responses in locked:
            if n_responses is not None:  # PostgreSQL: recount, insert and start the item in one statement
                claimed = _claim_if_free(self.project, item_id, self.user, tier, overlap, now, n_responses)
                if claimed is None:
                    continue  # filled by a claim that committed after our snapshot
                return True, claimed
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


# The slots taken on an item (item_ref: the item's id in the statement) in the tier.
def _literal(word: str) -> str:
    """One of the models' status or route words as an SQL string literal (letters and underscores only)."""
    if not word.replace("_", "").isalpha():
        raise ValueError(f"not a plain word: {word!r}")
    return f"'{word}'"


# The queue's statements take the status and route words as literals, not parameters: a plan made
# without the parameters' values (PostgreSQL's generic plan of a prepared statement) then still sees the
# words that select the few items in progress; with an unknown parameter it read the whole table. The
# parameters are the project, the annotator, the tier, the overlap and the time.
_WORDS = {
    "submitted": _literal(Assignment.SUBMITTED),
    "leased": _literal(Assignment.LEASED),
    "human": _literal(Item.HUMAN),
    "unrouted": _literal(Item.UNROUTED),
    "pending": _literal(Item.PENDING),
    "in_progress": _literal(Item.IN_PROGRESS),
    "skipped": _literal(Item.SKIPPED),
}
# The slots taken on an item (item_ref: the item's id in the statement) in the tier.
_TAKEN = """(SELECT count(*) FROM {assignment} a WHERE a.item_id = {item_ref} AND a.tier = %(tier)s
    AND (a.status = {submitted} OR (a.status = {leased} AND a.lease_expires_at > %(now)s)))"""
# OFFSET 0 keeps `taken` a column computed once a row: inlined, PostgreSQL planned and ran its count up to
# three times (filter, bound, sort).
_CANDIDATE = """SELECT i.id, i.status, t.taken FROM {item} i CROSS JOIN LATERAL (SELECT {taken} AS taken OFFSET 0) t
    WHERE i.project_id = %(project)s AND {where} AND t.taken < %(overlap)s
    AND NOT EXISTS (SELECT 1 FROM {assignment} m WHERE m.item_id = i.id AND m.annotator_id = %(user)s)
    ORDER BY {order} LIMIT {limit} FOR UPDATE OF i SKIP LOCKED"""
# queue_routes in SQL (evaluated once per statement): only the human route once any item is routed to humans.
_HUMAN_ROUTED = "EXISTS (SELECT 1 FROM {item} h WHERE h.project_id = %(project)s AND h.route = {human})"
# The rows locked, with their number of responses, counted as _recount counts it (the item LEFT JOIN them).
_WITH_RESPONSES = """SELECT c.id, c.status, c.taken,
    GREATEST(1, (SELECT count(*) FROM {response} r WHERE r.item_id = c.id)) FROM ({candidates}) c"""
# The annotator's leases in the project.
_LEASED = """EXISTS (SELECT 1 FROM {assignment} la JOIN {item} li ON li.id = la.item_id
    WHERE li.project_id = %(project)s AND la.annotator_id = %(user)s AND la.status = {leased})"""


def _lock_by_status(
    project: Project, user: Any, tier: str, overlap: int, now: Any, *, unless_leased: bool = False
) -> list[tuple[int, str, int]]:
    """Lock (SKIP LOCKED) the first candidates in the queue's order, found through the item status.

    PostgreSQL only. The order is the full query's (most slots taken first, then by id) over the items
    that are not complete: the started items with a slot taken, else the first items with none taken,
    started or pending. unless_leased: lock nothing, and return nothing, where the annotator holds a
    lease in the project. Returns (item id, status, number of responses) triples.
    """
    tables = {
        "item": connection.ops.quote_name(Item._meta.db_table),
        "assignment": connection.ops.quote_name(Assignment._meta.db_table),
        "response": connection.ops.quote_name(Response._meta.db_table),
        **_WORDS,
    }
    # The queue's route (queue_routes), decided in the statement: human once any item of the project is
    # routed to humans, else unrouted (queue_routes' "unrouted or human" then finds only unrouted items).
    route = f"i.route = (CASE WHEN {_HUMAN_ROUTED.format(**tables)} THEN {{human}} ELSE {{unrouted}} END)"
    gate = f" AND NOT {_LEASED.format(**tables)}" if unless_leased else ""
    if project.gold_active:  # gold items are never regular items (an index probe a row, only in gold projects)
        gate += f" AND NOT EXISTS (SELECT 1 FROM {_table(GoldItem)} g WHERE g.item_id = i.id)"  # noqa: S608

    def candidates(where: str, order: str) -> str:
        return _CANDIDATE.format(
            where=f"{route} AND {where}".format(**tables) + gate,
            order=order,
            taken=_TAKEN.format(item_ref="i.id", **tables),
            limit=int(_CANDIDATES),
            **tables,
        )

    def with_responses(sql: str) -> str:
        return _WITH_RESPONSES.format(candidates=sql, **tables)

    params = {"project": project.pk, "tier": tier, "overlap": overlap, "user": user.pk, "now": now}
    started = "i.status IN ({in_progress}, {skipped})"
    with connection.cursor() as cursor:
        # Two statements, not one: PostgreSQL plans each run (see settings), and the second is needed
        # only about every other claim (an item's first annotator), so it is only then planned.
        cursor.execute(with_responses(candidates(f"{started} AND t.taken > 0", "t.taken DESC, i.id")), params)
        rows = cursor.fetchall()
        if not rows:
            # No started item with a slot taken: the first with none taken, started or pending (an
            # ordered index scan each).
            # Pending: status as a range, ordered by (status, id). With `status = 'pending'` the planner
            # also weighed the primary key (id order, filtering on the project), and with another
            # project's 100,000 items imported first it chose it and read all of them on every claim
            # (30 ms of PostgreSQL CPU per submit in `make bench`); only the queue index gives this order.
            parts = [
                candidates(f"{started} AND t.taken = 0", "i.id"),
                candidates("i.status >= {pending} AND i.status <= {pending}", "i.status, i.id"),
            ]
            union = " UNION ALL ".join(f"SELECT * FROM ({part}) c{k}" for k, part in enumerate(parts))  # noqa: S608
            cursor.execute(with_responses(union), params)
            rows = cursor.fetchall()
    # taken is 0 on a pending item (claim_next creates an item's first assignment and sets in_progress
    # with it); were it not, the full query's order still applies among the rows found.
    ordered = sorted((-taken, pk, status, n) for pk, status, taken, n in rows)
    return [(pk, status, n) for _, pk, status, n in ordered][:_CANDIDATES]


# Inserts only where the item has a free slot and the annotator no assignment of it, both counted afresh (a
# claim of the same annotator in another tab may have committed since the candidates' statement). Returns,
# with the new assignment's id, the item and what the annotation workspace shows with it (the annotator's
# progress, the responses: selectors.WORKSPACE_COLUMNS), so that the page needs no query of its own.
_CLAIM = """WITH free AS (SELECT 1 WHERE {taken} < %(overlap)s
        AND NOT EXISTS (SELECT 1 FROM {assignment} m WHERE m.item_id = %(item)s AND m.annotator_id = %(user)s)),
    claimed AS (INSERT INTO {assignment} ({columns}) SELECT {values} FROM free RETURNING id),
    started AS (UPDATE {item} SET status = %(in_progress)s
        WHERE id = %(item)s AND status = %(pending)s AND EXISTS (SELECT 1 FROM claimed))
    SELECT i.*, claimed.id AS hp_assignment, {workspace} FROM claimed, {item} i WHERE i.id = %(item)s"""


def insert_values(obj: Any) -> tuple[list[str], list[Any]]:
    """The (quoted) columns and database values of a new model instance, as Model.save() would insert them."""
    conn = connections[DEFAULT_DB_ALIAS]  # once: each use of the `connection` proxy looks it up again
    fields, columns = _insert_columns(obj._meta.label, conn.vendor)
    return list(columns), [field.get_db_prep_save(field.pre_save(obj, add=True), conn) for field in fields]


@functools.cache
def _insert_columns(label: str, vendor: str) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """A model's fields other than the primary key, and their quoted columns (by model label and database)."""
    fields = tuple(f for f in apps.get_model(label)._meta.concrete_fields if not f.primary_key)
    return fields, tuple(connection.ops.quote_name(f.column) for f in fields)


def _claim_if_free(
    project: Project, item_id: int, user: Any, tier: str, overlap: int, now: Any, n_responses: int
) -> Assignment | None:
    """PostgreSQL, with the item locked: _recount, Assignment.objects.create and the item's pending ->
    in_progress in one statement. A fresh statement, so it counts every claim committed before the lock.
    Returns the new assignment, or None where the item has no free slot left. The assignment comes with
    its item and `workspace`: selectors.item_for_annotation's answer for it."""
    assignment = Assignment(
        item_id=item_id,
        annotator=user,
        tier=tier,
        display_order=display_order(item_id, user.pk, n_responses),
        lease_expires_at=now + lease_duration(),
    )
    params: dict[str, Any] = {
        "item": item_id,
        "user": user.pk,
        "tier": tier,
        "overlap": overlap,
        "now": now,
        "in_progress": Item.IN_PROGRESS,
        "pending": Item.PENDING,
    }
    columns, values = insert_values(assignment)
    params.update((f"v{k}", value) for k, value in enumerate(values))
    workspace, workspace_params = selectors.workspace_columns(user, project)
    params.update(workspace_params)
    assignment_table = connection.ops.quote_name(Assignment._meta.db_table)
    sql = _CLAIM.format(
        taken=_TAKEN.format(item_ref="%(item)s", assignment=assignment_table, **_WORDS),
        assignment=assignment_table,
        item=connection.ops.quote_name(Item._meta.db_table),
        columns=", ".join(columns),
        values=", ".join(f"%(v{k})s" for k in range(len(values))),
        workspace=workspace,
    )
    saved = insert_assignment(assignment, sql, params)
    if saved is not None and saved.item.status == Item.PENDING:
        saved.item.status = Item.IN_PROGRESS  # as `started` left it (the statement reads the rows as they were)
    return saved


def insert_assignment(assignment: Assignment, sql: str, params: dict[str, Any]) -> Assignment | None:
    """Run a statement that inserts `assignment` and returns its item's row with the new assignment's id
    (hp_assignment) and the workspace columns: the assignment, saved, with its item and workspace
    attached; None when the statement inserted nothing."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        items = models_from_cursor(Item, cursor)
    if not items:
        return None
    assignment.pk = items[0].hp_assignment  # type: ignore[attr-defined]
    assignment._state.adding = False
    assignment._state.db = connection.alias
    Assignment.item.field.set_cached_value(assignment, items[0])
    assignment.workspace = selectors.workspace_from_row(items[0])  # type: ignore[attr-defined]
    return assignment


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
    params = {"item": item_id, "tier": tier, "now": now}
    with connection.cursor() as cursor:
        cursor.execute(sql.format(taken=_TAKEN.format(item_ref="i.id", **tables, **_WORDS), **tables), params)
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
    gold = _gold(project)
    if gold and gold.is_gold(assignment.item_id):  # a gold item has a slot for everyone
        return True
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
