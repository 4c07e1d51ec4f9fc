from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from routing.features import EMBEDDINGS
from webapp.models import Project
from webapp.services.routing import RoutingError, compute_features


class Command(BaseCommand):
    help = "Compute the routing features (response similarity, lengths) of a project's items, with local models."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--recompute", action="store_true", help="also items that have features already")
        parser.add_argument(
            "--embeddings",
            choices=EMBEDDINGS,
            help="static (fast on a CPU) or contextual (MiniLM itself); default: HYBRIDPREF_ROUTING_EMBEDDINGS",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")

        def progress(done: int, total: int) -> None:
            self.stdout.write(f"\r{done}/{total} items", ending="")
            self.stdout.flush()

        try:
            n = compute_features(project, recompute=opts["recompute"], embeddings=opts["embeddings"], progress=progress)
        except RoutingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"\n{project.slug}: features computed for {n} item(s)")
