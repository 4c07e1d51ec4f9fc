"""Django's Redis cache backend, keeping one client per connection pool, and going on without Redis.

django.core.cache.backends.redis makes a new redis.Redis (a few hundred dict operations to build its
command callbacks) for every cache call; the client is thread-safe and cheap to share, and on each
request's session read (cached_db sessions) that was most of the cost of the call.

Redis is a cache here, never the only copy (sessions are in the database too; see settings.CACHES), so a
Redis that is down or hangs must cost a request at most one short timeout, never an error: a call that
fails to connect or times out answers as a miss (get: the default, get_many: {}, has_key: False, add:
False), a write or delete that fails is dropped, and for DOWN_S seconds after a failure this process does
not ask Redis at all. incr and clear still raise (there is no safe answer); their callers handle it.

A write or delete that did not reach Redis could leave an old value there (a session logged out during the
outage would come back with Redis): the keys are remembered, and deleted first thing once Redis answers
again, so the next read goes to the database. Each process replays its own keys, on its next cache call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis
from django.core.cache.backends import redis as django_redis

log = logging.getLogger(__name__)
T = TypeVar("T")

# After a failure, Redis is left alone for this long (seconds) by this process.
DOWN_S = 5.0
# Remembered keys whose write or delete failed; past this many the oldest are forgotten (logged).
MAX_LOST_KEYS = 100_000
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _Health:
    """One Redis server list's state in this process, shared by every thread's client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.lost: dict[Any, None] = {}  # an ordered set


_health: dict[tuple[str, ...], _Health] = {}
_health_lock = threading.Lock()


def _health_for(servers: Iterable[str]) -> _Health:
    key = tuple(servers)
    with _health_lock:
        return _health.setdefault(key, _Health())


def reset_health() -> None:
    """Forget every failure (tests)."""
    with _health_lock:
        _health.clear()


class RedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, servers: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(servers, *args, **kwargs)
        self._clients: dict[int, Any] = {}
        self._health = _health_for(servers)

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)  # type: ignore[attr-defined]
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = super().get_client(key, write=write)
        return client

    # --- the guard ---

    def _guarded(self, call: Callable[[], T], fallback: T, written: Iterable[Any] = ()) -> T:
        health = self._health
        if health.down_until and time.monotonic() < health.down_until:
            self._remember(written)
            return fallback
        try:
            if health.lost:
                self._replay()
            result = call()
        except UNAVAILABLE as exc:
            self._remember(written)
            self._went_down(exc)
            return fallback
        if health.down_until:
            with health.lock:
                health.down_until = 0.0
            log.warning("cache: Redis answers again")
        return result

    def _raising(self, call: Callable[[], T]) -> T:
        """incr, clear: no answer stands in for theirs; fail fast while Redis is down."""
        health = self._health
        if health.down_until and time.monotonic() < health.down_until:
            raise redis.exceptions.ConnectionError("the cache's Redis failed a moment ago; not asked again yet")
        try:
            if health.lost:
                self._replay()
            return call()
        except UNAVAILABLE as exc:
            self._went_down(exc)
            raise

    def _went_down(self, exc: Exception) -> None:
        health = self._health
        with health.lock:
            first = not health.down_until
            health.down_until = time.monotonic() + DOWN_S
        if first:
            log.warning("cache: Redis failed (%s); going on without it, asking again every %g s", exc, DOWN_S)

    def _remember(self, keys: Iterable[Any]) -> None:
        health = self._health
        with health.lock:
            for key in keys:
                health.lost[key] = None
            overflow = len(health.lost) - MAX_LOST_KEYS
            if overflow > 0:
                for key in list(health.lost)[:overflow]:
                    del health.lost[key]
                log.error("cache: %d keys written during the Redis outage were forgotten", overflow)

    def _replay(self) -> None:
        """Delete the keys whose write or delete was lost (raises, keeping them, if Redis still fails)."""
        health = self._health
        with health.lock:
            keys = list(health.lost)
            health.lost.clear()
        if not keys:
            return
        try:
            for start in range(0, len(keys), 1000):
                super().delete_many(keys[start : start + 1000])
        except UNAVAILABLE:
            self._remember(keys)
            raise
        log.warning("cache: %d key(s) written during the Redis outage dropped from Redis", len(keys))

    # --- the calls ---

    def add(self, key: Any, value: Any, timeout: Any) -> bool:
        return self._guarded(lambda: super(RedisCacheClient, self).add(key, value, timeout), False, [key])

    def get(self, key: Any, default: Any) -> Any:
        return self._guarded(lambda: super(RedisCacheClient, self).get(key, default), default)

    def set(self, key: Any, value: Any, timeout: Any) -> None:
        self._guarded(lambda: super(RedisCacheClient, self).set(key, value, timeout), None, [key])

    def touch(self, key: Any, timeout: Any) -> bool:
        return self._guarded(lambda: super(RedisCacheClient, self).touch(key, timeout), False, [key])

    def delete(self, key: Any) -> bool:
        return self._guarded(lambda: super(RedisCacheClient, self).delete(key), False, [key])

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        keys = list(keys)
        return self._guarded(lambda: super(RedisCacheClient, self).get_many(keys), {})

    def has_key(self, key: Any) -> bool:
        return self._guarded(lambda: super(RedisCacheClient, self).has_key(key), False)

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        self._guarded(lambda: super(RedisCacheClient, self).set_many(data, timeout), None, list(data))

    def delete_many(self, keys: Iterable[Any]) -> None:
        keys = list(keys)
        self._guarded(lambda: super(RedisCacheClient, self).delete_many(keys), None, keys)

    def incr(self, key: Any, delta: int) -> Any:
        return self._raising(lambda: super(RedisCacheClient, self).incr(key, delta))

    def clear(self) -> Any:
        return self._raising(lambda: super(RedisCacheClient, self).clear())


class RedisCache(django_redis.RedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
