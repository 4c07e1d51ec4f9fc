"""Recording the measured score of a routing candidate (from a GPU training job)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.factories import ProjectFactory
from webapp.models import RoutingCandidate

pytestmark = pytest.mark.django_db


def test_record_score_stores_the_score_with_its_source_and_metric():
    candidate = RoutingCandidate.objects.create(project=ProjectFactory(), budget=0.25, human_item_ids=[1, 2])
    out = StringIO()
    call_command("record_score", str(candidate.pk), "0.706", "--metric", "rewardbench", stdout=out)
    candidate.refresh_from_db()
    assert (candidate.score, candidate.score_source, candidate.metric) == (0.706, "external", "rewardbench")
    assert candidate.scored_at is not None
    assert f"candidate {candidate.pk}: score 0.706 (rewardbench)" in out.getvalue()


def test_record_score_names_an_unknown_candidate_and_refuses_nan():
    with pytest.raises(CommandError, match="no routing candidate 999"):
        call_command("record_score", "999", "0.5", stdout=StringIO())
    candidate = RoutingCandidate.objects.create(project=ProjectFactory(), budget=0.5)
    with pytest.raises(CommandError, match="finite"):
        call_command("record_score", str(candidate.pk), "nan", stdout=StringIO())
    candidate.refresh_from_db()
    assert candidate.score is None
