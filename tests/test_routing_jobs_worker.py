"""Routing jobs on a real Celery worker process (Redis broker), against the committed test database.

The worker is the one of tests/test_celery_worker.py; the rows must be committed for it to see them,
hence `transactional_db` there.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from tests import test_celery_worker
from tests.conftest import PANDALM
from tests.factories import ItemFactory, ProjectFactory
from tests.fake_openai import FakeOpenAI, Received, Reply, chat_reply
from webapp.models import Item, RoutingCandidate, RoutingJob
from webapp.services import judging
from webapp.services.imports import import_file
from webapp.services.projects import create_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

worker = test_celery_worker.worker

TAGS = {"subject_of_expertise": ["Geography"], "expertise_level": "general public", "safety_concern": "safe"}


def test_a_worker_runs_a_tagging_job_queued_by_the_command(worker):
    project = ProjectFactory(slug="worker-tags", aspects=["overall"])
    items = [ItemFactory(project=project, prompt=f"Which river flows through city {k}?") for k in range(7)]

    def answer(received: Received) -> Reply:
        return chat_reply(json.dumps(TAGS) if "city 3?" not in received.prompt else "no idea")

    with FakeOpenAI(answer) as fake:
        judging.create_judge(name="worker-tagger", backend="openai", model="fake", config={"base_url": fake.url})
        out = StringIO()
        # The command queues the job for the worker and shows its progress until it ends.
        call_command("tag_items", project.slug, "--judge", "worker-tagger", stdout=out)
    job = RoutingJob.objects.get(project=project, kind=RoutingJob.TAGGING)
    assert (job.status, job.done, job.failed, job.total) == (RoutingJob.DONE, 6, 1, 7), worker.output()
    assert f"tagging job {job.pk}: 7 item(s) queued for a worker" in out.getvalue()
    assert "tagged 6 item(s), 1 failed" in out.getvalue()
    assert "Task webapp.tag_items[" in worker.output()
    tagged = Item.objects.get(pk=items[0].pk).features
    assert tagged["tags"]["subject_of_expertise"] == ["Geography"]
    assert tagged["tagging"]["job"] == job.pk
    assert Item.objects.get(pk=items[3].pk).features["tagging"]["raw"] == "no idea"


def test_a_worker_scores_candidates_with_the_proxy(worker, tmp_path):
    path = tmp_path / "pandalm.jsonl"
    path.write_text("\n".join(PANDALM.read_text().splitlines()[:40]) + "\n")
    project = create_project(slug="worker-proxy", name="PandaLM", aspects=["overall"], overlap_normal=1)
    import_file(project, path, fmt="pandalm")
    ids = list(project.items.order_by("id").values_list("id", flat=True))
    for k in range(4):
        RoutingCandidate.objects.create(project=project, budget=0.25, human_item_ids=ids[k::4], mixture={})
    out = StringIO()
    call_command("score_candidates", project.slug, "--judge", "gpt-3.5-turbo", stdout=out)
    job = RoutingJob.objects.get(project=project, kind=RoutingJob.PROXY)
    assert (job.status, job.done, job.failed, job.total) == (RoutingJob.DONE, 4, 0, 4), worker.output()
    assert "scored 4 candidate(s) with the proxy, 0 failed" in out.getvalue()
    assert "Task webapp.score_candidates[" in worker.output()
    scores = RoutingCandidate.objects.filter(project=project).values_list("score", "score_source")
    assert all(0.0 <= score <= 1.0 and source == RoutingCandidate.PROXY for score, source in scores)
