"""Metadata tags (the paper's LLM "analyzer") through a configured judge: jobs, requests, storage.

Each item's prompt goes to an OpenAI-compatible judge with the tagging prompt of
`routing.features.build_tagging_messages` (temperature 0, `tagging_schema` as response_format where the
judge's `structured` setting and the server allow), `concurrency` requests at a time, through the judge's
HTTP client, rate limit, retries and API key (`OpenAIJudge.chat`). `parse_tags` reads each reply.

Stored per item, merged into Item.features without touching its other keys:

- ``features["tags"]``: the parsed tags (routing turns them into one-hot features);
- ``features["tagging"]``: ``{"version": TAGGING_PROMPT_VERSION, "judge", "model", "job", "at",
  "prompt_tokens", "completion_tokens"}``, and on a failure ``"error"``, ``"raw"`` (the reply, cut to
  2,000 characters) and ``"retryable"`` (an API error that outlasted the retries) instead of new tags;
  tags from an earlier success stay.

An item counts as tagged when its ``tagging`` has the current prompt version and no error; tagged items
are skipped unless ``force``. A failure is the item's alone: the others are stored, and a later run
(without force) tries the failed items again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotators.openai_backend import ChatFailed, OpenAIJudge
from webapp.models import Item, Judge, Project, RoutingJob
from webapp.services import judging
from webapp.services.routing import (
    RoutingError,
    claim_job,
    create_job,
    enqueue_job,
    finish_job,
    merge_item_features,
    prompt_text,
)

RAW_LIMIT = 2000
ERROR_LIMIT = 500

_WHY_NOT = {
    Judge.GENERATIVE: (
        "a local generative judge (transformers-judge): it reads the next-token probabilities of the letters"
        " A and B and has no text generation, so it cannot write the tags"
    ),
    Judge.REWARD_MODEL: "a reward model: it scores responses and cannot write text",
    Judge.DENSITY_RATIO: "a density-ratio judge: it scores responses and cannot write text",
    Judge.JURY: "a jury: tag with one of its OpenAI-compatible members instead",
    Judge.EXTERNAL: "an imported dataset's judge: it cannot be run",
}


class TaggingError(RoutingError):
    """A tagging request that cannot be carried out; the message says why."""


@dataclass
class TaggingResult:
    tagged: int = 0
    failed: int = 0
    skipped: int = 0  # already tagged with this prompt version (without force), or handled by this job


def tagging_backend(judge: Judge) -> OpenAIJudge:
    """The judge's OpenAI-compatible backend; TaggingError naming the judge's kind for any other."""
    if judge.backend != Judge.OPENAI:
        why = _WHY_NOT.get(judge.backend, f"a {judge.backend} judge")
        raise TaggingError(
            f"judge {judge.name!r} is {why}; tagging needs an OpenAI-compatible judge (backend 'openai')"
        )
    if not judge.active:
        raise TaggingError(f"judge {judge.name!r} is switched off")
    try:
        backend = judging.backend_for(judge)
    except ValueError as exc:
        raise TaggingError(f"judge {judge.name!r}: {exc}") from None
    assert isinstance(backend, OpenAIJudge)
    return backend


def _to_tag(
    project: Project, *, item_ids: Sequence[int] | None, force: bool, job: RoutingJob | None
) -> tuple[list[int], int]:
    """(the ids of the items to tag, how many were skipped)."""
    from routing.features import TAGGING_PROMPT_VERSION

    items: QuerySet[Item] = project.items.all()
    if item_ids is not None:
        items = items.filter(id__in=list(item_ids))
    considered = items.count()
    if job is not None:
        items = items.exclude(id__in=project.items.filter(features__tagging__job=job.pk).values("id"))
    if not force:
        tagged = project.items.filter(features__tagging__version=TAGGING_PROMPT_VERSION).exclude(
            features__tagging__has_key="error"
        )
        items = items.exclude(id__in=tagged.values("id"))
    ids = list(items.order_by("id").values_list("id", flat=True))
    return ids, considered - len(ids)


def count_tagged(project: Project) -> int:
    """Items tagged with the current prompt version."""
    from routing.features import TAGGING_PROMPT_VERSION

    return (
        project.items.filter(features__tagging__version=TAGGING_PROMPT_VERSION)
        .exclude(features__tagging__has_key="error")
        .count()
    )


def _ask(backend: OpenAIJudge, prompt: str) -> dict[str, Any]:
    """One item's tagging request: {"tags": ...} or {"error": ..., "raw": ...}, with token counts."""
    from routing.features import build_tagging_messages, parse_tags, tagging_schema

    if not prompt.strip():
        return {"error": "the item has no prompt to tag", "raw": ""}
    try:
        reply = backend.chat(
            build_tagging_messages(prompt), schema=tagging_schema(), schema_name="tags", temperature=0.0
        )
    except ChatFailed as exc:
        return {"error": str(exc)[:ERROR_LIMIT], "raw": "", "retryable": exc.retryable}
    usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
    try:
        tags = parse_tags(reply.text)
    except ValueError as exc:
        cut = f" (output cut at max_tokens={backend.max_tokens})" if reply.finish_reason == "length" else ""
        return {"error": f"unreadable tags: {exc}{cut}"[:ERROR_LIMIT], "raw": reply.text[:RAW_LIMIT], **usage}
    return {"tags": tags, **usage}


