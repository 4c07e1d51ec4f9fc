from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.importing.formats import FORMATS
from webapp.importing.readers import FILE_TYPES
from webapp.models import Project
from webapp.services.imports import ImportFailed, import_file


class Command(BaseCommand):
    help = "Import items (and any labels they carry) into a project from JSONL, JSON, CSV or Parquet."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("file")
        parser.add_argument("--format", default="native", help=f"one of: {', '.join(FORMATS)}")
        parser.add_argument("--file-type", default=None, help=f"override the extension: {', '.join(FILE_TYPES)}")
        parser.add_argument("--update", action="store_true", help="rewrite items whose content changed")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            project = Project.objects.get(slug=opts["project_slug"])
        except Project.DoesNotExist:
            raise CommandError(f"no project {opts['project_slug']!r}") from None
        try:
            result = import_file(
                project, opts["file"], fmt=opts["format"], file_type=opts["file_type"], update=opts["update"]
            )
        except ImportFailed as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{project.slug}: {result.created} created, {result.updated} updated, {result.unchanged} unchanged"
        )
        if result.changed_not_updated:
            shown = ", ".join(result.changed_not_updated[:10])
            self.stdout.write(
                f"{len(result.changed_not_updated)} item(s) differ from the file and were left as they are "
                f"(re-run with --update to apply): {shown}"
            )
