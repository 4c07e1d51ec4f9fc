from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.services.archive import ArchiveError, import_project


class Command(BaseCommand):
    help = (
        "Create a project from an archive written by export_project (a .tar.gz or its directory), with"
        " everything in it, in one transaction. Users missing here are created inactive, without a usable"
        " password; judges missing here are created, existing ones (by name) are used as they are."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("archive")
        parser.add_argument("--slug", help="import under this slug instead of the archived one")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            result = import_project(opts["archive"], slug=opts["slug"])
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
        self.stdout.write(f"{result.project.slug}: {counts}")
        if result.users_created:
            self.stdout.write(
                f"created {len(result.users_created)} inactive user(s), to activate: {', '.join(result.users_created)}"
            )
        if result.judges_created:
            self.stdout.write(f"created judge(s): {', '.join(result.judges_created)}")
        for note in result.notes:
            self.stdout.write(f"note: {note}")
