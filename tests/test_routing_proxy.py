"""The in-platform CPU proxy: candidates scored by a Bradley-Terry reward model on real PandaLM labels.

Jobs run in this process here (start_proxy_scoring(enqueue=False) + run_proxy_job, as the Celery task and
`manage.py score_candidates --inline` call them); tests/test_routing_jobs_worker.py runs one on a worker.
"""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from routing.costs import budget_cost
from routing.proxy import hybrid_labels, hybrid_proxy_score, reference_labels
from tests.conftest import PANDALM
from tests.factories import ItemFactory, ProjectFactory
from webapp.models import HumanAnnotation, RoutingCandidate, RoutingJob
from webapp.services.imports import import_file
from webapp.services.projects import create_project
from webapp.services.routing import (
    PROXY_FOLDS,
    PROXY_MAX_PAIRS,
    PROXY_METRIC,
    PROXY_SEED,
    RoutingError,
    compute_features,
    make_candidates,
    proxy_pool,
    response_embeddings,
    route_project,
    run_proxy_job,
    start_proxy_scoring,
)

AI = "gpt-3.5-turbo"


def _import(tmp_path, n: int = 60):
    """The first n PandaLM items with their three human labels and two LLM verdicts."""
    path = tmp_path / "pandalm.jsonl"
    path.write_text("\n".join(PANDALM.read_text().splitlines()[:n]) + "\n")
    project = create_project(slug="pl", name="PandaLM", aspects=["overall"], overlap_normal=1)
    import_file(project, path, fmt="pandalm")
    return project


@pytest.fixture
def labelled(db, tmp_path):
    """Labels only: the proxy needs no routing features."""
    return _import(tmp_path)


@pytest.fixture
def pandalm(db, tmp_path):
    """With routing features, so candidates can be generated (MiniLM on the CPU: a few seconds)."""
    project = _import(tmp_path)
    compute_features(project)
    return project


# --- pure pieces --------------------------------------------------------------------------------------


def test_a_hybrid_label_set_takes_the_human_label_where_the_candidate_routes_to_humans():
    ai, human = np.array([1, 1, -1, 0]), np.array([-1, 1, 1, -1])
    assert hybrid_labels(ai, human, np.array([0, 3])).tolist() == [-1, 1, -1, -1]
    assert hybrid_labels(ai, human, np.array([], dtype=int)).tolist() == [1, 1, -1, 0]
    with pytest.raises(ValueError, match="out of range"):
        hybrid_labels(ai, human, np.array([4]))


def test_the_reference_is_the_majority_of_items_with_enough_human_annotations():
    majority, n = np.array([1, -1, 1, 0]), np.array([3, 1, 2, 0])
    assert reference_labels(majority, n).tolist() == [1, 0, 1, 0]
    assert reference_labels(majority, n, min_annotations=1).tolist() == [1, -1, 1, 0]


def test_a_budget_costs_human_annotations_and_ai_verdicts():
    cost = budget_cost(n_items=60, budget_n=15, annotations_per_item=2, cost_per_annotation=0.5, ai_cost_per_item=0.01)
    assert (cost.human, cost.ai_items, cost.total) == (15.0, 45, 15.0 + 0.45)
    assert cost.ai == pytest.approx(0.45)
    unknown = budget_cost(n_items=10, budget_n=10, annotations_per_item=1, cost_per_annotation=1, ai_cost_per_item=None)
    assert (unknown.ai, unknown.total) == (None, 10.0)
    with pytest.raises(ValueError, match="budget_n"):
        budget_cost(n_items=3, budget_n=4, annotations_per_item=1, cost_per_annotation=1, ai_cost_per_item=None)


# --- the service, the job and the command ------------------------------------------------------------


@pytest.mark.slow
def test_the_proxy_scores_each_unscored_candidate_on_the_human_reference_and_the_ppm_learns_from_it(pandalm):
    candidates = make_candidates(pandalm, n=12, budget=0.25, seed=0)
    job = start_proxy_scoring(pandalm, judge=AI, enqueue=False)
    assert (job.status, job.total, job.options["candidate_ids"]) == (
        RoutingJob.QUEUED,
        12,
        [c.pk for c in candidates],
    )
    seen: list[tuple[int, int]] = []
    finished = run_proxy_job(job.pk, progress=lambda done, total: seen.append((done, total)))
    assert (finished.status, finished.done, finished.failed, finished.total) == (RoutingJob.DONE, 12, 0, 12)
    assert seen[-1] == (12, 12)
    scored = list(RoutingCandidate.objects.filter(project=pandalm).order_by("id"))
    assert {(c.score_source, c.metric) for c in scored} == {(RoutingCandidate.PROXY, PROXY_METRIC)}
    assert all(0.0 <= c.score <= 1.0 for c in scored)

    # The score is what its definition says: Bradley-Terry on the hybrid labels, cross-fitted, pairwise
    # accuracy against the majority of the items' three human labels.
    pool = proxy_pool(pandalm, judge=AI)
    assert len(pool.item_ids) == 60
    assert np.count_nonzero(pool.reference) >= 50
    emb_a, emb_b = response_embeddings(pool.item_ids)
    first = scored[0]
    routed = np.isin(pool.item_ids, first.human_item_ids)
    assert routed.sum() == 15
    labels = np.where(routed, pool.human_first, pool.ai)
    expected = hybrid_proxy_score(
        labels, pool.reference, emb_a, emb_b, folds=PROXY_FOLDS, seed=PROXY_SEED, max_pairs=PROXY_MAX_PAIRS
    )
    assert first.score == pytest.approx(expected)

    run = route_project(pandalm, strategy="ppm-simulated", budget=0.25, n_candidates=64)
    assert run.summary["ppm"]["score_source"] == RoutingCandidate.PROXY
    assert run.summary["ppm"]["trained_on"] == 12
    assert run.summary["predicted_score"] == pytest.approx(run.summary["predicted"])


