"""Gold items, the qualification test and the pause rule (docs/annotating.md, "Gold items and qualification").

A gold item is an item with a known answer (GoldItem). It is never a regular item: the queue, exports and
routing leave it out. Annotators meet gold items in two ways, through the same annotation page as any item:

- the qualification test: where the project requires it, an annotator member who has not passed gets the
  project's qualification items first, in order; once each was answered (or skipped: a skip counts as wrong)
  the test is scored, and the annotator goes on to the queue (passed) or gets nothing more (failed);
- mixed in: with the project's gold_rate, a claim serves a gold item the annotator has not had, with that
  probability, decided by a generator seeded with (project, annotator, n): n is the number of items the
  annotator has claimed in the project, so the decision is the same however often it is asked.

Every submitted answer on a gold item is scored (`score`) and recorded (GoldResult). After a gold answer
outside the test, an annotator whose accuracy (over the gold answers since their last unpause) falls below
the project's pause_below, with at least pause_min_gold answers, is paused in the project.

Cost: the queue calls into this module only where `engaged(project)`, read from the project row that every
annotation request has already loaded: Project.gold_active (set here while the project has gold items or
paused members) or qualification_required. A project without gold runs the queue's statements unchanged.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp import scheme as sch
from webapp import selectors
from webapp.models import (
    AnnotatorProfile,
    Assignment,
    GoldItem,
    GoldResult,
    HumanAnnotation,
    Item,
    Membership,
    Project,
    QualificationAttempt,
    Response,
)
from webapp.services.queue import QueueClosed, display_order, insert_assignment, insert_values, lease_duration

QUALIFY, GOLD = "qualification", "gold"


class GoldError(ValueError):
    """A gold answer or setting that cannot be saved; the message says why."""


def paused_message(reason: str) -> str:
    return f"You are paused in this project{f': {reason}' if reason else ''}. A project manager can resume your work."


def not_qualified_message() -> str:
    return "You did not pass this project's qualification test, so it has no items for you."


# --- answers and scoring ----------------------------------------------------------------------------


def side(label: sch.Label) -> int:
    """-1 where the label prefers A, +1 where it prefers B, 0 for a tie (either scale)."""
    if isinstance(label, str):
        return -1 if label.startswith("A-") else 1 if label.startswith("B-") else 0
    return (label > 0) - (label < 0)


_WEAKEST = ("A-is-slightly-better", "B-is-slightly-better", -1, 1)


def label_matches(gold: sch.Label, given: Any) -> bool:
    """Whether `given` agrees with the gold label: the same side (the strength does not matter).

    Ties: a gold tie is matched by a tie or by the weakest preference on either side ("slightly better",
    strength7's -1 and +1); a gold preference for one side is never matched by a tie.
    """
    if given is None or isinstance(given, bool):
        return False
    wanted = side(gold)
    if wanted != 0:
        return side(given) == wanted
    return side(given) == 0 or given in _WEAKEST


def score(project: Project, gold: GoldItem, annotation: HumanAnnotation) -> tuple[bool, dict[str, Any]]:
    """(correct, details) of an annotation (canonical order) against the gold answer.

    Preferences: correct when every aspect of the gold answer is matched (label_matches); an aspect the
    annotator did not answer is wrong. A preferred response: pairwise, the side of the project's first aspect
    (ties are wrong); ranking, the response ranked first, alone (a tie at the top is wrong).
    """
    details: dict[str, Any] = {}
    if gold.preferred is not None:
        if project.kind == sch.RANKING:
            top = (annotation.ranking or [None])[0]
            given: Any = top if not isinstance(top, list) else (top[0] if len(top) == 1 else top)
            ok = given == gold.preferred
        else:
            aspect = project.aspects[0]
            given = (annotation.preferences or {}).get(aspect)
            ok = given is not None and not isinstance(given, bool) and side(given) == (-1 if gold.preferred == 0 else 1)
        details["preferred"] = {"gold": gold.preferred, "given": given, "correct": ok}
        return ok, details
    for aspect, label in gold.preferences.items():
        given = (annotation.preferences or {}).get(aspect)
        details[aspect] = {"gold": label, "given": given, "correct": label_matches(label, given)}
    return all(d["correct"] for d in details.values()), details


def validate_answer(
    project: Project, item: Item, preferences: dict[str, Any] | None, preferred: int | None
) -> tuple[dict[str, Any], int | None]:
    """The gold answer checked against the project's scheme and the item; GoldError says what is wrong."""
    preferences = {a: v for a, v in (preferences or {}).items() if v not in (None, "")}
    n_responses = item.responses.count()
    if preferences and preferred is not None:
        raise GoldError("give either preferences per aspect or the preferred response, not both")
    if preferred is not None:
        if not 0 <= preferred < n_responses:
            raise GoldError(f"preferred response: the item has {n_responses} responses (0 is A)")
        return {}, preferred
    if project.kind == sch.RANKING:
        raise GoldError("a ranking project's gold answer is the preferred response")
    if not preferences:
        raise GoldError("a gold answer is needed: a preference for at least one aspect, or the preferred response")
    labels = project.scheme().labels
    for aspect, label in preferences.items():
        if aspect not in project.aspects:
            raise GoldError(f"{aspect!r} is not an aspect of the project ({', '.join(project.aspects)})")
        if isinstance(label, bool) or label not in labels:
            raise GoldError(f"{label!r} is not on the project's {project.scale} scale")
    return preferences, None


def parse_label(project: Project, text: str) -> sch.Label | None:
    """A form's label: strength7 labels are numbers; '' is none."""
    text = (text or "").strip()
    if not text:
        return None
    if project.scale == sch.STRENGTH7:
        try:
            return int(text)
        except ValueError:
            raise GoldError(f"{text!r} is not on the strength7 scale") from None
    return text


# --- the manager's writes -----------------------------------------------------------------------------


def _lock(project: Project) -> Project:
    return Project.objects.select_for_update().get(pk=project.pk)


def _refresh_flag(project: Project) -> None:
    """Project.gold_active := gold items or paused members; the caller holds the project row's lock."""
    active = (
        GoldItem.objects.filter(project=project).exists()
        or Membership.objects.filter(project=project, paused=True).exists()
    )
    Project.objects.filter(pk=project.pk).exclude(gold_active=active).update(gold_active=active)
    project.gold_active = active


def set_gold(
    project: Project,
    item: Item,
    *,
    preferences: dict[str, Any] | None = None,
    preferred: int | None = None,
    qualification: bool = False,
    position: int = 0,
    note: str = "",
    user: Any = None,
) -> GoldItem:
    """Make one of the project's items gold with this answer (or change its answer)."""
    if item.project_id != project.pk:
        raise GoldError("the item is not in this project")
    preferences, preferred = validate_answer(project, item, preferences, preferred)
    with transaction.atomic():
        locked = _lock(project)
        if locked.qualification_required and not qualification:
            others = GoldItem.objects.filter(project=project, qualification=True).exclude(item=item)
            if not others.exists():
                raise GoldError("the project requires qualification: this is its last qualification item")
        answer = {
            "project": project,
            "preferences": preferences,
            "preferred": preferred,
            "qualification": qualification,
            "position": max(0, int(position)),
            "note": note,
        }
        creator = user if getattr(user, "pk", None) else None
        gold, _ = GoldItem.objects.update_or_create(
            item=item, defaults=answer, create_defaults={**answer, "created_by": creator}
        )
        _refresh_flag(project)
    return gold


def unset_gold(project: Project, item: Item) -> None:
    """The item is a regular item again (its gold results stay on record)."""
    with transaction.atomic():
        locked = _lock(project)
        gold = GoldItem.objects.filter(project=project, item=item).first()
        if gold is None:
            return
        last = not GoldItem.objects.filter(project=project, qualification=True).exclude(pk=gold.pk).exists()
        if gold.qualification and locked.qualification_required and last:
            raise GoldError("the project requires qualification: this is its last qualification item")
        gold.delete()
        _refresh_flag(project)


def update_settings(
    project: Project,
    *,
    gold_rate: float,
    qualification_required: bool,
    qualification_pass_mark: float,
    pause_below: float | None,
    pause_min_gold: int,
) -> Project:
    for name, value in (("gold rate", gold_rate), ("pass mark", qualification_pass_mark), ("pause below", pause_below)):
        if value is not None and not 0 <= value <= 1:
            raise GoldError(f"{name}: a share between 0 and 1")
    if pause_min_gold < 1:
        raise GoldError("pause after: at least 1 gold answer")
    with transaction.atomic():
        locked = _lock(project)
        if qualification_required and not GoldItem.objects.filter(project=project, qualification=True).exists():
            raise GoldError("add qualification items before requiring qualification")
        locked.gold_rate = gold_rate
        locked.qualification_required = qualification_required
        locked.qualification_pass_mark = qualification_pass_mark
        locked.pause_below = pause_below
        locked.pause_min_gold = pause_min_gold
        locked.save(
            update_fields=[
                "gold_rate",
                "qualification_required",
                "qualification_pass_mark",
                "pause_below",
                "pause_min_gold",
                "updated_at",
            ]
        )
    return locked


def pause(membership: Membership, reason: str, now: datetime | None = None) -> None:
    """Pause the member in the project (the caller holds the membership row's lock)."""
    membership.paused = True
    membership.paused_reason = reason[:2000]
    membership.paused_at = now or timezone.now()
    membership.save(update_fields=["paused", "paused_reason", "paused_at"])
    # The project has gold items (a gold answer paused them); set the flag anyway, should they all be removed.
    Project.objects.filter(pk=membership.project_id, gold_active=False).update(gold_active=True)


def unpause(project: Project, membership_id: int) -> Membership:
    """Resume a paused member; the pause rule then counts only the gold answers given from now on."""
    with transaction.atomic():
        _lock(project)
        membership = Membership.objects.select_for_update().get(pk=membership_id, project=project)
        if membership.paused:
            membership.paused = False
            membership.unpaused_at = timezone.now()
            membership.save(update_fields=["paused", "unpaused_at"])
        _refresh_flag(project)
    return membership


def pass_by_hand(project: Project, membership_id: int, user: Any) -> Membership:
    """A manager qualifies the member without (or despite) the test; recorded as an overridden attempt."""
    now = timezone.now()
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership_id, project=project)
        if membership.qualification == Membership.PASSED:
            return membership
        attempt = QualificationAttempt.objects.filter(membership=membership, finished_at__isnull=True).first()
        if attempt is None:
            attempt = QualificationAttempt(membership=membership, pass_mark=project.qualification_pass_mark)
        attempt.passed = True
        attempt.finished_at = now
        attempt.overridden_by = user
        attempt.save()
        membership.qualification = Membership.PASSED
        membership.save(update_fields=["qualification"])
    return membership


