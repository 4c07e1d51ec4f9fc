from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.services.archive import ArchiveError, export_project


class Command(BaseCommand):
    help = (
        "Write a project's archive: its settings, members, items and responses, assignments and human"
        " annotations (with usernames), judges and judgments, runs, routing runs, export snapshots' metadata"
        " and gold items. OUT ending in .tar.gz or .tgz is a tarball, anything else a new directory."
        " import_project reads it back (docs/operations.md, Backups)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("out", help="archive.tar.gz, or a directory that does not exist yet")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            result = export_project(opts["project_slug"], opts["out"])
        except ArchiveError as exc:
            raise CommandError(str(exc)) from None
        counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
        self.stdout.write(f"{opts['project_slug']} -> {result.path}: {counts}")
