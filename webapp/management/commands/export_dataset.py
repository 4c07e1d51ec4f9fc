from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.exporting.aggregate import LABEL_SOURCES, RULES
from webapp.exporting.formats import FORMATS, TIES
from webapp.models import ExportSnapshot, Item, Project
from webapp.services.exports import ExportFailed, export_now


class Command(BaseCommand):
    help = "Export a project's labels as a versioned dataset snapshot (files, checksums and a dataset card)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--format", required=True, help=f"one of: {', '.join(FORMATS)}")
        parser.add_argument("--file-type", default="jsonl", help=f"one of: {', '.join(ExportSnapshot.FILE_TYPES)}")
        parser.add_argument("--out", help="a new (or empty) directory for the files; default under var/exports/")
        parser.add_argument(
            "--labels", dest="label_source", default="hybrid", help=f"one of: {', '.join(LABEL_SOURCES)}"
        )
        parser.add_argument("--rule", default="majority", help=f"human consensus: {', '.join(RULES)}")
        parser.add_argument("--judge", dest="ai_judge", help="the AI labels' judge (default: the newest verdict)")
        parser.add_argument("--aspect", default="overall")
        parser.add_argument("--seed", type=int, default=0, help="train/test split seed (the split is by prompt)")
        parser.add_argument("--test-fraction", type=float, default=0.1)
        parser.add_argument("--conversational", action="store_true", help="TRL: message lists instead of strings")
        parser.add_argument("--ties", default="drop", help=f"TRL: {', '.join(TIES)}")
        parser.add_argument("--no-margin", action="store_true", help="TRL: leave out the margin column")
        parser.add_argument(
            "--route", action="append", choices=Item.ROUTES, help="only items on this route (repeatable)"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        options = {
            "label_source": opts["label_source"],
            "rule": opts["rule"],
            "ai_judge": opts["ai_judge"],
            "aspect": opts["aspect"],
            "seed": opts["seed"],
            "test_fraction": opts["test_fraction"],
            "conversational": opts["conversational"],
            "ties": opts["ties"],
            "with_margin": not opts["no_margin"],
        }
        try:
            snapshot = export_now(
                project,
                format=opts["format"],
                file_type=opts["file_type"],
                options=options,
                routes=opts["route"],
                out=opts["out"],
            )
        except ExportFailed as exc:
            raise CommandError(str(exc)) from None
        if snapshot.status != ExportSnapshot.DONE:
            raise CommandError(f"export v{snapshot.version} failed: {snapshot.error}")
        self.stdout.write(
            f"{project.slug} v{snapshot.version}: {snapshot.row_count} rows from {snapshot.item_count} items"
            f" -> {snapshot.path}"
        )
        for f in snapshot.files:
            self.stdout.write(f"  {f['name']}  {f['bytes']} bytes  sha256 {f['sha256']}")