# --- claims (services.queue calls these only where engaged(project)) -----------------------------------


def engaged(project: Project) -> bool:
    """Whether claims and submits in the project consult this module (no query: the project row's own)."""
    return bool(project.gold_active or project.qualification_required)


@dataclass(frozen=True)
class Plan:
    """What a claim serves before the queue: the next qualification item, or a gold item."""

    kind: str  # QUALIFY or GOLD
    n: int  # the annotator's claims in the project so far (GOLD: the seed)
    membership_id: int | None = None
    start_test: bool = False
    item_id: int | None = None  # QUALIFY: the next qualification item (None: one is leased already)


@dataclass(frozen=True)
class _Member:
    id: int | None
    role: str | None
    paused: bool
    reason: str
    qualification: str
    n_claims: int


def _table(model: Any) -> str:
    return str(connection.ops.quote_name(model._meta.db_table))


def _member(project: Project, user: Any, count: bool) -> _Member:
    """The membership's gold state and (count) the annotator's number of claims in the project: one query."""
    n_claims = "0"
    params: list[Any] = []
    if count:
        n_claims = (
            f"(SELECT count(*) FROM {_table(Assignment)} a JOIN {_table(Item)} i ON i.id = a.item_id"  # noqa: S608
            " WHERE a.annotator_id = %s AND i.project_id = %s)"
        )
        params = [user.pk, project.pk]
    sql = (
        f"SELECT m.id, m.role, m.paused, m.paused_reason, m.qualification, {n_claims}"  # noqa: S608
        f" FROM (SELECT 1 AS one) x LEFT JOIN {_table(Membership)} m ON m.project_id = %s AND m.user_id = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, project.pk, user.pk])
        mid, role, paused, reason, qualification, n = cursor.fetchone()
    return _Member(mid, role, bool(paused), reason or "", qualification or Membership.UNTESTED, int(n))


def roll(project: Project, user: Any, n: int) -> float:
    """The claim's draw in [0, 1): seeded with (project, annotator, n-th claim), so it is reproducible."""
    return random.Random(f"gold:{project.pk}:{user.pk}:{n}").random()  # noqa: S311 (not for security)


def _qualification_rows(project: Project, user_id: int) -> list[tuple[int, str | None]]:
    """The project's qualification items in test order, with the annotator's assignment status (None: none)."""
    status = Assignment.objects.filter(item_id=OuterRef("item_id"), annotator_id=user_id).values("status")[:1]
    rows = (
        GoldItem.objects.filter(project=project, qualification=True)
        .annotate(mine=status)
        .order_by("position", "item_id")
        .values_list("item_id", "mine")
    )
    return list(rows)


def plan_claim(project: Project, user: Any) -> Plan | None:
    """What the annotator's next claim serves ahead of the queue, or None for the queue.

    Raises QueueClosed where the annotator is paused in the project or failed its qualification test
    (finishing the test, in a savepoint of the caller's transaction, where every item of it is answered).
    """
    member = _member(project, user, count=project.gold_rate > 0)
    if member.paused:
        raise QueueClosed(paused_message(member.reason))
    must_qualify = (
        project.qualification_required
        and member.role == Membership.ANNOTATOR
        and member.qualification != Membership.PASSED
    )
    if must_qualify:
        if member.qualification == Membership.FAILED:
            raise QueueClosed(not_qualified_message())
        rows = _qualification_rows(project, user.pk)
        if rows:  # (a test without items is not enforced)
            todo = [item_id for item_id, status in rows if status is None]
            if todo or any(status == Assignment.LEASED for _, status in rows):
                return Plan(
                    QUALIFY,
                    member.n_claims,
                    member.id,
                    start_test=member.qualification == Membership.UNTESTED,
                    item_id=todo[0] if todo else None,
                )
            if member.id is not None and not finish_test(project, member.id):
                raise QueueClosed(not_qualified_message())
    if project.gold_rate > 0 and project.gold_active and roll(project, user, member.n_claims) < project.gold_rate:
        return Plan(GOLD, member.n_claims, member.id)
    return None


def finish_test(project: Project, membership_id: int) -> bool:
    """Score the member's qualification test once every item of it was answered or skipped; True where
    they passed (or pass already). In a savepoint: the caller may go on to raise QueueClosed."""
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership_id)
        if membership.qualification in (Membership.PASSED, Membership.FAILED):
            return membership.qualification == Membership.PASSED
        rows = _qualification_rows(project, membership.user_id)
        if not rows or any(status in (None, Assignment.LEASED) for _, status in rows):
            return True  # not finished (or no test): nothing to decide yet
        item_ids = [item_id for item_id, _ in rows]
        right = GoldResult.objects.filter(annotator_id=membership.user_id, item_id__in=item_ids, correct=True)
        correct = right.count()
        score_ = correct / len(item_ids)
        passed = score_ >= project.qualification_pass_mark
        attempt = QualificationAttempt.objects.filter(membership=membership, finished_at__isnull=True).first()
        if attempt is None:
            attempt = QualificationAttempt(membership=membership)
        attempt.pass_mark = project.qualification_pass_mark
        attempt.n_items, attempt.n_correct, attempt.score = len(item_ids), correct, score_
        attempt.passed, attempt.finished_at = passed, timezone.now()
        attempt.save()
        membership.qualification = Membership.PASSED if passed else Membership.FAILED
        membership.save(update_fields=["qualification"])
    return passed


