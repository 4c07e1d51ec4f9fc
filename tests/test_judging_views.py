"""The manager's judging page: configure judges, start, watch and cancel runs; nobody else gets in."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import ItemFactory, MembershipFactory, UserFactory
from webapp.models import Judge, JudgeRun, Judgment, Membership
from webapp.services import judging

pytestmark = pytest.mark.django_db

OPENAI_FORM = {
    "name": "gpt-judge",
    "backend": "openai",
    "model": "gpt-4o-mini",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": "OPENAI_API_KEY",
    "price_prompt": "0.15",
    "price_completion": "0.60",
    "rpm": "500",
    "tpm": "200000",
}


@pytest.fixture
def manager_client(manager) -> Client:
    c = Client()
    c.force_login(manager)
    return c


def _judge(name: str = "loopback") -> Judge:
    return judging.create_judge(
        name=name, backend="openai", model="m", config={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    )


def test_only_the_projects_managers_reach_the_judging_page(client, project, manager, annotator):
    url = f"/p/{project.slug}/judging/"
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    assert client.post(f"/p/{project.slug}/judging/judges", OPENAI_FORM).status_code == 403
    outsider = UserFactory(username="outsider")
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    client.force_login(manager)
    assert client.get(url).status_code == 200


def test_a_manager_creates_an_openai_judge_with_prices_and_limits(manager_client, project):
    response = manager_client.post(f"/p/{project.slug}/judging/judges", OPENAI_FORM)
    assert response.status_code == 302
    judge = Judge.objects.get(name="gpt-judge")
    assert (judge.backend, judge.model) == ("openai", "gpt-4o-mini")
    assert judge.config == {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY"}
    assert (str(judge.price_prompt_per_m), str(judge.price_completion_per_m)) == ("0.1500", "0.6000")
    assert (judge.requests_per_minute, judge.tokens_per_minute) == (500, 200000)
    page = manager_client.get(f"/p/{project.slug}/judging/").content.decode()
    assert "gpt-judge" in page
    assert "500 req/min" in page


def test_a_secret_in_the_judge_settings_is_refused_next_to_the_field(manager_client, project):
    form = {**OPENAI_FORM, "config": '{"api_key": "sk-live-123"}'}
    response = manager_client.post(f"/p/{project.slug}/judging/judges", form)
    assert response.status_code == 400
    assert "api_key_env" in response.content.decode()
    assert not Judge.objects.filter(name="gpt-judge").exists()


def test_bad_judge_settings_are_named(manager_client, project):
    response = manager_client.post(f"/p/{project.slug}/judging/judges", {**OPENAI_FORM, "config": "{not json"})
    assert response.status_code == 400
    assert "not JSON" in response.content.decode()
    response = manager_client.post(
        f"/p/{project.slug}/judging/judges", {"name": "jury", "backend": "jury", "members": ["nobody", "none"]}
    )
    assert response.status_code == 400
    assert "no judge called" in response.content.decode()
    assert Judge.objects.count() == 0


def test_a_jury_is_made_of_existing_judges(manager_client, project):
    _judge("one")
    _judge("two")
    response = manager_client.post(
        f"/p/{project.slug}/judging/judges",
        {"name": "panel", "backend": "jury", "members": ["one", "two"], "rule": "mean"},
    )
    assert response.status_code == 302
    jury = Judge.objects.get(name="panel")
    assert sorted(jury.members.values_list("name", flat=True)) == ["one", "two"]
    assert jury.config == {"rule": "mean"}


def test_starting_a_run_queues_both_orders_of_every_item_after_commit(
    manager_client, project, django_capture_on_commit_callbacks
):
    judge = _judge()
    items = [ItemFactory(project=project) for _ in range(5)]
    with django_capture_on_commit_callbacks() as callbacks:
        response = manager_client.post(f"/p/{project.slug}/judging/runs", {"judge": judge.pk, "limit": "3"})
    assert response.status_code == 302
    run = JudgeRun.objects.get()
    assert run.items_total == 3
    assert len(callbacks) == 1  # the chunks go out only once the run is committed
    units = Judgment.objects.filter(run=run).order_by("item_id", "order")
    assert [(u.item_id, u.order, u.status) for u in units] == [
        (item.pk, order, "pending") for item in items[:3] for order in ("0-1", "1-0")
    ]
    page = manager_client.get(f"/p/{project.slug}/judging/").content.decode()
    assert f"#{run.pk}" in page
    assert 'hx-trigger="every 2s"' in page


def test_the_run_page_polls_its_progress_partial_while_the_run_goes(manager_client, project):
    ItemFactory(project=project)
    run = judging.start_run(project, _judge(), enqueue=False)
    full = manager_client.get(f"/p/{project.slug}/judging/runs/{run.pk}/")
    assert full.status_code == 200
    assert "<html" in full.content.decode()
    partial = manager_client.get(f"/p/{project.slug}/judging/runs/{run.pk}/", headers={"HX-Request": "true"})
    body = partial.content.decode()
    assert body.lstrip().startswith('<section id="progress"')
    assert "<html" not in body
    assert "0 / 2" in body


def test_a_second_run_of_the_same_judge_waits_for_the_first(manager_client, project):
    ItemFactory(project=project)
    judge = _judge()
    first = judging.start_run(project, judge, enqueue=False)
    response = manager_client.post(f"/p/{project.slug}/judging/runs", {"judge": judge.pk})
    assert response.status_code == 400
    assert f"run {first.pk}" in response.content.decode()


def test_cancelling_a_run_stops_its_chunks(manager_client, project):
    item = ItemFactory(project=project)
    run = judging.start_run(project, _judge(), enqueue=False)
    assert manager_client.post(f"/p/{project.slug}/judging/runs/{run.pk}/cancel").status_code == 302
    run.refresh_from_db()
    assert run.status == JudgeRun.CANCELLED
    assert run.finished_at is not None
    # A chunk picked up after the cancel does nothing: no call, no verdict.
    assert judging.judge_chunk(run.pk, [item.pk]).skipped
    assert set(Judgment.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}


def test_a_run_with_nothing_left_to_judge_is_done_at_once(manager_client, project):
    judge = _judge()
    response = manager_client.post(f"/p/{project.slug}/judging/runs", {"judge": judge.pk})
    assert response.status_code == 302
    assert JudgeRun.objects.get().status == JudgeRun.DONE


def test_runs_of_another_project_are_not_found(manager_client, project):
    other = MembershipFactory(role=Membership.MANAGER).project
    ItemFactory(project=other)
    run = judging.start_run(other, _judge(), enqueue=False)
    assert manager_client.get(f"/p/{project.slug}/judging/runs/{run.pk}/").status_code == 404
    assert manager_client.post(f"/p/{project.slug}/judging/runs/{run.pk}/cancel").status_code == 404
