"""LLM judge benchmarks: the local SmolLM2 judge batched vs one item at a time, and the HTTP judge's concurrency.

No database: both call the judge backends directly (annotators/), the way a Celery chunk does.
"""

from __future__ import annotations

from bench.common import Context, Row
from bench.judge_local_bench import method

N_LOCAL_ITEMS = 16  # one aspect
N_LOCAL_ITEMS_DEFAULT = 8  # the default scheme's four aspects: four prompts per item and order
TARGET_HTTP_RATIO = 2.0


def run(ctx: Context) -> list[Row]:
    from bench.judge_http_bench import http_judge_bench
    from bench.judge_local_bench import local_judge_bench, rows
    from webapp.scheme import DEFAULT_ASPECTS

    default = local_judge_bench(N_LOCAL_ITEMS_DEFAULT, aspects=DEFAULT_ASPECTS)
    ctx.note(f"local judge (default scheme): {default}")
    local = local_judge_bench(N_LOCAL_ITEMS)
    ctx.note(f"local judge (1 aspect): {local}")
    http = http_judge_bench()
    ctx.note(f"http judge: {http}")
    return [
        *rows(default, local),
        Row(
            f"HTTP judge: {http['items']} items x 2 orders, 50 ms server, concurrency 16"
            f" (ideal {http['ideal_seconds']:.2f} s)",
            f"≤ {TARGET_HTTP_RATIO:.0f}x ideal",
            f"{http['seconds']:.2f} s = {http['ratio']:.2f}x ideal, {http['failed']} failed",
            http["ratio"] <= TARGET_HTTP_RATIO and http["failed"] == 0,
        ),
    ]


METHOD = (
    """\
**Judges** (`bench/judge_bench.py`, `bench/judge_local_bench.py`, `bench/judge_http_bench.py`). """
    + method(N_LOCAL_ITEMS, N_LOCAL_ITEMS_DEFAULT)
    + """ HTTP judge: the `openai` backend against
`tests/fake_openai.py`, a real HTTP server on 127.0.0.1 that answers every chat completion after 50 ms, judges
200 pairwise items in both orders (400 requests) with concurrency 16; the ideal time is 200 x 2 x 50 ms / 16."""
)