def _start_test(project: Project, membership_id: int) -> None:
    updated = Membership.objects.filter(pk=membership_id, qualification=Membership.UNTESTED).update(
        qualification=Membership.TESTING
    )
    if updated:
        QualificationAttempt.objects.create(membership_id=membership_id, pass_mark=project.qualification_pass_mark)


def _pick(project: Project, user: Any, n: int) -> tuple[int, int] | None:
    """The gold item for the annotator's n-th claim, drawn (seeded) from those they have not had, with its
    number of responses; None where they have had every one. One query."""
    seen = Assignment.objects.filter(item_id=OuterRef("item_id"), annotator_id=user.pk)
    unseen = (
        GoldItem.objects.filter(project=project)
        .filter(~Exists(seen))
        .annotate(n_responses=Count("item__responses"))
        .order_by("item_id")
        .values_list("item_id", "n_responses")
    )
    rows = list(unseen)
    if not rows:
        return None
    item_id, n_responses = random.Random(f"gold-item:{project.pk}:{user.pk}:{n}").choice(rows)  # noqa: S311
    return item_id, max(1, n_responses)


def serve(plan: Plan, project: Project, user: Any, profile: AnnotatorProfile, now: datetime) -> Assignment | None:
    """In the claim's transaction, the annotator holding no lease in the project: the assignment of the
    plan's item, or None (no gold item left that the annotator has not had; a race with another tab)."""
    if plan.kind == QUALIFY:
        item_id = plan.item_id
        if item_id is None:
            return None
        if plan.start_test and plan.membership_id is not None:
            _start_test(project, plan.membership_id)
        n_responses = max(1, Response.objects.filter(item_id=item_id).count())
    else:
        picked = _pick(project, user, plan.n)
        if picked is None:
            return None
        item_id, n_responses = picked
    try:
        with transaction.atomic():  # a savepoint: the same item claimed in another tab meanwhile
            return Assignment.objects.create(
                item_id=item_id,
                annotator=user,
                tier=profile.tier,
                display_order=display_order(item_id, user.pk, n_responses),
                lease_expires_at=now + lease_duration(),
            )
    except IntegrityError:
        return None


