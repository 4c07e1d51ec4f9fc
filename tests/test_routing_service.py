"""Routing on the database: features stored per item, routing runs that set routes, replays, candidates."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import PANDALM
from webapp.models import Item, RoutingCandidate, RoutingRun
from webapp.services.imports import import_file
from webapp.services.projects import create_project
from webapp.services.routing import RoutingError, compute_features, project_data, route_project

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def pandalm(tmp_path):
    """The first 60 PandaLM items with their three human labels and two LLM verdicts, features computed."""
    lines = PANDALM.read_text().splitlines()[:60]
    path = tmp_path / "pandalm.jsonl"
    path.write_text("\n".join(lines) + "\n")
    project = create_project(slug="pl", name="PandaLM", aspects=["overall"], overlap_normal=1)
    import_file(project, path, fmt="pandalm")
    compute_features(project)
    return project


def test_features_are_stored_per_item_and_not_computed_twice(pandalm):
    item = Item.objects.filter(project=pandalm).first()
    raw = item.features["lexical"]
    assert set(raw) >= {"bertscore", "cosine_sim", "rouge", "entity_sim", "prompt_len"}
    assert 0.0 <= raw["cosine_sim"] <= 1.0
    assert compute_features(pandalm) == 0


def test_features_record_their_embeddings_and_switching_recomputes_every_item(pandalm):
    item = Item.objects.filter(project=pandalm).first()
    assert item.features["lexical_embeddings"] == "static"  # the default (settings.ROUTING_EMBEDDINGS)
    static_cosine = item.features["lexical"]["cosine_sim"]
    assert compute_features(pandalm, embeddings="contextual") == 60  # no project mixes the two kinds
    item.refresh_from_db()
    assert item.features["lexical_embeddings"] == "contextual"
    assert item.features["lexical"]["cosine_sim"] != static_cosine
    assert compute_features(pandalm, embeddings="contextual") == 0
    with pytest.raises(RoutingError, match="embeddings must be one of static, contextual"):
        compute_features(pandalm, embeddings="glove")


def test_project_data_lines_up_features_ai_and_human_labels(pandalm):
    data = project_data(pandalm, judge="gpt-3.5-turbo", need_ai_label=True)
    assert len(data.item_ids) == 60
    assert data.X.shape[0] == 60
    assert data.X.dtype == bool
    assert any(name.startswith("cosine_sim") for name in data.names)
    assert data.has_ai.all()
    assert (data.n_human == 3).all()
    with pytest.raises(RoutingError, match="name the AI judge"):
        project_data(pandalm, need_ai_label=True)


@pytest.mark.parametrize("strategy", ["random", "ai-disagreement", "error-model"])
def test_a_routing_run_sends_exactly_the_budget_to_humans_and_says_why(pandalm, strategy):
    run = route_project(pandalm, strategy=strategy, budget=0.25, seed=3, judge="gpt-3.5-turbo")
    assert run.status == RoutingRun.DONE
    assert run.budget_n == 15
    assert Item.objects.filter(project=pandalm, route="human").count() == 15
    assert Item.objects.filter(project=pandalm, route="ai").count() == 45
    assert not Item.objects.filter(project=pandalm, route="unrouted").exists()
    reasons = set(Item.objects.filter(project=pandalm).values_list("route_reason", flat=True))
    assert all(r.startswith(f"run {run.pk} ({strategy}): ") for r in reasons)
    assert run.summary["budget_used"] == 15
    assert run.summary["drivers"]


def test_routing_is_deterministic_for_a_seed(pandalm):
    first = route_project(pandalm, strategy="random", budget=10, seed=7)
    chosen = set(Item.objects.filter(project=pandalm, route="human").values_list("id", flat=True))
    route_project(pandalm, strategy="random", budget=10, seed=7)
    assert set(Item.objects.filter(project=pandalm, route="human").values_list("id", flat=True)) == chosen
    assert first.budget_n == len(chosen) == 10


def test_human_routed_items_enter_the_annotation_queue(pandalm):
    from webapp.services.queue import queue_items

    route_project(pandalm, strategy="random", budget=5, seed=1)
    assert set(queue_items(pandalm).values_list("route", flat=True)) == {"human"}
    assert queue_items(pandalm).count() == 5


def test_ppm_strategies_need_scored_candidates_then_use_them(pandalm):
    with pytest.raises(RoutingError, match="10 scored candidates"):
        route_project(pandalm, strategy="ppm-simulated", budget=0.25)
    from webapp.services.routing import make_candidates

    candidates = make_candidates(pandalm, n=12, budget=0.25, seed=0)
    assert all(len(c.human_item_ids) == 15 for c in candidates)
    for k, c in enumerate(candidates):
        c.score, c.score_source = 0.5 + 0.01 * k, RoutingCandidate.EXTERNAL
        c.save()
    run = route_project(pandalm, strategy="ppm-simulated", budget=0.25, n_candidates=64)
    assert run.budget_n == 15
    assert run.summary["ppm"]["model"] in ("linear", "quadratic", "lightgbm")


def test_the_route_command_and_its_errors(pandalm):
    out = StringIO()
    call_command("route", "pl", "--budget", "0.2", "--strategy", "ai-disagreement", stdout=out)
    assert "12 of 60 items to humans (20.0%)" in out.getvalue()
    with pytest.raises(CommandError, match="budget"):
        call_command("route", "pl", "--budget", "0", "--strategy", "random", stdout=StringIO())
    with pytest.raises(CommandError, match="name the AI judge"):
        call_command("route", "pl", "--budget", "0.2", "--strategy", "error-model", stdout=StringIO())
    with pytest.raises(CommandError, match="no project"):
        call_command("route", "nope", "--budget", "0.2", stdout=StringIO())


def test_simulate_routing_writes_the_report_shape(pandalm, tmp_path):
    out = tmp_path / "sim.json"
    call_command(
        "simulate_routing",
        "pl",
        "--budgets",
        "0.25",
        "--seeds",
        "2",
        "--judge",
        "gpt-3.5-turbo",
        "--no-proxy",
        "--json",
        str(out),
        stdout=StringIO(),
    )
    report = json.loads(out.read_text())
    assert set(report) == {"n_items", "all_ai", "all_human", "results"}
    assert report["n_items"] == 60
    strategies = {r["strategy"] for r in report["results"]}
    assert {"random", "ai-disagreement", "error-model"} <= strategies
    for r in report["results"]:
        assert set(r) == {"strategy", "budget", "accuracy_mean", "accuracy_sd", "proxy_rm_mean"}
        assert 0.0 <= r["accuracy_mean"] <= 1.0


def test_export_candidates_writes_each_candidate_and_scores_come_back(pandalm, tmp_path):
    out = tmp_path / "cands"
    call_command(
        "export_candidates",
        "pl",
        "--n",
        "3",
        "--budget",
        "0.5",
        "--judge",
        "gpt-3.5-turbo",
        "--out",
        str(out),
        stdout=StringIO(),
    )
    manifest = json.loads((out / "candidates.json").read_text())
    assert len(manifest["candidates"]) == 3
    first = RoutingCandidate.objects.get(pk=manifest["candidates"][0]["candidate_id"])
    rows = [
        json.loads(line) for line in (out / f"candidate-{first.pk}" / "trl-preference.jsonl").read_text().splitlines()
    ]
    sources = {r["source"] for r in rows}
    assert any(s.startswith("ai:gpt-3.5-turbo@") for s in sources)
    assert sources - {s for s in sources if s.startswith("ai:")}  # and human labels for the candidate's items
    call_command("record_score", str(first.pk), "0.71", stdout=StringIO())
    first.refresh_from_db()
    assert first.score == 0.71
    assert first.export is not None


def test_a_manager_routes_from_the_routing_page_and_annotators_cannot(
    pandalm, client, django_capture_on_commit_callbacks
):
    from tests.factories import UserFactory
    from webapp.models import Membership

    boss, worker = UserFactory(username="boss"), UserFactory(username="worker")
    Membership.objects.create(project=pandalm, user=boss, role=Membership.MANAGER)
    Membership.objects.create(project=pandalm, user=worker, role=Membership.ANNOTATOR)
    client.force_login(worker)
    assert client.get("/p/pl/routing/").status_code == 403
    assert client.post("/p/pl/routing/route", {"strategy": "random", "budget": "0.5"}).status_code == 403
    client.force_login(boss)
    page = client.get("/p/pl/routing/").content.decode()
    assert "features (static embeddings) for 60" in page
    response = client.post("/p/pl/routing/route", {"strategy": "random", "budget": "0.5", "seed": "2"})
    assert response.status_code == 302
    assert Item.objects.filter(project=pandalm, route="human").count() == 30
    bad = client.post("/p/pl/routing/route", {"strategy": "random", "budget": "lots"})
    assert bad.status_code == 400
    assert "must be numbers" in bad.content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        client.post("/p/pl/routing/features")
    assert len(callbacks) == 1
