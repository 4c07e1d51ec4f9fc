"""The per-endpoint rate limit holds across workers: Redis token buckets, checked on the real Redis."""

import os
import threading
import time

import pytest
import redis

from annotators.ratelimit import LocalTokenBucket, RedisTokenBucket, bucket_key


@pytest.fixture
def client():
    url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    conn = redis.Redis.from_url(url.rsplit("/", 1)[0] + "/14")
    yield conn
    for key in conn.scan_iter("hybridpref:ratelimit:*"):
        conn.delete(key)


def test_a_fresh_bucket_grants_a_minutes_worth_of_requests_then_asks_to_wait(client):
    bucket = RedisTokenBucket(client, "http://a.test/v1", requests_per_minute=30)
    waits = [bucket.try_acquire(10) for _ in range(31)]
    assert waits[:30] == [0.0] * 30
    # One request refills every 2 s at 30 per minute.
    assert 1.5 < waits[30] <= 2.0


def test_two_workers_share_one_endpoints_budget(client):
    worker_a = RedisTokenBucket(client, "http://shared.test/v1", requests_per_minute=10)
    worker_b = RedisTokenBucket(client, "http://shared.test/v1", requests_per_minute=10)
    granted = [w.try_acquire(1) == 0.0 for _ in range(8) for w in (worker_a, worker_b)]
    assert sum(granted) == 10


def test_endpoints_have_separate_budgets_and_keys_hide_the_url(client):
    one = RedisTokenBucket(client, "http://one.test/v1?key=secret", requests_per_minute=1)
    two = RedisTokenBucket(client, "http://two.test/v1", requests_per_minute=1)
    assert one.try_acquire(1) == 0.0
    assert two.try_acquire(1) == 0.0
    assert one.try_acquire(1) > 0
    assert "secret" not in bucket_key("http://one.test/v1?key=secret")


def test_the_token_budget_limits_large_requests(client):
    bucket = RedisTokenBucket(client, "http://tokens.test/v1", tokens_per_minute=6000)
    assert bucket.try_acquire(5000) == 0.0
    wait = bucket.try_acquire(5000)
    # 4000 more tokens at 100 per second.
    assert 39 < wait <= 40


def test_acquire_blocks_until_the_bucket_refills(client):
    slept: list[float] = []
    # One request a second: emptying the bucket takes a few ms, so the next request waits most of a second
    # however busy the machine is (at 600 a minute, a slow drain had refilled the bucket by the end).
    bucket = RedisTokenBucket(client, "http://block.test/v1", requests_per_minute=60, sleep=slept.append)
    for _ in range(60):
        bucket.try_acquire(1)
    started = time.monotonic()
    real = RedisTokenBucket(client, "http://block.test/v1", requests_per_minute=60)
    real.acquire(1)
    assert time.monotonic() - started >= 0.5


def test_no_limit_means_no_redis_round_trip():
    class NoRedis:
        def register_script(self, _):
            return lambda **_: pytest.fail("called Redis")

    assert RedisTokenBucket(NoRedis(), "http://x.test").try_acquire(10_000) == 0.0


def test_the_in_process_bucket_holds_across_threads():
    bucket = LocalTokenBucket(requests_per_minute=20)
    granted: list[bool] = []

    def worker():
        for _ in range(10):
            granted.append(bucket.try_acquire(1) == 0.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 20
