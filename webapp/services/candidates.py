"""Routing candidates' scores: what a reward model trained on a candidate hybrid dataset achieved."""

from __future__ import annotations

import math

from django.db import transaction
from django.utils import timezone

from webapp.models import RoutingCandidate


class CandidateError(ValueError):
    """A score that cannot be recorded; the message says why."""


def record_score(
    candidate_id: int, score: float, *, source: str = RoutingCandidate.EXTERNAL, metric: str = ""
) -> RoutingCandidate:
    """Record (or replace) a candidate's measured score."""
    if not math.isfinite(score):
        raise CandidateError(f"score must be a finite number, not {score}")
    if source not in RoutingCandidate.SOURCES:
        raise CandidateError(f"source must be one of {', '.join(RoutingCandidate.SOURCES)}")
    with transaction.atomic():
        candidate = RoutingCandidate.objects.select_for_update().filter(pk=candidate_id).first()
        if candidate is None:
            raise CandidateError(f"no routing candidate {candidate_id}")
        candidate.score, candidate.score_source, candidate.metric = score, source, metric
        candidate.scored_at = timezone.now()
        candidate.save(update_fields=["score", "score_source", "metric", "scored_at"])
    return candidate
