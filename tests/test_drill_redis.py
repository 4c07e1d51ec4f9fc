"""Failure drill: Redis (the cache and the Celery broker) goes down.

The annotation queue lives in PostgreSQL, and Redis only caches sessions and rendered Markdown, so the web
app goes on serving the annotate page and taking submits, each paying at most one short timeout
(webapp/cache.py). A judge run started meanwhile is saved with its units and stays queued
(webapp/services/judging.py _enqueue); once Redis is back, `manage.py judge SLUG --judge NAME --resume`
sends it and a worker finishes it. The drill uses a redis-server of its own on a free port, as both cache and
broker of a gunicorn it starts. See docs/operations.md, "Failure drills".
"""

from __future__ import annotations

import re
import statistics
import time
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command

from tests.drill_support import (
    PASSWORD,
    SLUG,
    Annotator,
    Browser,
    PrivateRedis,
    Worker,
    annotators,
    celery_broker,
    database_url,
    free_port,
    gunicorn_log,
    htmx_submit,
    needs_redis_server,
    seed_annotation_project,
    start_gunicorn,
    stop,
)
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.fake_openai import FakeOpenAI
from webapp import cache as hp_cache
from webapp.models import JudgeRun, Judgment, Membership, Project
from webapp.services import judging

pytestmark = needs_redis_server
SAVED = b'role="status">Saved.</p>'
_FORM_TOKEN = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- the cache on its own ------------------------------------------------------------------------------


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    monkeypatch.setattr(hp_cache, "DOWN_S", 0.5)
    hp_cache.reset_health()
    with PrivateRedis(tmp_path / "redis") as server:
        cache = hp_cache.RedisCache(
            server.url(), {"KEY_PREFIX": "t", "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}
        )
        yield server, cache
    hp_cache.reset_health()


def _timed(call: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def test_a_dead_redis_is_a_miss_and_writes_are_dropped_without_an_error(cache_on):
    server, cache = cache_on
    cache.set("a", 1)
    assert cache.get("a") == 1
    server.kill()
    assert _timed(lambda: cache.get("a", "missing"))[0] == "missing"
    cache.set("a", 2)
    cache.set_many({"b": 1, "c": 2})
    assert cache.get_many(["a", "b"]) == {}
    assert cache.add("d", 1) is False
    assert cache.delete("a") is False
    cache.delete_many(["b", "c"])
    assert cache.has_key("a") is False
    assert cache.get_or_set("e", 5) == 5
    with pytest.raises(redis.exceptions.ConnectionError):
        cache.incr("a")


def test_a_hung_redis_costs_one_short_timeout_then_nothing_until_it_is_asked_again(cache_on):
    server, cache = cache_on
    cache.set("a", 1)
    server.pause()
    try:
        first, first_s = _timed(lambda: cache.get("a", "missing"))
        rest = [_timed(lambda: cache.get("a", "missing")) for _ in range(20)]
    finally:
        server.resume()
    assert first == "missing"
    print(f"\nhung Redis: the first call waited {first_s:.2f} s")
    assert first_s < 3.0, f"the first call waited {first_s:.2f} s"
    assert all(value == "missing" for value, _ in rest)
    assert max(s for _, s in rest) < 0.05, "Redis was asked again within DOWN_S"
    time.sleep(hp_cache.DOWN_S + 0.1)
    assert cache.get("a") == 1


def test_what_was_written_during_the_outage_is_dropped_from_redis_when_it_is_back(cache_on):
    """A session logged out while Redis hung must not come back with Redis (cached_db reads Redis first)."""
    server, cache = cache_on
    raw = redis.Redis(port=server.port)
    cache.set("kept", "yes")
    server.pause()
    try:
        cache.delete("session")  # the logout: its delete times out
        cache.set("other", "x")
    finally:
        server.resume()
    # A stopped Redis still runs what was sent once it goes on; a lost packet or a failover would not:
    # the copies that the delete and the set were meant to replace, still there.
    raw.set(cache.make_key("session"), b"stale")
    raw.set(cache.make_key("other"), b"stale")
    time.sleep(hp_cache.DOWN_S + 0.1)
    assert cache.get("kept") == "yes"  # the first call after the outage drops the lost keys first
    assert not raw.exists(cache.make_key("session"))
    assert not raw.exists(cache.make_key("other"))
    assert cache.get("session") is None


# --- a judge run while the broker is down ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_started_while_the_broker_is_down_is_kept_queued_and_resume_sends_its_open_units(
    monkeypatch, django_capture_on_commit_callbacks
):
    project = ProjectFactory(slug="broker-down", aspects=["overall"])
    items = [ItemFactory(project=project) for _ in range(5)]
    judge = judging.create_judge(
        name="broker-down", backend="openai", model="fake", config={"base_url": "http://127.0.0.1:9/v1"}
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with celery_broker(dead), django_capture_on_commit_callbacks(execute=True):
        run = judging.start_run(project, judge, chunk_size=2)
    assert "unreachable" in judging.enqueue_error(run)
    run.refresh_from_db()
    assert run.status == JudgeRun.QUEUED
    assert Judgment.objects.filter(run=run, status=Judgment.PENDING).count() == 10
    with celery_broker(dead), pytest.raises(CommandError, match="could not be sent"):
        call_command("judge", "broker-down", "--judge", "broker-down", "--resume", stdout=StringIO())

    # Meanwhile: one item judged, one failed for good, one failed with tries left.
    units = Judgment.objects.filter(run=run)
    units.filter(item=items[0]).update(status=Judgment.DONE, labels={"overall": "Tie"})
    units.filter(item=items[1]).update(status=Judgment.FAILED, retryable=False, attempts=1)
    units.filter(item=items[2]).update(status=Judgment.FAILED, retryable=True, attempts=2)
    sent: list[tuple[int, list[int]]] = []
    monkeypatch.setattr("webapp.tasks.judge_chunk.delay", lambda run_id, chunk: sent.append((run_id, chunk)))
    assert judging.resume_run(run) == 3
    assert judging.enqueue_error(run) == ""
    assert sent == [(run.pk, [items[2].pk, items[3].pk]), (run.pk, [items[4].pk])]

    JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRun.DONE)
    with pytest.raises(judging.JudgingError, match="only a queued or running run"):
        judging.resume_run(run)


@pytest.mark.django_db
def test_a_run_started_while_the_broker_hangs_answers_within_seconds_and_stays_queued(
    django_capture_on_commit_callbacks,
):
    """A broker that accepts connections but never answers: the send gives up (socket timeouts in settings)."""
    import socket
    import threading

    from django.conf import settings

    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] == 3.0
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == 900  # over the 300 s retry wait
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    project = ProjectFactory(slug="broker-hung", aspects=["overall"])
    for _ in range(3):
        ItemFactory(project=project)
    judge = judging.create_judge(
        name="broker-hung", backend="openai", model="fake", config={"base_url": "http://127.0.0.1:9/v1"}
    )
    try:
        with celery_broker(f"redis://127.0.0.1:{listener.getsockname()[1]}/0"):
            start = time.perf_counter()
            with django_capture_on_commit_callbacks(execute=True):
                run = judging.start_run(project, judge, chunk_size=2)
            waited = time.perf_counter() - start
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    print(f"\nhung broker: the send gave up after {waited:.1f} s")
    assert held, "the send never reached the hung broker"
    assert waited < 30  # without the socket timeouts it would wait forever
    assert judging.enqueue_error(run)
    run.refresh_from_db()
    assert run.status == JudgeRun.QUEUED
    assert Judgment.objects.filter(run=run, status=Judgment.PENDING).count() == 6