# Inserts the assignment unless the annotator holds a lease in the project (or has the item already), and
# returns it with its item and the workspace's columns, as queue._CLAIM does for a regular item.
_SERVE = """WITH claimed AS (INSERT INTO {assignment} ({columns}) SELECT {values}
        WHERE NOT EXISTS (SELECT 1 FROM {assignment} la JOIN {item} li ON li.id = la.item_id
            WHERE li.project_id = %(project)s AND la.annotator_id = %(user)s AND la.status = %(leased)s)
        ON CONFLICT DO NOTHING RETURNING id)
    SELECT i.*, claimed.id AS hp_assignment, {workspace} FROM claimed, {item} i WHERE i.id = %(item)s"""


def serve_now(plan: Plan, project: Project, user: Any, profile: AnnotatorProfile, now: datetime) -> Assignment | None:
    """PostgreSQL, in a submit's transaction (queue.try_claim_next): a GOLD plan's assignment, with its item and
    workspace, in one statement after the draw's; None (claim_next then decides) where the annotator holds a
    lease in the project or has had every gold item."""
    picked = _pick(project, user, plan.n)
    if picked is None:
        return None
    item_id, n_responses = picked
    assignment = Assignment(
        item_id=item_id,
        annotator=user,
        tier=profile.tier,
        display_order=display_order(item_id, user.pk, n_responses),
        lease_expires_at=now + lease_duration(),
    )
    columns, values = insert_values(assignment)
    workspace, params = selectors.workspace_columns(user, project)
    params.update({"project": project.pk, "user": user.pk, "leased": Assignment.LEASED, "item": item_id})
    params.update((f"v{k}", value) for k, value in enumerate(values))
    sql = _SERVE.format(
        assignment=_table(Assignment),
        item=_table(Item),
        columns=", ".join(columns),
        values=", ".join(f"%(v{k})s" for k in range(len(values))),
        workspace=workspace,
    )
    return insert_assignment(assignment, sql, params)


