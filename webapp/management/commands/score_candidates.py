from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.management.routing_jobs import follow_job
from webapp.models import Project, RoutingJob
from webapp.services.routing import RoutingError, active_job, run_proxy_job, start_proxy_scoring


class Command(BaseCommand):
    help = (
        "Score routing candidates with the in-platform CPU proxy (a Bradley-Terry reward model on response"
        " embeddings, trained on each candidate's hybrid labels, scored on the human reference)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--candidates", type=int, nargs="+", help="these candidate ids (default: all unscored)")
        parser.add_argument("--new", type=int, default=0, help="first make this many candidates at spread budgets")
        parser.add_argument("--seed", type=int, default=0, help="the new candidates' first seed")
        parser.add_argument("--judge", help="the AI labels' judge (needed when several judged the project)")
        parser.add_argument("--force", action="store_true", help="also rescore candidates that have a score")
        parser.add_argument(
            "--inline",
            action="store_true",
            help="score here instead of on a Celery worker (resumes a job left queued or running)",
        )
        parser.add_argument("--no-wait", action="store_true", help="queue the job for a worker and return")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        job = active_job(project, RoutingJob.PROXY) if opts["inline"] else None
        if job is not None:
            self.stdout.write(f"resuming proxy job {job.pk}")
        else:
            try:
                job = start_proxy_scoring(
                    project,
                    judge=opts["judge"],
                    candidate_ids=opts["candidates"],
                    new=opts["new"],
                    seed=opts["seed"],
                    force=opts["force"],
                    enqueue=not opts["inline"],
                )
            except RoutingError as exc:
                raise CommandError(str(exc)) from None
        if not job.total:
            self.stdout.write(f"{project.slug}: nothing to score (every candidate has a score; --force rescores)")
            return
        finished = follow_job(
            self,
            job,
            inline=opts["inline"],
            no_wait=opts["no_wait"],
            run_inline=run_proxy_job,
            label="proxy job",
            unit="candidate",
        )
        if finished is None:
            return
        self.stdout.write(
            f"\n{project.slug}: scored {finished.done} candidate(s) with the proxy, {finished.failed} failed"
            f" (job {finished.pk})"
        )
