"""Failure drill: LLM endpoints that answer garbage, hang, or rate-limit for minutes, on a real worker.

What one request does with such an endpoint is tested already: tests/test_openai_judge.py (a garbled body is
retried, unreadable output fails for good with the raw output kept, a slow answer times out retryable, a
Retry-After longer than the backoff cap is handed back at once), tests/test_judging.py (failures are stored
as failures, retryable ones until the last try) and tests/test_celery_worker.py (a worker retries 503s with
backoff). This drill puts the three bad endpoints behind one Celery worker at the same time, with gunicorn
serving annotators: each run degrades as it should (garbage: failed and recorded, the run ends; a hang:
timeouts recorded, retried with backoff; a 429 asking for 2 minutes: the run waits, its chunk scheduled for
then), the worker neither crashes nor blocks (a good run queued behind them finishes), and the annotate page
and submits are as fast as before. See docs/operations.md, "Failure drills".
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from tests.drill_support import (
    PrivateRedis,
    Worker,
    annotators,
    celery_broker,
    database_url,
    htmx_submit,
    needs_redis_server,
    seed_annotation_project,
    start_gunicorn,
    stop,
)
from tests.fake_openai import FakeOpenAI, Reply, chat_reply, rate_limited
from webapp.models import Judge, JudgeRun, Judgment, Project
from webapp.services import judging

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180), needs_redis_server]
SAVED = b'role="status">Saved.</p>'
LIMIT = 3  # items per run: 6 requests


def _judge(name: str, fake: FakeOpenAI, **config: Any) -> Judge:
    return judging.create_judge(
        name=name, backend="openai", model="fake", config={"base_url": fake.url, "max_retries": 0, **config}
    )


def _annotation_latencies(people: list[Any], rounds: int) -> list[float]:
    """Page loads and htmx submits (seconds), each of which must work."""
    out = []
    for _ in range(rounds):
        for a in people:
            out.append(a.open_page())
            start = time.perf_counter()
            status, _, page = htmx_submit(a, a.answer())
            out.append(time.perf_counter() - start)
            assert status == 200
            assert SAVED in page
    return out


def _units(run: JudgeRun) -> list[Judgment]:
    return list(Judgment.objects.filter(run=run).exclude(order="combined"))


def test_bad_llm_endpoints_degrade_their_runs_and_nothing_else(transactional_db, tmp_path):
    seeded = seed_annotation_project(n_items=200, n_annotators=2)
    project = Project.objects.get(pk=seeded["project_id"])
    db = database_url()

    nonsense = [
        "As an AI model I find both answers equally delightful.",
        "overall: Z-is-better-than-everything",
        '{"labels": {"overall": 42}, "rationale": ',
    ]

    def garbage(received: Any) -> Reply:
        # 200 OK, and nothing a verdict can be read from: prose, a label off the scale, cut-off JSON.
        return chat_reply(nonsense[len(garbage_server.chat_requests) % len(nonsense)])

    worker = None
    with (
        PrivateRedis(tmp_path / "redis") as redis_server,
        FakeOpenAI(garbage) as garbage_server,
        FakeOpenAI(delay_s=30) as hanging,
        FakeOpenAI(lambda received: rate_limited(120)) as limiting,
        FakeOpenAI(verdict="longer") as healthy,
    ):
        broker = redis_server.url()
        server, port = start_gunicorn(tmp_path, database=db, broker=broker)
        try:
            people = annotators(port, seeded["usernames"])
            before = _annotation_latencies(people, rounds=4)

            judges = {
                "garbage": _judge("drill-garbage", garbage_server, structured="off"),
                "hang": _judge("drill-hang", hanging, timeout_s=0.3),
                "limit": _judge("drill-429", limiting),
                "healthy": _judge("drill-healthy", healthy),
            }
            worker = Worker(tmp_path, database=db, broker=broker).wait_ready()
            with celery_broker(broker):
                runs = {key: judging.start_run(project, judge, limit=LIMIT) for key, judge in judges.items()}

            # Annotation goes on, measured all along, while the worker fights the endpoints.
            def finished(key: str) -> bool:
                runs[key].refresh_from_db()
                return runs[key].status == JudgeRun.DONE

            def degraded_as_expected() -> bool:
                return (
                    finished("healthy")  # queued behind the bad runs: the worker is not stuck
                    and finished("garbage")
                    and all(u.attempts >= 2 for u in _units(runs["hang"]))  # timed out, tried again after a backoff
                    and all(u.attempts >= 1 for u in _units(runs["limit"]))
                )

            during: list[float] = []
            deadline = time.monotonic() + 60
            while not degraded_as_expected():
                if worker.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"runs {[(k, r.status) for k, r in runs.items()]}:\n{worker.output()[-4000:]}")
                during += _annotation_latencies(people, rounds=1)
            after = _annotation_latencies(people, rounds=2)
            assert worker.proc.poll() is None, "the worker died"
            worker_log = worker.output()
        finally:
            stop(server)
            for run in JudgeRun.objects.filter(status__in=(JudgeRun.QUEUED, JudgeRun.RUNNING)):
                judging.cancel_run(run)
            if worker is not None:
                worker.stop()

    # Garbage: every unit failed for good, with what the endpoint said kept for a person to read; the run ended.
    garbage_units = _units(runs["garbage"])
    assert len(garbage_units) == 2 * LIMIT
    assert {(u.status, u.retryable) for u in garbage_units} == {(Judgment.FAILED, False)}
    assert all(u.error for u in garbage_units)
    assert any("delightful" in u.raw_output for u in garbage_units)
    assert runs["garbage"].status == JudgeRun.DONE
    # A hang: timeouts, recorded as retryable failures; the chunk came back after a backoff.
    hang_units = _units(runs["hang"])
    assert all(u.error.startswith("timeout") and u.retryable for u in hang_units if u.status == Judgment.FAILED)
    assert min(u.attempts for u in hang_units) >= 2
    # A 429 for two minutes: the run waits, its chunk scheduled for when the endpoint asked.
    limit_units = _units(runs["limit"])
    assert {(u.status, u.retryable) for u in limit_units} == {(Judgment.FAILED, True)}
    assert all("429" in u.error for u in limit_units)
    assert len(limiting.chat_requests) == 2 * LIMIT  # nobody hammered it meanwhile
    assert "Retry in 12" in worker_log or "Retry in 13" in worker_log, worker_log[-3000:]
    # The healthy run, behind them in the queue, has every verdict.
    assert Judgment.objects.filter(run=runs["healthy"], status=Judgment.DONE).count() == 3 * LIMIT

    # Annotation did not notice.
    def summary(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms"

    print(f"\nllm faults drill: annotation before {summary(before)}; during {summary(during)}; after {summary(after)}")
    assert max(during + after) < 2.0
    assert statistics.median(during) < max(0.3, 3 * statistics.median(before))
