import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Project
from webapp.services.routing import RoutingError, simulate_project


class Command(BaseCommand):
    help = (
        "Replay routing on items that already have human and AI labels: hybrid-label accuracy per strategy and budget."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.25, 0.5])
        parser.add_argument("--calibration", type=float, default=0.05, help="random calibration batch, share of items")
        parser.add_argument("--seeds", type=int, default=5)
        parser.add_argument("--judge", help="the AI label's judge (default: the only one)")
        parser.add_argument(
            "--no-proxy", action="store_true", help="skip the proxy reward model (and the PPM strategies)"
        )
        parser.add_argument("--json", dest="json_path", help="write the report here")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        try:
            report = simulate_project(
                project,
                budgets=opts["budgets"],
                seeds=opts["seeds"],
                calibration=opts["calibration"],
                judge=opts["judge"],
                proxy=not opts["no_proxy"],
            )
        except RoutingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{report['n_items']} items; all-AI accuracy {report['all_ai']:.4f}, all-human {report['all_human']:.4f}"
        )
        self.stdout.write(f"{'strategy':<16} {'budget':>6} {'accuracy':>9} {'sd':>7} {'proxy RM':>9}")
        for r in report["results"]:
            proxy = "" if r.get("proxy_rm_mean") is None else f"{r['proxy_rm_mean']:.4f}"
            self.stdout.write(
                f"{r['strategy']:<16} {r['budget']:>6} {r['accuracy_mean']:>9.4f} {r['accuracy_sd']:>7.4f} {proxy:>9}"
            )
        if opts["json_path"]:
            Path(opts["json_path"]).write_text(json.dumps(report, indent=1))
            self.stdout.write(f"report written to {opts['json_path']}")
