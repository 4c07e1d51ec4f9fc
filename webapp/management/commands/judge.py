import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotators.backoff import backoff_delay
from webapp import selectors
from webapp.models import Judge, JudgeRun, Project
from webapp.services import judging


class Command(BaseCommand):
    help = (
        "Judge a project's items with an LLM judge. The work goes to the Celery workers; this shows a "
        "progress bar until the run ends. Ctrl+C cancels the run. --inline judges in this process. --resume"
        " sends the open units of the judge's queued or running run again (after a broker outage)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--judge", required=True, help="the judge's name (see create_judge)")
        parser.add_argument("--limit", type=int, help="judge at most N not-yet-judged items")
        parser.add_argument("--orders", choices=JudgeRun.ORDERS, default=JudgeRun.BOTH)
        parser.add_argument("--chunk-size", type=int, default=16)
        parser.add_argument("--inline", action="store_true", help="judge here instead of on the workers")
        parser.add_argument("--no-wait", action="store_true", help="queue the run and return")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="no new run: send the open units of this judge's queued or running run to the workers again",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        judge = Judge.objects.filter(name=opts["judge"]).first()
        if judge is None:
            raise CommandError(f"no judge {opts['judge']!r} (create it with create_judge)")
        if opts["resume"] and opts["inline"]:
            raise CommandError("--resume sends a run to the workers; it does not go with --inline")
        if opts["resume"]:
            run = self._resume(project, judge)
        else:
            try:
                run = judging.start_run(
                    project,
                    judge,
                    limit=opts["limit"],
                    orders=opts["orders"],
                    chunk_size=opts["chunk_size"],
                    enqueue=not opts["inline"],
                )
            except judging.JudgingError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"run {run.pk}: {judge.name} on {run.items_total} item(s) of {project.slug}")
        unsent = judging.enqueue_error(run)
        if unsent:
            raise CommandError(
                f"run {run.pk} is saved ({run.status}) but could not be sent to the workers: {unsent}."
                f" Once the broker is back: manage.py judge {project.slug} --judge {judge.name} --resume"
            )
        if opts["no_wait"] or run.status == JudgeRun.DONE:
            self._summary(run)
            return
        try:
            if opts["inline"]:
                self._inline(run)
            while True:
                run.refresh_from_db()
                progress = selectors.run_progress(run)
                self._bar(progress)
                if run.status in (JudgeRun.DONE, JudgeRun.CANCELLED):
                    break
                time.sleep(1.0)
        except KeyboardInterrupt:
            judging.cancel_run(run)
            self.stdout.write("\ncancelled")
        self.stdout.write("")
        self._summary(run)

    def _resume(self, project: Project, judge: Judge) -> JudgeRun:
        run = JudgeRun.objects.filter(
            project=project, judge=judge, status__in=(JudgeRun.QUEUED, JudgeRun.RUNNING)
        ).first()
        if run is None:
            raise CommandError(f"no queued or running run of {judge.name!r} on {project.slug} to resume")
        try:
            n = judging.resume_run(run)
        except judging.JudgingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {run.pk}: {n} item(s) with open units sent to the workers again")
        return run

    def _inline(self, run: JudgeRun) -> None:
        """The workers' loop, in this process: each chunk with its retries."""
        for chunk in judging.run_chunks(run):
            for attempt in range(judging.MAX_ATTEMPTS):
                final = attempt == judging.MAX_ATTEMPTS - 1
                result = judging.judge_chunk(run.pk, chunk, final=final)
                if not result.retryable or final:
                    break
                time.sleep(backoff_delay(attempt, retry_after=result.retry_after))
            run.refresh_from_db()
            self._bar(selectors.run_progress(run))
            if run.status == JudgeRun.CANCELLED:
                return
        judging.finish_chunk_after_last_try(run.pk)

    def _bar(self, p: "selectors.RunProgress") -> None:
        width = 30
        filled = int(width * p.finished / p.total) if p.total else width
        eta = f" ETA {p.eta_s:.0f}s" if p.eta_s is not None else ""
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {p.finished}/{p.total}"
            f" done {p.done} failed {p.failed} remaining {p.remaining}{eta}   "
        )
        self.stdout.write(line, ending="")
        self.stdout.flush()

    def _summary(self, run: JudgeRun) -> None:
        run.refresh_from_db()
        p = selectors.run_progress(run)
        self.stdout.write(
            f"run {run.pk} {run.status}: {p.done} done, {p.failed} failed, {p.remaining} remaining;"
            f" {p.prompt_tokens} prompt + {p.completion_tokens} completion tokens, cost ${p.cost}"
        )
