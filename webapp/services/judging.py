"""LLM judging: configure judges, start, run, cancel and retry judge runs.

A run turns into "units": one pending Judgment row per item and shown order (for a jury, one
"combined" row per item). Celery tasks judge chunks of items (webapp.tasks.judge_chunk); a chunk
only ever works on its run's pending or retryable rows, so running it twice does no harm, and the
unique (item, judge, order, prompt version) constraint keeps every verdict once. Labels are
checked by the scheme validator before they are stored; failures are stored as failures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnavailable

from annotators import registry
from annotators.base import JudgeBackend, JudgeItem, JudgeOutcome, JudgeRequest
from annotators.labels import aggregate_jury, combine_orders
from annotators.ratelimit import Limiter, LocalTokenBucket, RedisTokenBucket
from webapp.models import Item, Judge, JudgeRun, Judgment, Project
from webapp.scheme import RANKING, Scheme, SchemeError, validate_annotation

# Tries of a chunk's retryable failures (the first try and Celery's retries).
MAX_ATTEMPTS = 5
COMBINED = Judgment.COMBINED
log = logging.getLogger(__name__)
_ENQUEUE_ERROR = "_enqueue_error"


class JudgingError(ValueError):
    """A judge or a run cannot be set up as asked; the message says which setting."""


# --- judges ---------------------------------------------------------------------------------------


def create_judge(
    *,
    name: str,
    backend: str,
    model: str = "",
    config: dict[str, Any] | None = None,
    members: Sequence[str] = (),
    price_prompt_per_m: Decimal | float | str = 0,
    price_completion_per_m: Decimal | float | str = 0,
    requests_per_minute: int = 0,
    tokens_per_minute: int = 0,
    update: bool = False,
) -> Judge:
    """Create (or with update=True, replace the settings of) a judge after checking its configuration."""
    config = dict(config or {})
    name = name.strip()
    if not name:
        raise JudgingError("name: a judge needs a name")
    if backend not in registry.RUNNABLE_BACKENDS:
        raise JudgingError(f"backend: {backend!r} is not one of {', '.join(registry.RUNNABLE_BACKENDS)}")
    secret_keys = [k for k in config if k.lower() in ("api_key", "apikey", "key", "token", "password")]
    if secret_keys:
        raise JudgingError(
            f"config: {secret_keys[0]!r} looks like a secret; put the key in an environment variable"
            " and name the variable with api_key_env"
        )
    member_judges: list[Judge] = []
    try:
        if backend == registry.JURY:
            registry.validate_jury_config(config)
            member_judges = _jury_members(members, name)
        else:
            if members:
                raise JudgingError("members: only a jury has members")
            registry.build_backend(backend, model, config)
        prices = (Decimal(str(price_prompt_per_m)), Decimal(str(price_completion_per_m)))
    except (ArithmeticError, ValueError) as exc:
        raise JudgingError(str(exc)) from None
    if min(prices) < 0 or min(requests_per_minute, tokens_per_minute) < 0:
        raise JudgingError("prices and rate limits cannot be negative")
    values = {
        "backend": backend,
        "model": model,
        "config": config,
        "price_prompt_per_m": prices[0],
        "price_completion_per_m": prices[1],
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
    }
    with transaction.atomic():
        existing = Judge.objects.filter(name=name).first()
        if existing and not update:
            raise JudgingError(f"name: a judge called {name!r} exists (use update to change it)")
        if existing and existing.backend == Judge.EXTERNAL:
            raise JudgingError(f"name: {name!r} is an imported dataset's judge and cannot be run")
        if existing:
            for key, value in values.items():
                setattr(existing, key, value)
            existing.save()
            judge = existing
        else:
            judge = Judge.objects.create(name=name, **values)
        judge.members.set(member_judges)
    return judge


def _jury_members(names: Sequence[str], jury_name: str) -> list[Judge]:
    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2:
        raise JudgingError("members: a jury needs at least two judges")
    found = {j.name: j for j in Judge.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise JudgingError(f"members: no judge called {', '.join(map(repr, missing))}")
    for judge in found.values():
        if judge.name == jury_name or judge.backend in (Judge.JURY, Judge.EXTERNAL):
            raise JudgingError(f"members: {judge.name!r} ({judge.backend}) cannot sit on a jury")
    return [found[n] for n in names]


# One backend object per judge configuration and process: local models load once per worker.
_backends: dict[str, JudgeBackend] = {}
_local_limiters: dict[str, LocalTokenBucket] = {}
_cache_lock = threading.Lock()


def _config_key(judge: Judge) -> str:
    blob = [judge.pk, judge.backend, judge.model, judge.config, judge.requests_per_minute, judge.tokens_per_minute]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def backend_for(judge: Judge) -> JudgeBackend:
    key = _config_key(judge)
    with _cache_lock:
        if key not in _backends:
            _backends[key] = registry.build_backend(
                judge.backend, judge.model, judge.config, limiter=limiter_for(judge)
            )
        return _backends[key]


def limiter_for(judge: Judge) -> Limiter | None:
    """The endpoint's shared rate limit: in Redis when the platform has one, else in this process."""
    if not (judge.requests_per_minute or judge.tokens_per_minute):
        return None
    endpoint = str(judge.config.get("base_url") or judge.name)
    url = settings.RATE_LIMIT_REDIS_URL
    if url:
        import redis

        return RedisTokenBucket(
            redis.Redis.from_url(url),
            endpoint,
            requests_per_minute=judge.requests_per_minute,
            tokens_per_minute=judge.tokens_per_minute,
        )
    with _cache_lock:
        key = f"{endpoint}|{judge.requests_per_minute}|{judge.tokens_per_minute}"
        if key not in _local_limiters:
            _local_limiters[key] = LocalTokenBucket(
                requests_per_minute=judge.requests_per_minute, tokens_per_minute=judge.tokens_per_minute
            )
        return _local_limiters[key]


