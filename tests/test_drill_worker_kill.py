"""Failure drill: a Celery worker killed (SIGKILL, whole process group) in the middle of a judge run.

Tasks are acked late (settings.CELERY_TASK_ACKS_LATE, webapp/tasks.py), so the chunk the worker was judging
stays in Redis's "unacked" set; once the broker's visibility timeout has passed, the next worker puts it
back in the queue and judges it. A chunk only judges its run's open rows and the (item, judge, order,
prompt version) unique constraint keeps each verdict once, so the run ends with every judgment there
exactly once. See docs/operations.md, "Failure drills".
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.drill_support import PrivateRedis, Worker, celery_broker, database_url, needs_redis_server
from tests.factories import ItemFactory, ProjectFactory
from tests.fake_openai import FakeOpenAI
from webapp.models import JudgeRun, Judgment
from webapp.services import judging

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150), needs_redis_server]

N_ITEMS = 12
# A killed worker's task comes back after this many seconds (Redis's default is an hour: see the docs).
TRANSPORT = {"visibility_timeout": 3, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


def _wait(condition, timeout: float, what: str, *workers: Worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(w.output()[-3000:] for w in workers)
            pytest.fail(f"{what}: not within {timeout} s\n{logs}")
        time.sleep(0.05)


def test_a_run_whose_worker_is_killed_mid_chunk_finishes_on_the_next_worker_with_each_judgment_once(
    transactional_db, tmp_path
):
    project = ProjectFactory(slug="drill-worker-kill", aspects=["overall"])
    items = [
        ItemFactory(project=project, responses=["Short.", f"A much longer answer, number {k}."]) for k in range(N_ITEMS)
    ]
    db = database_url()
    with PrivateRedis(tmp_path / "redis") as redis_server, FakeOpenAI(delay_s=0.5, verdict="longer") as fake:
        broker = redis_server.url()
        judge = judging.create_judge(
            name="drill-kill", backend="openai", model="fake", config={"base_url": fake.url, "max_retries": 0}
        )
        first = Worker(tmp_path, database=db, broker=broker, name="first", **TRANSPORT).wait_ready()
        second = None
        try:
            with celery_broker(broker):
                run = judging.start_run(project, judge, chunk_size=2)

            def judged() -> int:
                return Judgment.objects.filter(run=run, status=Judgment.DONE).exclude(order="combined").count()

            # Mid-run: some chunks judged, and the worker waiting on the endpoint for the next one.
            _wait(lambda: judged() >= 4 and fake.in_flight > 0, 60, "a judged chunk and a request in flight", first)
            first.kill()
            killed_at = time.monotonic()
            killed_with = judged()
            requests_at_kill = len(fake.chat_requests)
            run.refresh_from_db()
            assert run.status == JudgeRun.RUNNING
            assert killed_with < 2 * N_ITEMS

            second = Worker(tmp_path, database=db, broker=broker, name="second", **TRANSPORT).wait_ready()

            def finished() -> bool:
                run.refresh_from_db()
                return run.status == JudgeRun.DONE

            _wait(finished, 60, f"run {run.pk} done after the restart", second)
            recovered_s = time.monotonic() - killed_at
        finally:
            first.stop()
            if second is not None:
                second.stop()
        asked = Counter((r.body["messages"][-1]["content"]) for r in fake.chat_requests)

    # Every (item, order) once, all judged; every item's combined verdict once.
    rows = list(Judgment.objects.filter(judge=judge).values_list("item_id", "order", "status"))
    per_unit = Counter((item_id, order) for item_id, order, _ in rows)
    expected = {(item.pk, order) for item in items for order in ("0-1", "1-0", "combined")}
    assert set(per_unit) == expected, "missing or extra judgments"
    assert set(per_unit.values()) == {1}, "a judgment stored twice"
    assert {status for _, _, status in rows} == {Judgment.DONE}
    assert Judgment.objects.filter(run=run).count() == 3 * N_ITEMS
    for item in items:
        assert Judgment.objects.get(item=item, judge=judge, order="combined").labels == {
            "overall": "B-is-clearly-better"
        }
    # The new worker took over the killed chunk: its prompts were asked again (at most one chunk's worth:
    # 2 items x 2 orders), and nothing already judged was asked twice.
    assert len(fake.chat_requests) > requests_at_kill
    repeated = sum(n - 1 for n in asked.values() if n > 1)
    assert 1 <= repeated <= 4, asked
    assert len(fake.chat_requests) == 2 * N_ITEMS + repeated
    print(
        f"\nworker-kill drill: killed with {killed_with}/{2 * N_ITEMS} units judged, {repeated} request(s) of the"
        f" killed chunk asked again, run done {recovered_s:.1f} s after the kill (second worker's start included)"
    )