# --- the drill -----------------------------------------------------------------------------------------


def _login_page_token(browser: Browser, path: str) -> str:
    status, _, page = browser.request("GET", path)
    token = _FORM_TOKEN.search(page)
    assert status == 200
    assert token is not None
    return token.group(1).decode()


def _annotate_once(a: Annotator) -> tuple[float, float]:
    """Open the annotate page, then submit it; returns both latencies (s). Anything but a save fails."""
    page_s = a.open_page()
    start = time.perf_counter()
    status, _, page = htmx_submit(a, a.answer())
    submit_s = time.perf_counter() - start
    assert status == 200, page[:500]
    assert SAVED in page, page[:500]
    return page_s, submit_s


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_with_redis_down_annotation_goes_on_and_a_judge_run_waits_then_finishes(transactional_db, tmp_path):
    seeded = seed_annotation_project(n_items=40, n_annotators=2)
    project = Project.objects.get(pk=seeded["project_id"])
    manager = UserFactory(username="drill-manager", password=PASSWORD)
    MembershipFactory(project=project, user=manager, role=Membership.MANAGER)
    db = database_url()
    worker = None
    with PrivateRedis(tmp_path / "redis") as redis_server, FakeOpenAI(verdict="longer") as fake:
        judge = judging.create_judge(
            name="drill-redis", backend="openai", model="fake", config={"base_url": fake.url, "max_retries": 0}
        )
        server, port = start_gunicorn(tmp_path, database=db, broker=redis_server.url(0))
        try:
            people = annotators(port, seeded["usernames"])
            up = [_annotate_once(a) for a in people]
            assert redis.Redis(port=redis_server.port).keys("hybridpref:*"), "the app does not use the cache"

            # 1. Redis killed: connections refused.
            redis_server.kill()
            dead = [_annotate_once(a) for _ in range(3) for a in people]

            # A manager starts a judge run in the web app meanwhile: saved, queued, and said so.
            boss = Annotator("drill-manager", PASSWORD, Browser(port), people[0].rng)
            boss.login()
            token = _login_page_token(boss.browser, f"/p/{SLUG}/judging/")
            fields = [("csrfmiddlewaretoken", token), ("judge", str(judge.pk)), ("limit", "6"), ("orders", "both")]
            status, headers, _ = boss.browser.request("POST", f"/p/{SLUG}/judging/runs", fields)
            assert status == 302, gunicorn_log(tmp_path)
            _, _, page = boss.browser.request("GET", headers["Location"])
            assert b"could not be reached" in page
            run = JudgeRun.objects.get(project=project, judge=judge)
            assert run.status == JudgeRun.QUEUED
            assert Judgment.objects.filter(run=run, status=Judgment.PENDING).count() == 12
            # Resuming while the broker is still down says so, and changes nothing.
            with celery_broker(redis_server.url(0)), pytest.raises(CommandError, match="--resume"):
                call_command("judge", SLUG, "--judge", judge.name, "--resume", "--no-wait", stdout=StringIO())

            # 2. Redis back but hung (SIGSTOP): connections open, nothing answers.
            redis_server.start()
            redis_server.pause()
            time.sleep(hp_cache.DOWN_S + 0.5)  # the web processes' pause after the refusals is over: they ask
            try:
                hung = [_annotate_once(a) for _ in range(3) for a in people]
            finally:
                redis_server.resume()

            # 3. Redis answers again: the run is sent, a worker finishes it.
            with celery_broker(redis_server.url(0)):
                out = StringIO()
                call_command("judge", SLUG, "--judge", judge.name, "--resume", "--no-wait", stdout=out)
            assert f"run {run.pk}: 6 item(s) with open units sent to the workers again" in out.getvalue()
            worker = Worker(tmp_path, database=db, broker=redis_server.url(0)).wait_ready()
            deadline = time.monotonic() + 60
            while run.status != JudgeRun.DONE:
                assert time.monotonic() < deadline, worker.output()
                time.sleep(0.2)
                run.refresh_from_db()
            # And the web app uses Redis again once its pause (webapp/cache.py DOWN_S) is over.
            deadline = time.monotonic() + hp_cache.DOWN_S + 15
            while not redis.Redis(port=redis_server.port).keys("hybridpref:*"):
                assert time.monotonic() < deadline, "the app did not go back to its cache"
                people[0].open_page()
                time.sleep(0.3)
        finally:
            stop(server)
            if worker is not None:
                worker.stop()

    units = list(Judgment.objects.filter(judge=judge).values_list("item_id", "order", "status"))
    assert len(units) == 18  # 6 items x (2 orders + combined)
    assert len({(item, order) for item, order, _ in units}) == 18
    assert {status for _, _, status in units} == {Judgment.DONE}
    assert len(fake.chat_requests) == 12

    def summary(pairs: list[tuple[float, float]]) -> str:
        flat = [s for pair in pairs for s in pair]
        return f"median {statistics.median(flat) * 1000:.0f} ms, max {max(flat) * 1000:.0f} ms"

    print(f"\nredis drill: up {summary(up)}; killed {summary(dead)}; hung {summary(hung)}")
    # Dead: refused at once. Hung: one socket timeout (0.5 s) per web process, then nothing for DOWN_S.
    assert max(s for pair in dead for s in pair) < 1.5
    assert max(s for pair in hung for s in pair) < 3.0
    assert statistics.median(s for pair in hung for s in pair) < 0.5