def prompt_version_for(judge: Judge) -> str:
    if judge.backend == Judge.JURY:
        rule = registry.validate_jury_config(judge.config)
        members = [(m.name, prompt_version_for(m)) for m in judge.members.all()]
        return registry.jury_prompt_version(rule, members)
    return backend_for(judge).prompt_version


# --- runs -----------------------------------------------------------------------------------------


def order_keys(n_responses: int, orders: str) -> list[str]:
    """The shown orders a run asks for: as imported, and (for "both") reversed."""
    given = "-".join(str(i) for i in range(n_responses))
    if orders == JudgeRun.GIVEN or n_responses < 2:
        return [given]
    return [given, "-".join(str(i) for i in reversed(range(n_responses)))]


def start_run(
    project: Project,
    judge: Judge,
    *,
    limit: int | None = None,
    orders: str = JudgeRun.BOTH,
    user: Any = None,
    chunk_size: int = 16,
    enqueue: bool = True,
) -> JudgeRun:
    """Queue a judge on the project's items it has not judged yet (at most `limit` of them).

    enqueue=False leaves the chunks to the caller (see run_chunks), e.g. `manage.py judge --inline`.
    """
    if judge.backend not in Judge.RUNNABLE:
        raise JudgingError(f"judge: {judge.name!r} ({judge.backend}) is not a runnable judge")
    if not judge.active:
        raise JudgingError(f"judge: {judge.name!r} is switched off")
    if orders not in JudgeRun.ORDERS:
        raise JudgingError(f"orders: {orders!r} is not one of {', '.join(JudgeRun.ORDERS)}")
    if limit is not None and limit < 1:
        raise JudgingError("limit: must be at least 1")
    if chunk_size < 1:
        raise JudgingError("chunk_size: must be at least 1")
    scheme = project.scheme()
    if judge.backend == Judge.GENERATIVE and scheme.kind == RANKING:
        raise JudgingError("judge: the local generative judge labels pairwise items; use a reward model for ranking")
    try:
        version = prompt_version_for(judge)
    except ValueError as exc:
        raise JudgingError(str(exc)) from None
    with transaction.atomic():
        # One active run per judge and project: two would fight over the same rows.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        active = JudgeRun.objects.filter(
            project=project, judge=judge, status__in=(JudgeRun.QUEUED, JudgeRun.RUNNING)
        ).first()
        if active:
            raise JudgingError(f"judge: run {active.pk} of {judge.name!r} on this project is still going")
        run = JudgeRun.objects.create(
            project=project,
            judge=judge,
            created_by=user if getattr(user, "pk", None) else None,
            orders=orders,
            prompt_version=version,
            limit=limit,
            chunk_size=chunk_size,
        )
        judged = Judgment.objects.filter(judge=judge, prompt_version=version, order=COMBINED, status=Judgment.DONE)
        items = project.items.exclude(id__in=judged.values("item_id")).order_by("id")
        if limit:
            items = items[:limit]
        item_ids = list(items.values_list("id", flat=True))
        _create_units(run, judge, version, item_ids, unit_orders=None if judge.backend != Judge.JURY else [COMBINED])
        run.items_total = len(item_ids)
        if not item_ids:
            run.status, run.finished_at = JudgeRun.DONE, timezone.now()
        run.save(update_fields=["items_total", "status", "finished_at"])
        if item_ids and enqueue:
            _enqueue(run, item_ids)
    return run