def is_gold(item_id: int) -> bool:
    return GoldItem.objects.filter(item_id=item_id).exists()


# --- submits ------------------------------------------------------------------------------------------


class _Lookup:
    """The gold answer is not known yet: after_submit reads it."""


LOOKUP = _Lookup()


def submit_columns() -> tuple[str, str]:
    """The columns and the join that the submit's lock statement adds (annotations._locked_for_submit, item
    `i`) to read the item's gold answer with it: from_submit_row then makes it a GoldItem."""
    columns = (
        ", g.id AS gold_id, g.preferences AS gold_preferences, g.preferred AS gold_preferred,"
        " g.qualification AS gold_qualification"
    )
    return columns, f" LEFT JOIN {_table(GoldItem)} g ON g.item_id = i.id"


def from_submit_row(row: Any) -> GoldItem | _Lookup | None:
    """The gold answer read with submit_columns (None: a regular item), or LOOKUP where it was not read."""
    if not hasattr(row, "gold_id"):
        return LOOKUP
    if row.gold_id is None:
        return None
    preferences = row.gold_preferences
    if isinstance(preferences, str | bytes):  # a raw query's extra JSON column comes as text
        preferences = json.loads(preferences)
    return GoldItem(
        id=row.gold_id,
        item_id=row.item_id,
        preferences=preferences or {},
        preferred=row.gold_preferred,
        qualification=bool(row.gold_qualification),
    )


