import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.models import Project, RoutingCandidate
from webapp.services.exports import ExportFailed, export_now
from webapp.services.routing import RoutingError, make_candidates


class Command(BaseCommand):
    help = (
        "Write candidate hybrid datasets (the paper's generator: which items get human labels) for external "
        "reward-model training; record each score with `manage.py record_score <candidate-id> <score>`."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project_slug")
        parser.add_argument("--n", type=int, default=200, help="how many candidates")
        parser.add_argument("--budget", type=float, required=True, help="share of items (0..1] or a number of items")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--format", default="trl-preference")
        parser.add_argument("--file-type", default="jsonl")
        parser.add_argument("--judge", dest="ai_judge", help="the AI labels' judge")
        parser.add_argument("--out", required=True, help="a directory; each candidate goes to candidate-<id>/ inside")

    def handle(self, *args: Any, **opts: Any) -> None:
        project = Project.objects.filter(slug=opts["project_slug"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project_slug']!r}")
        if opts["n"] < 1:
            raise CommandError("--n must be at least 1")
        budget = int(opts["budget"]) if opts["budget"] > 1 else opts["budget"]
        out = Path(opts["out"])
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"{out} exists and is not empty")
        try:
            candidates = make_candidates(project, n=opts["n"], budget=budget, seed=opts["seed"])
        except RoutingError as exc:
            raise CommandError(str(exc)) from None
        manifest = []
        for candidate in candidates:
            try:
                snapshot = export_now(
                    project,
                    format=opts["format"],
                    file_type=opts["file_type"],
                    options={"label_source": "hybrid", "ai_judge": opts["ai_judge"]},
                    out=out / f"candidate-{candidate.pk}",
                    candidate=candidate.pk,
                )
            except ExportFailed as exc:
                RoutingCandidate.objects.filter(pk__in=[c.pk for c in candidates]).delete()
                raise CommandError(str(exc)) from None
            if snapshot.status != "done":
                raise CommandError(f"candidate {candidate.pk}: {snapshot.error}")
            candidate.export = snapshot
            candidate.save(update_fields=["export"])
            manifest.append(
                {
                    "candidate_id": candidate.pk,
                    "dir": f"candidate-{candidate.pk}",
                    "human_items": len(candidate.human_item_ids),
                }
            )
        (out / "candidates.json").write_text(json.dumps({"project": project.slug, "candidates": manifest}, indent=1))
        self.stdout.write(
            f"{len(candidates)} candidates of {project.slug} in {out} (candidates.json lists them);"
            " train on each and report: manage.py record_score <candidate-id> <score>"
        )
