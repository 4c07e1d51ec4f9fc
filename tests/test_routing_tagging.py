"""Metadata tags through a configured judge, against a real OpenAI-compatible server on 127.0.0.1.

Jobs run in this process here (start_tagging(enqueue=False) + run_tagging_job, as the Celery task and
`manage.py tag_items --inline` call them); tests/test_routing_jobs_worker.py runs one on a real worker.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotators.openai_backend import ChatFailed, from_config
from routing.features import LEXICAL_FEATURES, TAGGING_PROMPT_VERSION
from tests.factories import ItemFactory, ProjectFactory
from tests.fake_openai import FakeOpenAI, Received, Reply, chat_reply, error_reply, schema_rejected
from webapp import tasks
from webapp.models import Item, Judge, RoutingJob
from webapp.services import judging
from webapp.services.routing import RoutingError, project_data
from webapp.services.tagging import TaggingError, run_tagging_job, start_tagging, tag_items

pytestmark = pytest.mark.django_db

TAGS = {
    "subject_of_expertise": ["Biology", "Chemistry"],
    "expertise_level": "expert domain knowledge",
    "languages": ["English"],
    "open_endedness": "low",
    "safety_concern": "safe",
    "complexity_of_intents": "moderate",
    "type_of_in_context_material": ["text passage"],
    "format_constraints": [],
}


def tagger(received: Received) -> Reply:
    """Tags for a tagging prompt; prose without JSON for a prompt that mentions GARBAGE."""
    if "GARBAGE" in received.prompt:
        return chat_reply("I am sorry, I would rather answer the question itself.")
    assert "[The Start of Prompt]" in received.prompt
    return chat_reply(json.dumps(TAGS), completion_tokens=60)


def _judge(fake: FakeOpenAI, name: str = "tagger", **config: object) -> Judge:
    settings = {"base_url": fake.url, "max_retries": 0, "concurrency": 4, **config}
    return judging.create_judge(
        name=name, backend="openai", model="fake-judge", config=settings, price_prompt_per_m="2"
    )


@pytest.fixture
def items(db):
    project = ProjectFactory(slug="tags", aspects=["overall"])
    prompts = [f"Explain how enzyme {k} folds, citing the passage below." for k in range(5)] + ["GARBAGE in, out"]
    made = [ItemFactory(project=project, prompt=p) for p in prompts]
    for k, item in enumerate(made):  # lexical scores as compute_features stores them
        item.features = {"lexical": {name: 0.1 * (k % 10) for name in LEXICAL_FEATURES}}
        item.save()
    return project, made


def test_chat_sends_the_messages_with_the_schema_and_returns_the_text():
    with FakeOpenAI(script=[chat_reply('{"a": 1}', prompt_tokens=7, completion_tokens=3)]) as fake:
        judge = from_config("fake-judge", {"base_url": fake.url, "temperature": 0.7})
        reply = judge.chat([{"role": "user", "content": "hi"}], schema={"type": "object"}, temperature=0.0)
        body = fake.chat_requests[0].body
    assert reply.text == '{"a": 1}'
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (7, 3, "stop")
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["temperature"] == 0.0
    assert body["response_format"]["json_schema"] == {"name": "answer", "schema": {"type": "object"}, "strict": True}


def test_chat_asks_again_as_text_when_the_server_refuses_schemas_and_fails_with_a_clear_error():
    with FakeOpenAI(script=[schema_rejected(), chat_reply("plain"), error_reply(503)]) as fake:
        judge = from_config("fake-judge", {"base_url": fake.url, "max_retries": 0})
        assert judge.chat([{"role": "user", "content": "x"}], schema={"type": "object"}).text == "plain"
        assert "response_format" not in fake.chat_requests[1].body
        with pytest.raises(ChatFailed, match="HTTP 503") as failure:
            judge.chat([{"role": "user", "content": "x"}])
    assert failure.value.retryable


def test_tags_are_stored_beside_the_lexical_features_and_a_garbage_reply_fails_alone(items):
    project, made = items
    with FakeOpenAI(script=tagger, delay_s=0.05) as fake:
        result = tag_items(project, _judge(fake))
        assert fake.peak_in_flight > 1  # concurrently, as the judge's concurrency allows
        request = fake.chat_requests[0].body
    assert (result.tagged, result.failed, result.skipped) == (5, 1, 0)
    assert request["response_format"]["json_schema"]["name"] == "tags"
    assert request["temperature"] == 0.0
    good = Item.objects.get(pk=made[0].pk).features
    assert set(good) == {"lexical", "tags", "tagging"}
    assert good["lexical"]["rouge"] == 0.0
    assert good["tags"]["subject_of_expertise"] == ["Biology", "Chemistry"]
    assert good["tags"]["format_constraints"] is False
    assert good["tagging"]["version"] == TAGGING_PROMPT_VERSION
    assert good["tagging"]["judge"] == "tagger"
    assert "error" not in good["tagging"]
    bad = Item.objects.get(pk=made[-1].pk).features
    assert "tags" not in bad
    assert bad["tagging"]["error"].startswith("unreadable tags: no JSON object")
    assert bad["tagging"]["raw"] == "I am sorry, I would rather answer the question itself."
    assert "lexical" in bad


def test_tagged_items_are_skipped_unless_forced_and_failed_ones_are_tried_again(items):
    project, _made = items
    with FakeOpenAI(script=tagger) as fake:
        judge = _judge(fake)
        tag_items(project, judge)
        again = tag_items(project, judge)
        assert len(fake.chat_requests) == 7  # six, then only the failed item
        forced = tag_items(project, judge, force=True)
        assert len(fake.chat_requests) == 13
    assert (again.tagged, again.failed, again.skipped) == (0, 1, 5)
    assert (forced.tagged, forced.failed, forced.skipped) == (5, 1, 0)


def test_tags_become_one_hot_routing_features(items):
    project, made = items
    with FakeOpenAI(script=tagger) as fake:
        tag_items(project, _judge(fake))
    data = project_data(project)
    row = {name: bool(data.X[0, j]) for j, name in enumerate(data.names)}
    assert row["subject=Biology"]
    assert row["subject=Chemistry"]
    assert not row["subject=Physics"]
    assert row["expertise=expert domain knowledge"]
    assert row["in_context=yes"]
    assert not row["format_constraints=yes"]
    assert any(name.startswith("rouge=") for name in data.names)
    garbage = list(data.item_ids).index(made[-1].pk)
    assert not any(data.X[garbage, j] for j, name in enumerate(data.names) if name.startswith("subject="))


def test_only_openai_compatible_judges_tag_and_others_are_refused_by_kind(items):
    project, _made = items
    local = Judge.objects.create(name="smol", backend=Judge.GENERATIVE, model="smollm2")
    with pytest.raises(TaggingError, match=r"'smol' is a local generative judge \(transformers-judge\).*no text"):
        tag_items(project, local)
    reward = Judge.objects.create(name="rm", backend=Judge.REWARD_MODEL, model="x")
    with pytest.raises(TaggingError, match="reward model"):
        start_tagging(project, reward)
    assert not RoutingJob.objects.exists()


def test_a_tagging_job_counts_done_and_failed_and_running_it_twice_changes_nothing(items):
    project, _made = items
    with FakeOpenAI(script=tagger) as fake:
        judge = _judge(fake)
        job = start_tagging(project, judge, enqueue=False)
        assert (job.status, job.total) == (RoutingJob.QUEUED, 6)
        with pytest.raises(RoutingError, match=f"tagging job {job.pk} is still queued"):
            start_tagging(project, judge, enqueue=False)
        tasks.tag_items(job.pk)
        job.refresh_from_db()
        assert (job.status, job.done, job.failed, job.total) == (RoutingJob.DONE, 5, 1, 6)
        assert job.options["usage"]["completion_tokens"] == 5 * 60 + 20
        # A redelivered task of a job that was interrupted: what it stored is not asked or counted again.
        RoutingJob.objects.filter(pk=job.pk).update(status=RoutingJob.RUNNING)
        tasks.tag_items(job.pk)
        job.refresh_from_db()
        assert (job.status, job.done, job.failed, job.total) == (RoutingJob.DONE, 5, 1, 6)
        assert len(fake.chat_requests) == 6
        # A finished job's task does nothing at all.
        assert run_tagging_job(job.pk).status == RoutingJob.DONE
        assert len(fake.chat_requests) == 6


def test_the_tag_items_command(items):
    with FakeOpenAI(script=tagger) as fake:
        judge = _judge(fake)
        out = StringIO()
        call_command("tag_items", "tags", "--judge", "tagger", "--inline", stdout=out)
        assert "tagged 5 item(s), 1 failed" in out.getvalue()
        assert "5 tagged with the current prompt" in out.getvalue()
        queued = StringIO()
        call_command("tag_items", "tags", "--judge", "tagger", "--force", "--no-wait", stdout=queued)
        assert "6 item(s) queued for a worker" in queued.getvalue()
        resumed = StringIO()
        call_command("tag_items", "tags", "--judge", "tagger", "--inline", stdout=resumed)
        assert "resuming tagging job" in resumed.getvalue()
        assert "tagged 5 item(s), 1 failed" in resumed.getvalue()
        assert len(fake.chat_requests) == 12
    assert RoutingJob.objects.filter(judge=judge, status=RoutingJob.DONE).count() == 2
    with pytest.raises(CommandError, match="no judge"):
        call_command("tag_items", "tags", "--judge", "nobody", stdout=StringIO())
    with pytest.raises(CommandError, match="no project"):
        call_command("tag_items", "nope", "--judge", "tagger", stdout=StringIO())


def test_a_manager_tags_from_the_routing_page_and_watches_the_progress(
    items, client, django_capture_on_commit_callbacks
):
    from tests.factories import UserFactory
    from webapp.models import Membership

    project, _made = items
    boss = UserFactory(username="boss")
    Membership.objects.create(project=project, user=boss, role=Membership.MANAGER)
    client.force_login(boss)
    with FakeOpenAI(script=tagger) as fake:
        _judge(fake)
        page = client.get("/p/tags/routing/").content.decode()
        assert 'action="/p/tags/routing/tags"' in page
        assert "metadata tags for 0" in page
        with django_capture_on_commit_callbacks() as callbacks:
            response = client.post("/p/tags/routing/tags", {"judge": "tagger"})
        assert response.status_code == 302
        assert len(callbacks) == 1
        job = RoutingJob.objects.get(project=project, kind=RoutingJob.TAGGING)
        status = client.get("/p/tags/routing/", HTTP_HX_REQUEST="true").content.decode()
        assert 'hx-trigger="every 3s"' in status  # polls while the job is queued
        assert f"Tagging job #{job.pk} with tagger" in status
        assert "0/6 items" in status
        run_tagging_job(job.pk)
        status = client.get("/p/tags/routing/", HTTP_HX_REQUEST="true").content.decode()
        assert "6/6 items · 5 tagged · 1 failed" in status
        assert "every 3s" not in status
        assert "metadata tags for 5" in status
        bad = client.post("/p/tags/routing/tags", {"judge": "nobody"})
        assert bad.status_code == 400
        assert "choose an OpenAI-compatible judge" in bad.content.decode()
