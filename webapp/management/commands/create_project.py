from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp import scheme as sch
from webapp.services.projects import ProjectError, create_project


class Command(BaseCommand):
    help = "Create an annotation project."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--kind", default=sch.PAIRWISE, choices=sch.KINDS)
        parser.add_argument("--scale", default=sch.LIKERT5, choices=sch.SCALES)
        parser.add_argument("--aspects", default=",".join(sch.DEFAULT_ASPECTS), help="comma-separated")
        parser.add_argument("--ratings", default="", help=f"per-response attributes: {','.join(sch.RATING_ATTRIBUTES)}")
        parser.add_argument("--guidelines-file", default=None, help="a markdown file")
        parser.add_argument("--justification-min-length", type=int, default=None, help="require a justification")
        parser.add_argument("--overlap-normal", type=int, default=2)
        parser.add_argument("--overlap-expert", type=int, default=0)
        parser.add_argument("--budget", type=int, default=None, help="items that may go to humans")
        parser.add_argument("--cost", default="0", help="cost per human annotation")
        parser.add_argument("--allow-ties", action="store_true", help="ranking projects: allow tied responses")

    def handle(self, *args: Any, **opts: Any) -> None:
        guidelines = ""
        if opts["guidelines_file"]:
            try:
                with open(opts["guidelines_file"], encoding="utf-8") as fh:
                    guidelines = fh.read()
            except OSError as exc:
                raise CommandError(f"--guidelines-file: {exc}") from None
        min_length = opts["justification_min_length"]
        try:
            project = create_project(
                slug=opts["slug"],
                name=opts["name"],
                kind=opts["kind"],
                scale=opts["scale"],
                aspects=[a.strip() for a in opts["aspects"].split(",") if a.strip()],
                rating_attributes=[a.strip() for a in opts["ratings"].split(",") if a.strip()],
                guidelines=guidelines,
                justification_required=min_length is not None,
                justification_min_length=min_length or 0,
                overlap_normal=opts["overlap_normal"],
                overlap_expert=opts["overlap_expert"],
                human_budget=opts["budget"],
                cost_per_human_annotation=opts["cost"],
                allow_ties=opts["allow_ties"],
            )
        except ProjectError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"created project {project.slug} ({project.kind}, {project.scale}, aspects: {', '.join(project.aspects)})"
        )
