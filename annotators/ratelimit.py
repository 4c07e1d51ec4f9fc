"""Per-endpoint rate limits (requests and tokens per minute) that hold across all workers.

`RedisTokenBucket` keeps two token buckets per endpoint in Redis and updates them in one Lua
script, so any number of Celery worker processes on any number of machines share the limit.
`LocalTokenBucket` is the same arithmetic in one process, for the embedded demo (no Redis).
Both block in `acquire` until the request may go.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Limiter(Protocol):
    def acquire(self, tokens: int) -> None: ...


# KEYS[1]: the bucket hash. ARGV: requests per minute, tokens per minute, tokens wanted.
# Returns 0 when granted (and takes from both buckets), else the seconds to wait, as a string.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(state[1])
local tk = tonumber(state[2])
local ts = tonumber(state[3])
if r == nil then r = rpm; tk = tpm; ts = now end
local dt = math.max(0, now - ts)
if rpm > 0 then r = math.min(rpm, r + dt * rpm / 60) end
if tpm > 0 then tk = math.min(tpm, tk + dt * tpm / 60); want = math.min(want, tpm) end
local wait = 0
if rpm > 0 and r < 1 then wait = math.max(wait, (1 - r) * 60 / rpm) end
if tpm > 0 and tk < want then wait = math.max(wait, (want - tk) * 60 / tpm) end
if wait == 0 then
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then tk = tk - want end
end
redis.call('HSET', KEYS[1], 'r', r, 't', tk, 'ts', now)
redis.call('EXPIRE', KEYS[1], 120)
return tostring(wait)
"""


def bucket_key(endpoint: str) -> str:
    """The Redis key for an endpoint (hashed: a base URL may carry credentials or query strings)."""
    return "hybridpref:ratelimit:" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]


class RedisTokenBucket:
    def __init__(
        self,
        client: Any,
        endpoint: str,
        *,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.key = bucket_key(endpoint)
        self.rpm = max(0, requests_per_minute)
        self.tpm = max(0, tokens_per_minute)
        self._sleep = sleep
        self._script = client.register_script(_LUA)

    def try_acquire(self, tokens: int) -> float:
        """0.0 if the request may go now (and is counted), else the seconds to wait first."""
        if not self.rpm and not self.tpm:
            return 0.0
        return float(self._script(keys=[self.key], args=[self.rpm, self.tpm, max(0, tokens)]))

    def acquire(self, tokens: int) -> None:
        while (wait := self.try_acquire(tokens)) > 0:
            self._sleep(min(wait, 5.0))


class LocalTokenBucket:
    """One process's limiter: the same buckets, under a lock."""

    def __init__(self, *, requests_per_minute: int = 0, tokens_per_minute: int = 0):
        self.rpm = max(0, requests_per_minute)
        self.tpm = max(0, tokens_per_minute)
        self._r = float(self.rpm)
        self._t = float(self.tpm)
        self._ts = time.monotonic()
        self._lock = threading.Lock()

    def try_acquire(self, tokens: int) -> float:
        if not self.rpm and not self.tpm:
            return 0.0
        with self._lock:
            now = time.monotonic()
            dt, self._ts = now - self._ts, now
            want = min(tokens, self.tpm) if self.tpm else 0
            if self.rpm:
                self._r = min(self.rpm, self._r + dt * self.rpm / 60)
            if self.tpm:
                self._t = min(self.tpm, self._t + dt * self.tpm / 60)
            wait = 0.0
            if self.rpm and self._r < 1:
                wait = max(wait, (1 - self._r) * 60 / self.rpm)
            if self.tpm and self._t < want:
                wait = max(wait, (want - self._t) * 60 / self.tpm)
            if wait == 0:
                self._r -= 1 if self.rpm else 0
                self._t -= want
            return wait

    def acquire(self, tokens: int) -> None:
        while (wait := self.try_acquire(tokens)) > 0:
            time.sleep(min(wait, 5.0))