def tag_items(
    project: Project,
    judge: Judge,
    *,
    item_ids: Sequence[int] | None = None,
    force: bool = False,
    job: RoutingJob | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TaggingResult:
    """Tag the project's items (or the given ones) with the judge, storing each item's tags or failure.

    Items tagged with the current prompt version are skipped unless force; with a job, items the job has
    handled already are skipped too, and its done/failed counts move with every stored batch.
    """
    from routing.features import TAGGING_PROMPT_VERSION

    backend = tagging_backend(judge)
    ids, skipped = _to_tag(project, item_ids=item_ids, force=force, job=job)
    result = TaggingResult(skipped=skipped)
    batch_size = max(8, 4 * backend.concurrency)
    for start in range(0, len(ids), batch_size):
        batch = list(Item.objects.filter(id__in=ids[start : start + batch_size]).order_by("id"))
        prompts = [prompt_text(item) for item in batch]
        if backend.concurrency > 1 and len(batch) > 1:
            with ThreadPoolExecutor(max_workers=min(backend.concurrency, len(batch))) as pool:
                answers = list(pool.map(lambda p: _ask(backend, p), prompts))
        else:
            answers = [_ask(backend, p) for p in prompts]
        at = timezone.now().isoformat()
        updates: dict[int, dict[str, Any]] = {}
        for item, answer in zip(batch, answers, strict=True):
            record: dict[str, Any] = {
                "version": TAGGING_PROMPT_VERSION,
                "judge": judge.name,
                "model": judge.model,
                "job": job.pk if job else None,
                "at": at,
                "prompt_tokens": answer.get("prompt_tokens"),
                "completion_tokens": answer.get("completion_tokens"),
            }
            if "tags" in answer:
                updates[item.pk] = {"tags": answer["tags"], "tagging": record}
            else:
                record.update(error=answer["error"], raw=answer.get("raw", ""), retryable=bool(answer.get("retryable")))
                updates[item.pk] = {"tagging": record}
        tagged, failed = _store(updates, judge, job)
        result.tagged += tagged
        result.failed += failed
        if progress:
            progress(result.tagged + result.failed, len(ids))
    return result


def _store(updates: dict[int, dict[str, Any]], judge: Judge, job: RoutingJob | None) -> tuple[int, int]:
    """Write a batch's tags and failures and move the job's counts, in one transaction."""
    with transaction.atomic():
        locked = None
        if job is not None:
            # The job row's lock orders two runs of the same job; items either stored are left alone.
            locked = RoutingJob.objects.select_for_update().get(pk=job.pk)
            handled = set(
                Item.objects.filter(id__in=list(updates), features__tagging__job=job.pk).values_list("id", flat=True)
            )
            updates = {k: v for k, v in updates.items() if k not in handled}
        merge_item_features(updates)
        tagged = sum(1 for u in updates.values() if "tags" in u)
        failed = len(updates) - tagged
        if locked is not None:
            locked.done += tagged
            locked.failed += failed
            usage = locked.options.setdefault("usage", {"prompt_tokens": 0, "completion_tokens": 0})
            for u in updates.values():
                usage["prompt_tokens"] += u["tagging"].get("prompt_tokens") or 0
                usage["completion_tokens"] += u["tagging"].get("completion_tokens") or 0
            cost = judging.token_cost(judge, usage["prompt_tokens"], usage["completion_tokens"]) or Decimal(0)
            locked.options["cost"] = str(cost)
            locked.save(update_fields=["done", "failed", "options"])
    return tagged, failed


# --- jobs -----------------------------------------------------------------------------------------


def start_tagging(
    project: Project,
    judge: Judge,
    *,
    item_ids: Sequence[int] | None = None,
    force: bool = False,
    user: Any = None,
    enqueue: bool = True,
) -> RoutingJob:
    """Queue a tagging job for the items not tagged yet with the current prompt (all of them with force).

    The job's total is 0, and it is done at once, when there is nothing to tag.
    """
    from routing.features import TAGGING_PROMPT_VERSION

    tagging_backend(judge)  # refuse here, not on the worker, a judge that cannot tag
    with transaction.atomic():
        ids, _ = _to_tag(project, item_ids=item_ids, force=force, job=None)
        job = create_job(
            project,
            RoutingJob.TAGGING,
            judge=judge,
            created_by=user if getattr(user, "pk", None) else None,
            force=force,
            options={
                "item_ids": list(item_ids) if item_ids is not None else None,
                "prompt_version": TAGGING_PROMPT_VERSION,
                "judge": judge.name,
            },
            total=len(ids),
        )
        if not ids:
            finish_job(job)
        elif enqueue:
            enqueue_job(job)
    return job


def run_tagging_job(job_id: int, *, progress: Callable[[int, int], None] | None = None) -> RoutingJob | None:
    """Run a tagging job (the Celery task's body, or --inline). Safe to run twice: what the job stored is
    skipped, and its counts only move for newly stored items."""
    job = claim_job(job_id, RoutingJob.TAGGING)
    if job is None:
        return RoutingJob.objects.filter(pk=job_id).first()
    if job.judge is None:
        return finish_job(job, error=f"the judge {job.options.get('judge')!r} was deleted")
    try:
        with transaction.atomic():
            locked = RoutingJob.objects.select_for_update().get(pk=job.pk)
            todo, _ = _to_tag(job.project, item_ids=job.options.get("item_ids"), force=job.force, job=job)
            # What this job handles: what it stored before a restart, and what is left now.
            locked.total = locked.done + locked.failed + len(todo)
            locked.save(update_fields=["total"])
        tag_items(
            job.project,
            job.judge,
            item_ids=todo,
            force=True,  # todo is already the list to tag
            job=job,
            progress=progress,
        )
    except RoutingError as exc:
        return finish_job(job, error=str(exc))
    except Exception as exc:
        finish_job(job, error=f"{type(exc).__name__}: {exc}")
        raise
    return finish_job(job)
