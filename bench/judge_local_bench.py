"""Local generative judge throughput: batches of 16 prompts against one prompt at a time.

The SmolLM2-135M demo judge (GenerativeJudge, aspect "overall") on the first n PandaLM items, each
in both orders (2n prompts of about 190-450 tokens). After the model is loaded and one warm-up
call, the same requests are judged with batch_size 16 and with batch_size 1, alternately, `rounds`
times; each figure is the best round, because other work on a shared machine only ever slows a
round down. Items per second count an item once for its two orders. No Django.

Also reported, to explain the speedup: the prompt tokens, the tokens a batched pass computes with
its padding (prompts are sorted by length, so little), and the prompt prefix all prompts share
(the system turn and the template's opening, which a prefix KV cache could compute once).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from annotators.base import JudgeItem, JudgeRequest
from annotators.local import GenerativeJudge, load_causal_lm, resolve_device
from annotators.prompts import build_choice_messages
from webapp.scheme import LIKERT5, PAIRWISE, Scheme

PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
TARGET_SPEEDUP = 3.0
FIELDS = ("instruction", "input", "response1", "response2")


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


def _token_stats(
    requests: list[JudgeRequest], scheme: Scheme, batch_size: int, device: str, dtype: str
) -> dict[str, int]:
    tokenizer, _ = load_causal_lm("smollm2", device, dtype)
    prompts = []
    for request in requests:
        messages = build_choice_messages(request, scheme, "overall")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    lengths = sorted((len(p) for p in prompts), reverse=True)  # as GenerativeJudge batches them
    padded = sum(
        max(chunk) * len(chunk) for chunk in (lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size))
    )
    shared = 0
    while all(len(p) > shared and p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    return {"prompt_tokens": sum(lengths), "padded_tokens": padded, "shared_prefix_tokens": shared}


def local_judge_bench(
    n_items: int = 16, *, rounds: int = 2, batch_size: int = 16, device: str = "auto", dtype: str = "float32"
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    scheme = Scheme(kind=PAIRWISE, scale=LIKERT5, aspects=("overall",))
    requests = [JudgeRequest(item, order) for item in _items(n_items) for order in ((0, 1), (1, 0))]
    device = resolve_device(device)
    load_causal_lm("smollm2", device, dtype)  # not timed: ~15 s to read and de-quantize the GGUF file
    batched = GenerativeJudge("smollm2", device=device, batch_size=batch_size, dtype=dtype)
    single = GenerativeJudge("smollm2", device=device, batch_size=1, dtype=dtype)
    batched.judge(requests[:2], scheme)  # warm-up: first-call allocations and kernel selection

    batched_s: list[float] = []
    single_s: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        by_batch = batched.judge(requests, scheme)
        batched_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        one_by_one = single.judge(requests, scheme)
        single_s.append(time.perf_counter() - start)

    failed = sum(o.status != "done" for o in (*by_batch, *one_by_one))
    diff = max(
        (abs(b.soft["overall"] - s.soft["overall"]) for b, s in zip(by_batch, one_by_one, strict=True) if not failed),
        default=float("nan"),
    )
    stats = _token_stats(requests, scheme, batch_size, device, dtype)
    n = len(requests) // 2
    speedup = min(single_s) / min(batched_s)
    return {
        "items": n,
        "requests": len(requests),
        "batched_items_per_s": round(n / min(batched_s), 3),
        "single_items_per_s": round(n / min(single_s), 3),
        "speedup": round(speedup, 3),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "batched_seconds": [round(s, 2) for s in batched_s],
        "single_seconds": [round(s, 2) for s in single_s],
        "max_abs_soft_diff": diff,
        "failed": failed,
        **stats,
        "padding_overhead": round(stats["padded_tokens"] / stats["prompt_tokens"] - 1, 3),
        "shared_prefix_share": round(stats["shared_prefix_tokens"] * len(requests) / stats["prompt_tokens"], 3),
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(local_judge_bench(*(int(a) for a in sys.argv[1:2])), indent=2))