def run_chunks(run: JudgeRun) -> list[list[int]]:
    """The run's items with open units, in chunks of the run's size."""
    units = Judgment.objects.filter(run=run, judge=run.judge, status=Judgment.PENDING)
    item_ids = sorted(set(units.values_list("item_id", flat=True)))
    return [item_ids[i : i + run.chunk_size] for i in range(0, len(item_ids), run.chunk_size)]


def _n_responses(item_ids: Sequence[int]) -> dict[int, int]:
    from django.db.models import Count

    return dict(Item.objects.filter(id__in=item_ids).annotate(n=Count("responses")).values_list("id", "n"))


def _create_units(
    run: JudgeRun,
    judge: Judge,
    version: str,
    item_ids: Sequence[int],
    *,
    unit_orders: list[str] | None,
    reset_failed: bool = True,
) -> None:
    """Pending rows for each item and order, owned by the run; failed rows go back to pending."""
    sizes = _n_responses(item_ids) if unit_orders is None else {}
    wanted: list[Judgment] = []
    for item_id in item_ids:
        keys = unit_orders or order_keys(sizes.get(item_id, 0), run.orders)
        wanted.extend(Judgment(item_id=item_id, judge=judge, order=k, prompt_version=version, run=run) for k in keys)
    for start in range(0, len(wanted), 2000):
        Judgment.objects.bulk_create(wanted[start : start + 2000], ignore_conflicts=True)
    if not reset_failed:
        return
    keys_wanted = {w.order for w in wanted}
    Judgment.objects.filter(item_id__in=item_ids, judge=judge, prompt_version=version, order__in=keys_wanted).exclude(
        status=Judgment.DONE
    ).update(run=run, status=Judgment.PENDING, error="", retryable=False, attempts=0, updated_at=timezone.now())


def _enqueue(run: JudgeRun, item_ids: Sequence[int]) -> None:
    """Send the chunks to the workers once the transaction commits.

    The run and its pending units are in the database before anything is sent, so a broker that cannot be
    reached loses nothing: the run stays queued, enqueue_error(run) says why (for the caller to show), and
    resume_run (`manage.py judge SLUG --judge NAME --resume`) sends its open units once the broker is back.
    """
    setattr(run, _ENQUEUE_ERROR, "")
    transaction.on_commit(lambda: _send(run, list(item_ids)))


def _send(run: JudgeRun, item_ids: list[int]) -> None:
    from webapp.tasks import judge_chunk  # tasks import services, not the other way round

    chunks = [item_ids[i : i + run.chunk_size] for i in range(0, len(item_ids), run.chunk_size)]
    setattr(run, _ENQUEUE_ERROR, "")
    sent = 0
    try:
        for chunk in chunks:
            judge_chunk.delay(run.pk, chunk)
            sent += 1
    except (BrokerUnavailable, OSError) as exc:
        setattr(run, _ENQUEUE_ERROR, f"the task queue is unreachable ({exc})")
        log.warning(
            "run %s: %d of %d chunk(s) sent, then the broker failed (%s); the run stays %s until"
            " `manage.py judge %s --judge %s --resume` sends it again",
            run.pk,
            sent,
            len(chunks),
            exc,
            run.status,
            run.project.slug,
            run.judge.name,
        )


def enqueue_error(run: JudgeRun) -> str:
    """Why this run object's chunks could not be sent to the workers just now ("": they were, or none were)."""
    return str(getattr(run, _ENQUEUE_ERROR, ""))


