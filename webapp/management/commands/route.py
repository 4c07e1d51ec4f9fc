import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Project
from webapp.services.routing import RoutingError, route_project


class Command(BaseCommand):
    help = "Route a project's items to humans or to the AI within a budget (a share like 0.25, or a count)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--budget", required=True, type=float, help="share of items (0..1] or a number of items")
        parser.add_argument(
            "--strategy",
            default="error-model",
            choices=("random", "ai-disagreement", "error-model", "ppm-simulated", "ppm-topk"),
        )
        parser.add_argument("--candidates", type=int, default=1024, help="ppm-simulated: candidate subsets to compare")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--judge", help="the AI label's judge (needed when several judged the project)")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        budget = opts["budget"]
        if budget > 1:
            if budget != int(budget):
                raise CommandError("--budget above 1 is a number of items and must be whole")
            budget = int(budget)
        try:
            run = route_project(
                project,
                strategy=opts["strategy"],
                budget=budget,
                seed=opts["seed"],
                n_candidates=opts["candidates"],
                judge=opts["judge"],
            )
        except RoutingError as exc:
            raise CommandError(str(exc)) from None
        s = run.summary
        self.stdout.write(
            f"routing run {run.pk} ({run.strategy}): {run.budget_n} of {s['n_items']} items to humans"
            f" ({s['budget_share']:.1%}), estimated human cost {s['human_cost']:.2f}"
        )
        if s.get("predicted_score") is not None:
            self.stdout.write(f"predicted score: {s['predicted_score']:.4f}")
        for d in s.get("drivers", [])[:5]:
            self.stdout.write(f"  {d['feature']}: {d['lift']}x as common among human-routed items")
        if opts["verbosity"] > 1:
            self.stdout.write(json.dumps(s, indent=1))
