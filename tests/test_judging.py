"""Judge runs end to end on PostgreSQL against a real OpenAI-compatible server on 127.0.0.1.

The chunks run in this process here (start_run(enqueue=False) + judge_chunk, as the Celery task
and `manage.py judge --inline` call them); tests/test_celery_worker.py runs them on a real worker.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import ItemFactory, ProjectFactory
from tests.fake_openai import FakeOpenAI, chat_reply, error_reply
from webapp import selectors
from webapp.models import Judge, JudgeRun, Judgment
from webapp.scheme import LIKERT5_LABELS, flatten_ranking
from webapp.services import judging

pytestmark = pytest.mark.django_db

SHORT, LONG = "Paris.", "The capital of France is Paris, on the Seine."


def _openai_judge(fake: FakeOpenAI, name: str = "loopback", **config: object) -> Judge:
    settings = {"base_url": fake.url, "max_retries": 0, "concurrency": 4, **config}
    return judging.create_judge(
        name=name,
        backend="openai",
        model="fake-judge",
        config=settings,
        price_prompt_per_m="2",
        price_completion_per_m="10",
    )


def _run_all(run: JudgeRun) -> None:
    """What the workers do: every chunk, with its retries, the last try marked final."""
    for chunk in judging.run_chunks(run):
        for attempt in range(judging.MAX_ATTEMPTS):
            result = judging.judge_chunk(run.pk, chunk, final=attempt == judging.MAX_ATTEMPTS - 1)
            if not result.retryable:
                break
    judging.finish_chunk_after_last_try(run.pk)
    run.refresh_from_db()


@pytest.fixture
def pairwise(db):
    project = ProjectFactory(slug="pairs", aspects=["overall", "helpful"])
    # The longer response is A in half the items and B in the other half.
    items = [ItemFactory(project=project, responses=[LONG, SHORT] if i % 2 == 0 else [SHORT, LONG]) for i in range(4)]
    return project, items


def test_a_run_labels_every_item_in_both_orders_and_combines_them(pairwise):
    project, items = pairwise
    with FakeOpenAI(verdict="longer") as fake:
        judge = _openai_judge(fake)
        run = judging.start_run(project, judge, enqueue=False)
        _run_all(run)
        assert len(fake.chat_requests) == 8
    assert run.status == JudgeRun.DONE
    assert run.finished_at is not None
    for i, item in enumerate(items):
        rows = {j.order: j for j in Judgment.objects.filter(item=item, judge=judge)}
        assert sorted(rows) == ["0-1", "1-0", "combined"]
        expected = LIKERT5_LABELS[0] if i % 2 == 0 else LIKERT5_LABELS[4]
        # Stored in canonical order whichever order was shown.
        assert rows["0-1"].labels == rows["1-0"].labels == {"overall": expected, "helpful": expected}
        combined = rows["combined"]
        assert combined.labels == {"overall": expected, "helpful": expected}
        assert combined.order_inconsistent is False
        assert all(r.prompt_version == run.prompt_version and r.status == "done" for r in rows.values())
        assert rows["1-0"].raw_output.startswith("{")
        assert rows["1-0"].rationale
    progress = selectors.run_progress(run)
    assert (progress.total, progress.done, progress.failed, progress.remaining) == (8, 8, 0, 0)
    assert progress.prompt_tokens > 0
    assert progress.completion_tokens > 0
    expected_cost = (Decimal(progress.prompt_tokens) * 2 + Decimal(progress.completion_tokens) * 10) / 1_000_000
    assert abs(progress.cost - expected_cost) < Decimal("0.00001")


def test_a_judge_that_always_prefers_the_first_shown_response_is_caught_by_the_swap(pairwise):
    project, items = pairwise
    with FakeOpenAI(verdict="A") as fake:
        judge = _openai_judge(fake)
        run = judging.start_run(project, judge, enqueue=False)
        _run_all(run)
    for item in items:
        combined = Judgment.objects.get(item=item, judge=judge, order="combined")
        assert combined.labels == {"overall": "Tie", "helpful": "Tie"}
        assert combined.order_inconsistent is True
        assert combined.details["inconsistent"] == {"overall": True, "helpful": True}
    assert selectors.run_progress(run).inconsistent == len(items)


def test_running_a_chunk_again_calls_nobody_and_writes_nothing_new(pairwise):
    project, items = pairwise
    with FakeOpenAI(verdict="longer") as fake:
        run = judging.start_run(project, _openai_judge(fake), enqueue=False)
        _run_all(run)
        before = (len(fake.chat_requests), Judgment.objects.count())
        result = judging.judge_chunk(run.pk, [i.pk for i in items])
        assert result.skipped  # the run is done
        JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRun.RUNNING)
        result = judging.judge_chunk(run.pk, [i.pk for i in items])
        assert (result.judged, result.failed) == (0, 0)
        assert (len(fake.chat_requests), Judgment.objects.count()) == before


def test_limit_takes_the_next_not_yet_judged_items(pairwise):
    project, items = pairwise
    with FakeOpenAI(verdict="longer") as fake:
        judge = _openai_judge(fake)
        first = judging.start_run(project, judge, limit=3, enqueue=False)
        _run_all(first)
        second = judging.start_run(project, judge, limit=3, enqueue=False)
        _run_all(second)
        third = judging.start_run(project, judge, enqueue=False)
    assert (first.items_total, second.items_total, third.items_total) == (3, 1, 0)
    assert third.status == JudgeRun.DONE
    assert set(Judgment.objects.filter(run=second, order="combined").values_list("item_id", flat=True)) == {items[3].pk}


def test_unreadable_output_is_stored_as_a_failure_not_a_label_and_can_be_retried(
    pairwise, django_capture_on_commit_callbacks
):
    project, items = pairwise
    with FakeOpenAI(script=lambda req: chat_reply("I cannot decide, both are fine.")) as fake:
        judge = _openai_judge(fake, structured="off")
        run = judging.start_run(project, judge, limit=1, enqueue=False)
        _run_all(run)
    rows = Judgment.objects.filter(run=run).exclude(order="combined")
    assert {(r.status, r.retryable, r.labels == {}) for r in rows} == {("failed", False, True)}
    assert all("I cannot decide" in r.raw_output and r.error for r in rows)
    assert not Judgment.objects.filter(item=items[0], judge=judge, order="combined").exists()
    assert run.status == JudgeRun.DONE
    assert selectors.run_progress(run).failed == 2

    with FakeOpenAI(verdict="longer") as good:
        # Same endpoint settings, a server that now answers: the failed units go again.
        Judge.objects.filter(pk=judge.pk).update(config={**judge.config, "base_url": good.url})
        with django_capture_on_commit_callbacks() as callbacks:
            assert judging.retry_failed(run) == 1
        assert len(callbacks) == 1
        run.refresh_from_db()
        assert run.status == JudgeRun.RUNNING
        judge.refresh_from_db()
        # The prompt version is the run's: only the URL changed, and it is not part of the version.
        _run_all(run)
    assert Judgment.objects.get(item=items[0], judge=judge, order="combined").labels["overall"] == LIKERT5_LABELS[0]


def test_server_errors_are_retryable_failures_until_the_last_try(pairwise):
    project, _items = pairwise
    with FakeOpenAI(script=lambda req: error_reply(503)) as fake:
        run = judging.start_run(project, _openai_judge(fake), limit=1, enqueue=False)
        chunk = judging.run_chunks(run)[0]
        first = judging.judge_chunk(run.pk, chunk)
        assert (first.retryable, first.judged) == (2, 0)
        run.refresh_from_db()
        assert run.status == JudgeRun.RUNNING  # waiting for the retry
        for attempt in range(1, judging.MAX_ATTEMPTS):
            judging.judge_chunk(run.pk, chunk, final=attempt == judging.MAX_ATTEMPTS - 1)
        judging.finish_chunk_after_last_try(run.pk)
        assert len(fake.chat_requests) == 2 * judging.MAX_ATTEMPTS
    run.refresh_from_db()
    assert run.status == JudgeRun.DONE
    rows = Judgment.objects.filter(run=run).exclude(order="combined")
    assert {(r.status, r.retryable, r.attempts) for r in rows} == {("failed", True, judging.MAX_ATTEMPTS)}
    assert "503" in rows[0].error


def test_a_half_failed_item_keeps_its_good_order_and_gets_no_combined_label(pairwise):
    project, _items = pairwise
    calls = []

    def first_ok_then_500(req):
        calls.append(req)
        return None if len(calls) == 1 else error_reply(500)

    with FakeOpenAI(first_ok_then_500, verdict="longer") as fake:
        run = judging.start_run(project, _openai_judge(fake, concurrency=1), limit=1, enqueue=False)
        judging.judge_chunk(run.pk, judging.run_chunks(run)[0], final=True)
    statuses = sorted(Judgment.objects.filter(run=run).values_list("status", flat=True))
    assert statuses == ["done", "failed"]


def test_a_jury_combines_its_members_and_records_their_votes(pairwise):
    project, items = pairwise
    with FakeOpenAI(verdict="longer") as fake_a, FakeOpenAI(verdict="longer") as fake_b:
        _openai_judge(fake_a, name="member-a")
        _openai_judge(fake_b, name="member-b")
        jury = judging.create_judge(name="panel", backend="jury", members=["member-a", "member-b"])
        run = judging.start_run(project, jury, enqueue=False)
        _run_all(run)
        assert len(fake_a.chat_requests) == len(fake_b.chat_requests) == 8
    assert run.status == JudgeRun.DONE
    verdict = Judgment.objects.get(item=items[1], judge=jury, order="combined")
    assert verdict.labels == {"overall": LIKERT5_LABELS[4], "helpful": LIKERT5_LABELS[4]}
    assert verdict.details["votes"]["overall"] == {"A": 0, "tie": 0, "B": 2}
    assert verdict.details["disagreement"] == {"overall": 0.0, "helpful": 0.0}
    assert sorted(verdict.details["members"]) == ["member-a", "member-b"]
    # The members' own verdicts are kept too, under their own names.
    assert Judgment.objects.filter(judge__name="member-a", order="combined").count() == 4
    progress = selectors.run_progress(run)
    assert (progress.total, progress.done) == (4, 4)
    assert progress.prompt_tokens > 0  # the members' calls count toward the jury run's cost


def test_a_ranking_project_gets_a_ranking_merged_over_both_orders(db):
    project = ProjectFactory(slug="ranks", kind="ranking", aspects=["overall"])
    item = ItemFactory(
        project=project, responses=["Mid length answer.", "Short.", "The longest answer of the three here."]
    )
    with FakeOpenAI(verdict="longer") as fake:
        judge = _openai_judge(fake)
        run = judging.start_run(project, judge, enqueue=False)
        _run_all(run)
    rows = {j.order: j for j in Judgment.objects.filter(item=item, judge=judge)}
    assert sorted(rows) == ["0-1-2", "2-1-0", "combined"]
    assert rows["0-1-2"].ranking == rows["2-1-0"].ranking == [2, 0, 1]
    assert rows["combined"].ranking == [2, 0, 1]
    assert rows["combined"].order_inconsistent is False


def test_a_strength7_project_gets_numbers_with_the_helpsteer2_sign(db):
    project = ProjectFactory(slug="strength", scale="strength7", aspects=["overall"])
    item = ItemFactory(project=project, responses=[SHORT, LONG])
    with FakeOpenAI(verdict="longer") as fake:
        judge = _openai_judge(fake)
        _run_all(judging.start_run(project, judge, enqueue=False))
    assert Judgment.objects.get(item=item, judge=judge, order="combined").labels == {"overall": 3}


def test_the_api_key_comes_from_the_environment_and_is_stored_nowhere(pairwise, monkeypatch):
    project, _items = pairwise
    monkeypatch.setenv("HP_TEST_JUDGE_KEY", "sk-test-very-secret")
    with FakeOpenAI(verdict="longer", api_key="sk-test-very-secret") as fake:
        judge = _openai_judge(fake, api_key_env="HP_TEST_JUDGE_KEY")
        _run_all(judging.start_run(project, judge, limit=1, enqueue=False))
        assert fake.chat_requests[0].headers["authorization"] == "Bearer sk-test-very-secret"
    assert judge.config["api_key_env"] == "HP_TEST_JUDGE_KEY"
    for row in Judgment.objects.filter(judge=judge):
        assert row.status == "done"
        assert "very-secret" not in f"{row.raw_output}{row.error}{row.details}{row.rationale}"


def test_judges_on_one_endpoint_share_its_rate_limit(pairwise):
    with FakeOpenAI() as fake:
        a = _openai_judge(fake, name="a")
        b = _openai_judge(fake, name="b", temperature=0.5)
        for judge in (a, b):
            judge.requests_per_minute = 3
            judge.save()
        limiter_a, limiter_b = judging.limiter_for(a), judging.limiter_for(b)
        assert limiter_a is not None
        assert limiter_b is not None
        grants = [lim.try_acquire(1) == 0.0 for lim in (limiter_a, limiter_b, limiter_a, limiter_b)]  # type: ignore[attr-defined]
        assert grants == [True, True, True, False]


def test_creating_a_judge_checks_its_settings(db):
    with pytest.raises(judging.JudgingError, match="base_url"):
        judging.create_judge(name="x", backend="openai", model="m", config={})
    with pytest.raises(judging.JudgingError, match="nonsense"):
        judging.create_judge(name="x", backend="openai", model="m", config={"base_url": "http://h/v1", "nonsense": 1})
    with pytest.raises(judging.JudgingError, match="at least two"):
        judging.create_judge(name="x", backend="jury", members=["only"])
    with pytest.raises(judging.JudgingError, match="backend"):
        judging.create_judge(name="x", backend="telepathy")
    assert not Judge.objects.exists()


def test_local_reward_model_and_cdr_judges_run_through_the_same_path(db, tiny):
    project = ProjectFactory(slug="local", kind="ranking", aspects=["overall"])
    items = [
        ItemFactory(project=project, responses=["One.", "Two, longer.", "Three is the longest one."]) for _ in range(2)
    ]
    rm = judging.create_judge(name="tiny-rm", backend="reward-model", model=tiny["rm"])
    cdr = judging.create_judge(name="tiny-cdr", backend="cdr", model=tiny["strong"], config={"weak": tiny["weak"]})
    for judge in (rm, cdr):
        run = judging.start_run(project, judge, enqueue=False)
        _run_all(run)
        assert run.status == JudgeRun.DONE
        for item in items:
            combined = Judgment.objects.get(item=item, judge=judge, order="combined")
            assert sorted(flatten_ranking(combined.ranking)) == [0, 1, 2]
            # A scorer sees each response alone: the order cannot change its verdict.
            assert combined.order_inconsistent is False
    assert selectors.run_progress(run).failed == 0


def test_the_local_generative_judge_refuses_a_ranking_project_before_it_starts(db):
    project = ProjectFactory(slug="rank-gen", kind="ranking")
    ItemFactory(project=project, responses=["a", "b", "c"])
    judge = judging.create_judge(name="smol", backend="transformers-judge", model="smollm2")
    with pytest.raises(judging.JudgingError, match="pairwise"):
        judging.start_run(project, judge, enqueue=False)