def open_units(run: JudgeRun) -> list[int]:
    """The run's items with a unit still to judge: pending, or failed with tries left."""
    units = Judgment.objects.filter(run=run, judge=run.judge)
    units = units.filter(order=COMBINED) if run.judge.backend == Judge.JURY else units.exclude(order=COMBINED)
    waiting = Q(status=Judgment.PENDING) | Q(status=Judgment.FAILED, retryable=True, attempts__lt=MAX_ATTEMPTS)
    return sorted(set(units.filter(waiting).values_list("item_id", flat=True)))


def resume_run(run: JudgeRun) -> int:
    """Send a queued or running run's open units to the workers again; returns how many items go.

    For a run whose chunks never reached the broker (it was down when the run started) or were lost with it
    (a Redis restarted without its data). Safe to use on a run that is still moving: a chunk only judges
    rows that are still open, so a chunk sent twice judges nothing twice (at worst, two workers that take
    the same chunk at the same moment both ask the endpoint). Raises JudgingError for a finished run;
    enqueue_error(run) says so when the broker is still unreachable.
    """
    with transaction.atomic():
        locked = JudgeRun.objects.select_for_update().select_related("project", "judge").get(pk=run.pk)
        if locked.status not in (JudgeRun.QUEUED, JudgeRun.RUNNING):
            raise JudgingError(f"run {locked.pk} is {locked.status}; only a queued or running run can be resumed")
        item_ids = open_units(locked)
        if not item_ids:
            _finish_if_done(locked)
    run.refresh_from_db()
    # The run and its units are committed already: sent now, not on a commit (the caller may be in a transaction).
    setattr(run, _ENQUEUE_ERROR, "")
    if item_ids:
        _send(run, item_ids)
    return len(item_ids)


