from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webapp.services.candidates import CandidateError, record_score


class Command(BaseCommand):
    help = "Record the score a reward model trained on a routing candidate's dataset achieved."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("candidate_id", type=int)
        parser.add_argument("score", type=float)
        parser.add_argument(
            "--metric", default="", help="what the score measures, e.g. rewardbench or pairwise_accuracy"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            candidate = record_score(opts["candidate_id"], opts["score"], metric=opts["metric"])
        except CandidateError as exc:
            raise CommandError(str(exc)) from None
        metric = f" ({candidate.metric})" if candidate.metric else ""
        self.stdout.write(f"candidate {candidate.pk}: score {candidate.score}{metric}")
