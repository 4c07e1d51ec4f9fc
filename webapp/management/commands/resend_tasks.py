from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Project
from webapp.services.dispatch import resend_unsent


class Command(BaseCommand):
    help = (
        "Send again the tasks of import jobs and export snapshots whose send failed while the task queue"
        " (the broker) was down. Exits with status 1 while the broker still fails."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug", nargs="?", help="only this project's (default: every project's)")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = None
        if opts["project_slug"]:
            project = Project.objects.filter(slug=opts["project_slug"]).first()
            if project is None:
                raise CommandError(f"no project {opts['project_slug']!r}")
        sent, left = resend_unsent(project)
        self.stdout.write(f"sent {sent} task(s); {left} still unsent")
        if left:
            raise CommandError("the task queue is still unreachable; run this again once it answers")