@pytest.mark.slow
def test_scoring_again_skips_scored_candidates_unless_forced(pandalm):
    make_candidates(pandalm, n=3, budget=0.5, seed=1)
    out = StringIO()
    call_command("score_candidates", "pl", "--judge", AI, "--inline", stdout=out)
    assert "scored 3 candidate(s) with the proxy, 0 failed" in out.getvalue()
    before = {c.pk: (c.score, c.scored_at) for c in RoutingCandidate.objects.filter(project=pandalm)}

    again = StringIO()
    call_command("score_candidates", "pl", "--judge", AI, "--inline", stdout=again)
    assert "nothing to score" in again.getvalue()
    assert {c.pk: (c.score, c.scored_at) for c in RoutingCandidate.objects.filter(project=pandalm)} == before
    assert RoutingJob.objects.filter(project=pandalm, kind=RoutingJob.PROXY, total=0, status="done").count() == 1

    one = min(before)
    forced = StringIO()
    call_command(
        "score_candidates", "pl", "--judge", AI, "--candidates", str(one), "--force", "--inline", stdout=forced
    )
    assert "scored 1 candidate(s)" in forced.getvalue()
    rescored = RoutingCandidate.objects.get(pk=one)
    assert rescored.score == pytest.approx(before[one][0])  # deterministic
    assert rescored.scored_at > before[one][1]

    spread = StringIO()
    call_command("score_candidates", "pl", "--judge", AI, "--new", "4", "--inline", stdout=spread)
    assert "scored 4 candidate(s)" in spread.getvalue()
    new = list(RoutingCandidate.objects.filter(project=pandalm, strategy="paper-spread").order_by("id"))
    assert [round(c.budget * 60) for c in new] == [8, 22, 38, 52]
    assert all(c.score is not None for c in new)

    with pytest.raises(CommandError, match="name the AI judge"):
        call_command("score_candidates", "pl", "--inline", "--force", stdout=StringIO())
    with pytest.raises(CommandError, match="no candidate 999999 in pl"):
        call_command("score_candidates", "pl", "--judge", AI, "--candidates", "999999", stdout=StringIO())
    with pytest.raises(CommandError, match="no project"):
        call_command("score_candidates", "nope", stdout=StringIO())


def test_the_proxy_needs_items_with_both_labels(labelled):
    plain = ProjectFactory(slug="plain")
    for _ in range(12):
        ItemFactory(project=plain)
    with pytest.raises(RoutingError, match="both a human and an AI label; plain has 0"):
        start_proxy_scoring(plain, enqueue=False)
    # The labels go away after the job was queued: the job fails and says why, nothing is scored.
    RoutingCandidate.objects.create(project=labelled, budget=0.5, human_item_ids=[], mixture={})
    job = start_proxy_scoring(labelled, judge=AI, enqueue=False)
    HumanAnnotation.objects.filter(item__project=labelled).delete()
    finished = run_proxy_job(job.pk)
    assert finished.status == RoutingJob.FAILED
    assert "both a human and an AI label; pl has 0" in finished.error
    assert not RoutingCandidate.objects.filter(score__isnull=False).exists()


def test_a_manager_scores_candidates_from_the_routing_page_and_watches_the_progress(
    labelled, client, django_capture_on_commit_callbacks
):
    from tests.factories import UserFactory
    from webapp.models import Membership

    boss, worker = UserFactory(username="boss"), UserFactory(username="worker")
    Membership.objects.create(project=labelled, user=boss, role=Membership.MANAGER)
    Membership.objects.create(project=labelled, user=worker, role=Membership.ANNOTATOR)
    ids = list(labelled.items.order_by("id").values_list("id", flat=True))
    for k in range(3):  # hand-made candidates: the proxy reads only their human items
        RoutingCandidate.objects.create(project=labelled, budget=0.25, human_item_ids=ids[k::4], mixture={})
    client.force_login(worker)
    assert client.post("/p/pl/routing/proxy", {"judge": AI}).status_code == 403
    client.force_login(boss)
    assert "3 candidates without a score" in client.get("/p/pl/routing/").content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/p/pl/routing/proxy", {"judge": AI, "new": "0"})
    assert response.status_code == 302
    assert len(callbacks) == 1
    job = RoutingJob.objects.get(project=labelled, kind=RoutingJob.PROXY)
    status = client.get("/p/pl/routing/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 3s"' in status
    assert f"Proxy job #{job.pk}" in status
    assert "0/3 candidates" in status
    busy = client.post("/p/pl/routing/proxy", {"judge": AI})
    assert busy.status_code == 400
    assert f"proxy job {job.pk} is still queued" in busy.content.decode()
    run_proxy_job(job.pk)
    status = client.get("/p/pl/routing/", HTTP_HX_REQUEST="true").content.decode()
    assert "3/3 candidates · 3 scored · 0 failed" in status
    assert "every 3s" not in status
    assert "3 scored candidates for the performance model" in status
    no_judge = client.post("/p/pl/routing/proxy", {"force": "on"})
    assert no_judge.status_code == 400
    assert "name the AI judge" in no_judge.content.decode()
