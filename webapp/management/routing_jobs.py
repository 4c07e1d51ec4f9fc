"""What `manage.py tag_items` and `manage.py score_candidates` share: run a routing job here, or wait for a
worker to run it, with a progress line."""

import time
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError

from webapp.models import RoutingJob

Progress = Callable[[int, int], None]


def wait_for_job(job_id: int, progress: Progress) -> RoutingJob:
    """Show the job's progress until it ends."""
    while True:
        job = RoutingJob.objects.get(pk=job_id)
        progress(job.done + job.failed, job.total)
        if not job.active:
            return job
        time.sleep(1.0)


def follow_job(
    command: BaseCommand,
    job: RoutingJob,
    *,
    inline: bool,
    no_wait: bool,
    run_inline: Callable[..., RoutingJob | None],
    label: str,
    unit: str,
) -> RoutingJob | None:
    """Run the job in this process (inline) or wait for a worker's; None when left to the worker (no_wait).

    CommandError when the job failed. `label` names the job ("tagging job"), `unit` what it counts ("item").
    """
    if not inline and no_wait:
        command.stdout.write(f"{label} {job.pk}: {job.total} {unit}(s) queued for a worker")
        return None

    def progress(done: int, total: int) -> None:
        command.stdout.write(f"\r{done}/{total} {unit}s", ending="")
        command.stdout.flush()

    if inline:
        finished = run_inline(job.pk, progress=progress)
    else:
        command.stdout.write(f"{label} {job.pk}: {job.total} {unit}(s) queued for a worker")
        finished = wait_for_job(job.pk, progress)
    if finished is None:
        raise CommandError(f"{label} {job.pk} no longer exists")
    if finished.status == RoutingJob.FAILED:
        raise CommandError(f"{label} {finished.pk} failed: {finished.error}")
    return finished