def cancel_run(run: JudgeRun) -> JudgeRun:
    """Stop a run: chunks not started yet do nothing; what was judged stays."""
    updated = JudgeRun.objects.filter(pk=run.pk, status__in=(JudgeRun.QUEUED, JudgeRun.RUNNING)).update(
        status=JudgeRun.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    if not updated:
        raise JudgingError(f"run {run.pk} is {run.status}; only a queued or running run can be cancelled")
    return run


def retry_failed(run: JudgeRun) -> int:
    """Put a finished run's failed units back in the queue; returns how many items go again."""
    asked = run
    with transaction.atomic():
        run = JudgeRun.objects.select_for_update().get(pk=run.pk)
        failed = Judgment.objects.filter(run=run, status=Judgment.FAILED)
        if run.judge.backend == Judge.JURY:
            failed = failed.filter(judge=run.judge, order=COMBINED)
        item_ids = sorted(set(failed.values_list("item_id", flat=True)))
        if not item_ids:
            return 0
        failed.update(status=Judgment.PENDING, error="", retryable=False, attempts=0, updated_at=timezone.now())
        if run.judge.backend == Judge.JURY:
            for member in run.judge.members.all():
                Judgment.objects.filter(
                    item_id__in=item_ids,
                    judge=member,
                    prompt_version=prompt_version_for(member),
                    status=Judgment.FAILED,
                ).update(status=Judgment.PENDING, error="", retryable=False, attempts=0, updated_at=timezone.now())
        run.status, run.finished_at = JudgeRun.RUNNING, None
        run.save(update_fields=["status", "finished_at"])
        _enqueue(run, item_ids)
    setattr(asked, _ENQUEUE_ERROR, enqueue_error(run))
    return len(item_ids)


# --- judging a chunk ------------------------------------------------------------------------------


@dataclass
class ChunkResult:
    judged: int = 0
    failed: int = 0
    # Failures worth another try (API errors), and the longest wait a server asked for.
    retryable: int = 0
    retry_after: float | None = None
    skipped: bool = False


def judge_chunk(run_id: int, item_ids: Sequence[int], *, final: bool = False) -> ChunkResult:
    """Judge a chunk of a run's items. Safe to call again: only pending or retryable rows are judged.

    final=True (the last try) leaves retryable failures as failures instead of asking for a retry.
    """
    run = JudgeRun.objects.select_related("judge", "project").filter(pk=run_id).first()
    if run is None or run.status in (JudgeRun.CANCELLED, JudgeRun.DONE):
        return ChunkResult(skipped=True)
    JudgeRun.objects.filter(pk=run.pk, status=JudgeRun.QUEUED).update(
        status=JudgeRun.RUNNING, started_at=timezone.now()
    )
    scheme = run.project.scheme()
    items = _judge_items(item_ids)
    result = ChunkResult()
    if run.judge.backend == Judge.JURY:
        _judge_jury(run, scheme, items, result, final=final)
    else:
        _judge_with(run, run.judge, run.prompt_version, scheme, items, result)
        _combine_orders(run, run.judge, run.prompt_version, scheme, list(items))
    _finish_if_done(run)
    return result


def _judge_items(item_ids: Sequence[int]) -> dict[int, JudgeItem]:
    items = Item.objects.filter(id__in=item_ids).prefetch_related("responses")
    out: dict[int, JudgeItem] = {}
    for item in items:
        conversation = item.conversation or [{"role": "user", "content": item.prompt}]
        responses = tuple(r.text for r in sorted(item.responses.all(), key=lambda r: r.position))
        out[item.pk] = JudgeItem(
            item_id=item.pk,
            conversation=tuple(
                {"role": str(t.get("role", "user")), "content": str(t.get("content", ""))} for t in conversation
            ),
            responses=responses,
        )
    return out


def _judge_with(
    run: JudgeRun, judge: Judge, version: str, scheme: Scheme, items: dict[int, JudgeItem], result: ChunkResult
) -> None:
    """Judge the run's open rows of one judge for these items and store the outcomes."""
    open_rows = list(
        Judgment.objects.filter(item_id__in=list(items), judge=judge, prompt_version=version)
        .exclude(order=COMBINED)
        .filter(Q(status=Judgment.PENDING) | Q(status=Judgment.FAILED, retryable=True, attempts__lt=MAX_ATTEMPTS))
        .order_by("item_id", "order")
    )
    if not open_rows:
        return
    requests = [
        JudgeRequest(items[row.item_id], tuple(int(i) for i in row.order.split("-")))
        for row in open_rows
        if row.item_id in items
    ]
    outcomes = backend_for(judge).judge(requests, scheme)
    with transaction.atomic():
        for row, outcome in zip(open_rows, outcomes, strict=True):
            _store_outcome(row, outcome, judge, scheme, len(items[row.item_id].responses), run)
            if row.status == Judgment.DONE:
                result.judged += 1
            else:
                result.failed += 1
                if row.retryable:
                    result.retryable += 1
                    if outcome.retry_after:
                        result.retry_after = max(result.retry_after or 0.0, outcome.retry_after)


def _store_outcome(row: Judgment, outcome: JudgeOutcome, judge: Judge, scheme: Scheme, n: int, run: JudgeRun) -> None:
    status, error = outcome.status, outcome.error
    labels: dict[str, Any] = dict(outcome.labels)
    ranking = outcome.ranking
    if status == "done":
        # A judge's labels pass the same validator as a human's.
        payload: dict[str, Any] = {"ranking": ranking} if scheme.kind == RANKING else {"preferences": labels}
        try:
            validate_annotation(scheme, payload, n_responses=n, complete=False)
        except SchemeError as exc:
            status, error = "failed", f"labels do not fit the scheme: {exc}"
    done = status == "done"
    row.status = Judgment.DONE if done else Judgment.FAILED
    row.labels = labels if done and scheme.kind != RANKING else {}
    row.ranking = ranking if done and scheme.kind == RANKING else None
    row.soft = dict(outcome.soft) if done else {}
    row.rationale = outcome.rationale
    row.raw_output = outcome.raw_output
    row.error = "" if done else error or "the judge gave no verdict"
    row.retryable = not done and outcome.retryable
    row.attempts += 1
    row.prompt_tokens = outcome.prompt_tokens
    row.completion_tokens = outcome.completion_tokens
    row.latency_ms = outcome.latency_ms
    row.cost = token_cost(judge, outcome.prompt_tokens, outcome.completion_tokens)
    row.run = run
    row.save()


def token_cost(judge: Judge, prompt_tokens: int | None, completion_tokens: int | None) -> Decimal | None:
    if prompt_tokens is None and completion_tokens is None:
        return None
    usd = (Decimal(prompt_tokens or 0) * judge.price_prompt_per_m) + (
        Decimal(completion_tokens or 0) * judge.price_completion_per_m
    )
    return (usd / Decimal(1_000_000)).quantize(Decimal("0.000001"))


def _combine_orders(run: JudgeRun, judge: Judge, version: str, scheme: Scheme, item_ids: list[int]) -> None:
    """Write each item's combined row once all its orders are judged (MT-Bench: disagreement is a tie)."""
    rows = Judgment.objects.filter(item_id__in=item_ids, judge=judge, prompt_version=version)
    by_item: dict[int, list[Judgment]] = defaultdict(list)
    combined_done: set[int] = set()
    for row in rows:
        if row.order == COMBINED:
            if row.status == Judgment.DONE:
                combined_done.add(row.item_id)
        else:
            by_item[row.item_id].append(row)
    with transaction.atomic():
        for item_id, order_rows in by_item.items():
            if item_id in combined_done or any(r.status != Judgment.DONE for r in order_rows):
                continue
            values = combined_values(scheme, order_rows)
            Judgment.objects.update_or_create(
                item_id=item_id, judge=judge, order=COMBINED, prompt_version=version, defaults={**values, "run": run}
            )


def combined_values(scheme: Scheme, rows: Sequence[Judgment]) -> dict[str, Any]:
    """The combined row's fields from one judge's done rows for one item (one per order)."""
    values: dict[str, Any] = {
        "status": Judgment.DONE,
        "error": "",
        "retryable": False,
        "prompt_tokens": _sum(r.prompt_tokens for r in rows),
        "completion_tokens": _sum(r.completion_tokens for r in rows),
        "cost": _sum(r.cost for r in rows),
        "latency_ms": _sum(r.latency_ms for r in rows),
        "rationale": "\n\n".join(f"[{r.order}] {r.rationale}" for r in rows if r.rationale),
    }
    if scheme.kind == RANKING:
        rankings = [r.ranking for r in rows if r.ranking is not None]
        values["ranking"] = mean_rank(rankings)
        values["labels"] = {}
        values["order_inconsistent"] = len({json.dumps(r) for r in rankings}) > 1
        values["details"] = {"orders": {r.order: r.ranking for r in rows}}
        return values
    combined = combine_orders([r.labels for r in rows], scheme.scale)
    soft: dict[str, float] = {}
    for aspect in combined.labels:
        given = [float(r.soft[aspect]) for r in rows if aspect in (r.soft or {})]
        if given:
            soft[aspect] = sum(given) / len(given)
    values.update(
        labels=combined.labels,
        ranking=None,
        soft=soft,
        order_inconsistent=combined.any_inconsistent,
        details={"inconsistent": combined.inconsistent, "orders": {r.order: r.labels for r in rows}},
    )
    return values


def mean_rank(rankings: Sequence[list[Any]]) -> list[int | list[int]]:
    """Merge rankings by mean position (Borda); responses with equal mean positions tie."""
    positions: dict[int, list[float]] = defaultdict(list)
    for ranking in rankings:
        place = 0
        for entry in ranking:
            group = entry if isinstance(entry, list) else [entry]
            for index in group:
                positions[index].append(place + (len(group) - 1) / 2)
            place += len(group)
    means = sorted((sum(p) / len(p), i) for i, p in positions.items())
    out: list[int | list[int]] = []
    for mean, index in means:
        if out and abs(_last_mean(out, positions) - mean) < 1e-9:
            last = out[-1]
            out[-1] = [*last, index] if isinstance(last, list) else [last, index]
        else:
            out.append(index)
    return out


def _last_mean(out: list[int | list[int]], positions: dict[int, list[float]]) -> float:
    last = out[-1]
    index = last[0] if isinstance(last, list) else last
    return sum(positions[index]) / len(positions[index])


def _sum(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _judge_jury(
    run: JudgeRun, scheme: Scheme, items: dict[int, JudgeItem], result: ChunkResult, *, final: bool
) -> None:
    """Each member judges (its rows are shared with its own runs), then the jury's rule decides."""
    jury = run.judge
    rule = registry.validate_jury_config(jury.config)
    members = list(jury.members.all())
    open_units = set(
        Judgment.objects.filter(run=run, judge=jury, order=COMBINED, item_id__in=list(items))
        .filter(Q(status=Judgment.PENDING) | Q(status=Judgment.FAILED, retryable=True))
        .values_list("item_id", flat=True)
    )
    if not open_units:
        return
    unit_items = {i: items[i] for i in open_units if i in items}
    versions = {m.pk: prompt_version_for(m) for m in members}
    for member in members:
        # Missing rows only: a member's failures are retried by attempts, not reset on every try.
        _create_units(run, member, versions[member.pk], list(unit_items), unit_orders=None, reset_failed=False)
        member_result = ChunkResult()
        _judge_with(run, member, versions[member.pk], scheme, unit_items, member_result)
        _combine_orders(run, member, versions[member.pk], scheme, list(unit_items))
        result.retryable += member_result.retryable
        if member_result.retry_after:
            result.retry_after = max(result.retry_after or 0.0, member_result.retry_after)
    verdicts = {
        (j.judge_id, j.item_id): j
        for j in Judgment.objects.filter(
            item_id__in=list(unit_items), order=COMBINED, judge__in=members, status=Judgment.DONE
        ).filter(prompt_version__in=list(versions.values()))
    }
    member_rows = Judgment.objects.filter(item_id__in=list(unit_items), judge__in=members).exclude(order=COMBINED)
    failures: dict[int, list[str]] = defaultdict(list)
    still_retrying: set[int] = set()
    for row in member_rows.filter(status=Judgment.FAILED):
        if row.prompt_version != versions.get(row.judge_id):
            continue
        failures[row.item_id].append(f"{row.judge_id}: {row.error}")
        if row.retryable and not final:
            still_retrying.add(row.item_id)
    names = {m.pk: m.name for m in members}
    with transaction.atomic():
        for item_id in unit_items:
            if item_id in still_retrying:
                continue
            member_verdicts = [verdicts[(m.pk, item_id)] for m in members if (m.pk, item_id) in verdicts]
            unit = Judgment.objects.get(run=run, judge=jury, order=COMBINED, item_id=item_id)
            unit.attempts += 1
            if not member_verdicts:
                unit.status, unit.error, unit.retryable = Judgment.FAILED, "; ".join(failures[item_id])[:2000], False
                unit.labels, unit.ranking = {}, None
                result.failed += 1
                unit.save()
                continue
            missing = [names[m.pk] for m in members if (m.pk, item_id) not in verdicts]
            details: dict[str, Any] = {"members": {names[v.judge_id]: v.labels or v.ranking for v in member_verdicts}}
            if missing:
                details["missing"] = missing
            if scheme.kind == RANKING:
                unit.ranking = mean_rank([v.ranking for v in member_verdicts if v.ranking is not None])
                unit.labels = {}
            else:
                verdict = aggregate_jury([v.labels for v in member_verdicts], scheme.scale, rule)
                unit.labels = verdict.labels
                details.update(disagreement=verdict.disagreement, votes=verdict.votes, rule=rule)
                unit.order_inconsistent = any(bool(v.order_inconsistent) for v in member_verdicts)
            unit.details = details
            unit.status, unit.error, unit.retryable = Judgment.DONE, "", False
            unit.cost = _sum(v.cost for v in member_verdicts)
            unit.prompt_tokens = _sum(v.prompt_tokens for v in member_verdicts)
            unit.completion_tokens = _sum(v.completion_tokens for v in member_verdicts)
            unit.save()
            result.judged += 1
    if still_retrying:
        # The units wait for their members' retries; flag them so the run is not seen as finished.
        Judgment.objects.filter(run=run, judge=jury, order=COMBINED, item_id__in=still_retrying).update(
            status=Judgment.PENDING
        )


def _finish_if_done(run: JudgeRun, *, final: bool = False) -> None:
    """Mark the run done when no unit is pending and (unless final) no failure awaits a retry."""
    units = Judgment.objects.filter(run=run, judge=run.judge)
    units = units.filter(order=COMBINED) if run.judge.backend == Judge.JURY else units.exclude(order=COMBINED)
    waiting = Q(status=Judgment.PENDING)
    if not final:
        waiting |= Q(status=Judgment.FAILED, retryable=True, attempts__lt=MAX_ATTEMPTS)
    if not units.filter(waiting).exists():
        JudgeRun.objects.filter(pk=run.pk, status=JudgeRun.RUNNING).update(
            status=JudgeRun.DONE, finished_at=timezone.now()
        )


def finish_chunk_after_last_try(run_id: int) -> None:
    """After a chunk's last retry: retryable failures left are final; the run may be done."""
    run = JudgeRun.objects.select_related("judge").filter(pk=run_id).first()
    if run is not None:
        _finish_if_done(run, final=True)