def after_submit(
    project: Project, user: Any, annotation: HumanAnnotation, gold: GoldItem | _Lookup | None = LOOKUP
) -> GoldResult | None:
    """In the submit's transaction, where engaged(project): score and record an answer on a gold item (`gold`:
    its answer, None for a regular item, or LOOKUP to read it), then finish the qualification test where
    that was its last item, or apply the pause rule."""
    if isinstance(gold, _Lookup):
        gold = GoldItem.objects.filter(item_id=annotation.item_id).first()
    if gold is None:
        return None
    correct, details = score(project, gold, annotation)
    membership = None
    if gold.qualification or project.pause_below is not None:
        membership = Membership.objects.select_for_update().filter(project=project, user_id=user.pk).first()
    in_test = bool(gold.qualification and membership is not None and membership.qualification == Membership.TESTING)
    result = GoldResult(
        project=project,
        annotator=user,
        item_id=annotation.item_id,
        annotation=annotation,
        correct=correct,
        details=details,
        qualification=in_test,
    )
    # One result per annotator and item (an annotation is made once): a conflict is left as it was.
    GoldResult.objects.bulk_create([result], ignore_conflicts=True)
    if membership is None:
        return result
    if in_test:
        finish_test(project, membership.pk)
    elif project.pause_below is not None and not membership.paused:
        since = GoldResult.objects.filter(project=project, annotator_id=user.pk)
        if membership.unpaused_at is not None:
            since = since.filter(at__gt=membership.unpaused_at)
        counts = since.aggregate(n=Count("id"), right=Count("id", filter=Q(correct=True)))
        n, right = counts["n"], counts["right"]
        if n >= project.pause_min_gold and right / n < project.pause_below:
            pause(membership, f"gold accuracy {right / n:.0%} over {n} answers, below {project.pause_below:.0%}")
    return result


# --- reads --------------------------------------------------------------------------------------------


@dataclass
class AnnotatorGold:
    """An annotator's gold record in a project."""

    user_id: int
    username: str
    membership_id: int | None
    role: str | None
    answered: int
    correct: int
    paused: bool = False
    paused_reason: str = ""
    paused_at: datetime | None = None
    qualification: str = Membership.UNTESTED
    last_attempt: QualificationAttempt | None = None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None


def accuracy(project: Project, user: Any) -> tuple[int, int, float | None]:
    """(gold answers, correct ones, accuracy or None) of one annotator in the project, on record."""
    counts = GoldResult.objects.filter(project=project, annotator_id=user.pk).aggregate(
        n=Count("id"), right=Count("id", filter=Q(correct=True))
    )
    n, right = counts["n"], counts["right"]
    return n, right, (right / n if n else None)


def project_accuracy(project: Project) -> list[AnnotatorGold]:
    """Every annotator member (and anyone else with gold answers) with their gold accuracy, qualification
    and pause state, by username."""
    counts = {
        row["annotator"]: (row["n"], row["right"])
        for row in GoldResult.objects.filter(project=project)
        .values("annotator")
        .annotate(n=Count("id"), right=Count("id", filter=Q(correct=True)))
    }
    attempts: dict[int, QualificationAttempt] = {}
    for attempt in (
        QualificationAttempt.objects.filter(membership__project=project)
        .select_related("overridden_by")
        .order_by("started_at", "id")
    ):
        attempts[attempt.membership_id] = attempt  # the latest
    rows: dict[int, AnnotatorGold] = {}
    members = Membership.objects.filter(project=project).select_related("user")
    for m in members:
        if m.role != Membership.ANNOTATOR and m.user_id not in counts:
            continue
        n, right = counts.get(m.user_id, (0, 0))
        rows[m.user_id] = AnnotatorGold(
            m.user_id,
            m.user.get_username(),
            m.pk,
            m.role,
            n,
            right,
            m.paused,
            m.paused_reason,
            m.paused_at,
            m.qualification,
            attempts.get(m.pk),
        )
    others = [uid for uid in counts if uid not in rows]
    for user in get_user_model().objects.filter(pk__in=others):
        n, right = counts[user.pk]
        rows[user.pk] = AnnotatorGold(user.pk, user.get_username(), None, None, n, right)
    return sorted(rows.values(), key=lambda r: r.username)


def gold_items(project: Project) -> QuerySet[GoldItem]:
    """The project's gold items (qualification items first, in test order), with their items and counts."""
    answered = GoldResult.objects.filter(item_id=OuterRef("item_id")).values("item").annotate(n=Count("id"))
    right = answered.filter(correct=True)
    return (
        GoldItem.objects.filter(project=project)
        .select_related("item")
        .annotate(
            n_answered=Coalesce(Subquery(answered.values("n"), output_field=IntegerField()), 0),
            n_correct=Coalesce(Subquery(right.values("n"), output_field=IntegerField()), 0),
        )
        .order_by("-qualification", "position", "item_id")
    )
