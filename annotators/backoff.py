"""Exponential backoff with full jitter: how long to wait before trying a failed call again."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 300.0,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before try number attempt + 1 (attempt 0 is the first failure).

    Full jitter (a uniform draw up to the exponential bound) spreads the retries of many workers
    that failed together; a server's Retry-After is a floor, never shortened by the jitter.
    """
    bound = min(cap, base * (2 ** max(0, attempt)))
    delay = bound * rand()
    if retry_after is not None:
        delay = max(delay, min(cap, retry_after))
    return delay
