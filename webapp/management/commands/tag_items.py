import time
from argparse import ArgumentParser
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Judge, Project, RoutingJob
from webapp.services.routing import RoutingError, active_job
from webapp.services.tagging import count_tagged, run_tagging_job, start_tagging


class Command(BaseCommand):
    help = (
        "Tag a project's items with the paper's metadata (subject, expertise, open-endedness, safety, complexity,"
        " in-context material, format constraints, languages) through an OpenAI-compatible judge."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--judge", required=True, help="the judge's name (backend 'openai')")
        parser.add_argument("--force", action="store_true", help="also items tagged with the current prompt")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="tag here instead of on a Celery worker (resumes a job left queued or running)",
        )
        parser.add_argument("--no-wait", action="store_true", help="queue the job for a worker and return")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        judge = Judge.objects.filter(name=opts["judge"]).first()
        if judge is None:
            raise CommandError(f"no judge {opts['judge']!r}")
        job = active_job(project, RoutingJob.TAGGING) if opts["inline"] else None
        if job is not None:
            if job.judge_id != judge.pk:
                raise CommandError(f"tagging job {job.pk} with another judge is still {job.status}; wait for it")
            self.stdout.write(f"resuming tagging job {job.pk}")
        else:
            try:
                job = start_tagging(project, judge, force=opts["force"], enqueue=not opts["inline"])
            except RoutingError as exc:
                raise CommandError(str(exc)) from None
        if not job.total:
            self.stdout.write(f"{project.slug}: nothing to tag ({count_tagged(project)} item(s) tagged already)")
            return
        if not opts["inline"] and opts["no_wait"]:
            self.stdout.write(f"tagging job {job.pk}: {job.total} item(s) queued for a worker")
            return

        def progress(done: int, total: int) -> None:
            self.stdout.write(f"\r{done}/{total} items", ending="")
            self.stdout.flush()

        if opts["inline"]:
            finished = run_tagging_job(job.pk, progress=progress)
        else:
            self.stdout.write(f"tagging job {job.pk}: {job.total} item(s) queued for a worker")
            finished = _wait(job.pk, progress)
        assert finished is not None
        if finished.status == RoutingJob.FAILED:
            raise CommandError(f"tagging job {finished.pk} failed: {finished.error}")
        self.stdout.write(
            f"\n{project.slug}: tagged {finished.done} item(s), {finished.failed} failed"
            f" (job {finished.pk}; {count_tagged(project)} tagged with the current prompt)"
        )


def _wait(job_id: int, progress: Callable[[int, int], None]) -> RoutingJob:
    """Show the job's progress until it ends."""
    while True:
        job = RoutingJob.objects.get(pk=job_id)
        progress(job.done + job.failed, job.total)
        if not job.active:
            return job
        time.sleep(1.0)
