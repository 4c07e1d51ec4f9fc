"""Celery tasks: thin wrappers that take ids and call services. Each is safe to run twice."""

from typing import Any

from celery import Task, shared_task

from annotators.backoff import backoff_delay
from webapp.services import judging
from webapp.services.exports import run_snapshot
from webapp.services.imports import run_import_job


@shared_task(name="webapp.run_import")
def run_import(job_id: int) -> str:
    return run_import_job(job_id).status


@shared_task(
    name="webapp.judge_chunk",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=judging.MAX_ATTEMPTS - 1,
)
def judge_chunk(self: Task, run_id: int, item_ids: list[int]) -> dict[str, Any]:
    """Judge a chunk of a run; API errors (429, 5xx, timeouts) come back with backoff and jitter."""
    final = self.request.retries >= (self.max_retries or 0)
    result = judging.judge_chunk(run_id, item_ids, final=final)
    if result.retryable and not final:
        raise self.retry(countdown=backoff_delay(self.request.retries, retry_after=result.retry_after))
    if final:
        judging.finish_chunk_after_last_try(run_id)
    return {"judged": result.judged, "failed": result.failed, "retryable": result.retryable}


@shared_task(name="webapp.run_export", acks_late=True)
def run_export(snapshot_id: int) -> str:
    return run_snapshot(snapshot_id).status


@shared_task(name="webapp.compute_features", acks_late=True)
def compute_features(project_id: int) -> int:
    """Routing features for a project's items; resumable (items with features are skipped)."""
    from webapp.models import Project
    from webapp.services.routing import compute_features as compute

    project = Project.objects.filter(pk=project_id).first()
    return compute(project) if project is not None else 0


@shared_task(name="webapp.tag_items", acks_late=True, reject_on_worker_lost=True)
def tag_items(job_id: int) -> dict[str, Any]:
    """A metadata-tagging job; resumable (what the job stored is skipped on a second run)."""
    from webapp.services.tagging import run_tagging_job

    job = run_tagging_job(job_id)
    return {"status": job.status, "done": job.done, "failed": job.failed} if job else {"status": "missing"}


@shared_task(name="webapp.score_candidates", acks_late=True, reject_on_worker_lost=True)
def score_candidates(job_id: int) -> dict[str, Any]:
    """A proxy-scoring job; resumable (candidates the job scored are skipped on a second run)."""
    from webapp.services.routing import run_proxy_job

    job = run_proxy_job(job_id)
    return {"status": job.status, "done": job.done, "failed": job.failed} if job else {"status": "missing"}
