"""HTTP judge throughput: how close OpenAIJudge's worker pool gets to the ideal on a 50 ms server.

200 pairwise items judged in both orders (400 requests) at concurrency 16 against the loopback
FakeOpenAI answering each request after 50 ms. The ideal is 400 x 0.05 s / 16 = 1.25 s; the
ratio measured / ideal is the overhead of prompt building, HTTP, JSON and parsing. No Django.
"""

from __future__ import annotations

import time
from typing import Any

from annotators.base import JudgeItem, JudgeRequest
from annotators.openai_backend import OpenAIJudge
from tests.fake_openai import FakeOpenAI
from webapp.scheme import LIKERT5, PAIRWISE, Scheme

N_ITEMS = 200
DELAY_S = 0.05
CONCURRENCY = 16


def _items(n: int) -> list[JudgeItem]:
    return [
        JudgeItem(
            item_id=i,
            conversation=({"role": "user", "content": f"Question {i}: explain how a hash map works."},),
            responses=(f"A short answer {i}.", f"A longer answer {i}, with buckets, hashing and collisions."),
        )
        for i in range(n)
    ]


def http_judge_bench() -> dict[str, Any]:
    scheme = Scheme(kind=PAIRWISE, scale=LIKERT5, aspects=("overall",))
    requests = [JudgeRequest(item, order) for item in _items(N_ITEMS) for order in ((0, 1), (1, 0))]
    with FakeOpenAI(delay_s=DELAY_S, verdict="longer") as fake:
        judge = OpenAIJudge(base_url=fake.url, model="fake-judge", concurrency=CONCURRENCY, max_retries=0)
        start = time.perf_counter()
        outcomes = judge.judge(requests, scheme)
        seconds = time.perf_counter() - start
    ideal = N_ITEMS * 2 * DELAY_S / CONCURRENCY
    return {
        "items": N_ITEMS,
        "requests": len(requests),
        "seconds": round(seconds, 3),
        "ideal_seconds": ideal,
        "ratio": round(seconds / ideal, 3),
        "failed": sum(1 for o in outcomes if o.status == "failed"),
    }


if __name__ == "__main__":
    print(http_judge_bench())
