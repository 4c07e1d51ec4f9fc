from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.management.routing_jobs import follow_job
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
        finished = follow_job(
            self,
            job,
            inline=opts["inline"],
            no_wait=opts["no_wait"],
            run_inline=run_tagging_job,
            label="tagging job",
            unit="item",
        )
        if finished is None:
            return
        self.stdout.write(
            f"\n{project.slug}: tagged {finished.done} item(s), {finished.failed} failed"
            f" (job {finished.pk}; {count_tagged(project)} tagged with the current prompt)"
        )
