"""Routing feature throughput: `lexical_scores` + `binarize` on n synthetic-but-realistic items.

Items are built from the 999 PandaLM rows, repeated with variations: item k takes row k % 999's
prompt (instruction + input) and grows each of its two responses to 100-300 words (uniform, seeded)
by appending sentences drawn from other rows' responses, inputs and instructions; response B
reuses some of response A's added sentences (about a third), so the pairs range from similar to
unrelated like real ones. Every response text is distinct, so nothing is served from the per-chunk
de-duplication. No LLM tagging. No Django.

The embedder (the static table, distilled from MiniLM on first use and then read from the disk
cache, or the MiniLM model itself for embeddings="contextual") is loaded and warmed up before
timing. The timed part is the whole `lexical_scores` call (tokenizing, the embeddings, BERTScore,
cosine, ROUGE, entities) plus `binarize`.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from routing.features import (
    Embedder,
    FeatureItem,
    StaticEmbedder,
    binarize,
    get_embedder,
    get_static_embedder,
    lexical_scores,
)

PANDALM = Path(__file__).resolve().parent.parent / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
TARGET_SECONDS = 60.0
TARGET_ITEMS = 10_000


def _rows() -> list[dict[str, str]]:
    rows = []
    for line in PANDALM.read_text().splitlines():
        row = json.loads(line)
        rows.append({k: row[k] if isinstance(row.get(k), str) else str(row.get(k, "")) for k in _FIELDS})
    return rows


_FIELDS = ("instruction", "input", "response1", "response2")


def _sentences(rows: list[dict[str, str]]) -> list[str]:
    pool: list[str] = []
    for row in rows:
        for field in _FIELDS:
            pool.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", row[field]) if len(s.split()) >= 4)
    return pool


def synthetic_items(n_items: int, seed: int = 0) -> list[FeatureItem]:
    """n items of 100-300-word responses built from PandaLM (see the module docs)."""
    rows = _rows()
    pool = _sentences(rows)
    rng = random.Random(seed)
    items: list[FeatureItem] = []
    for k in range(n_items):
        row = rows[k % len(rows)]
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"].strip() else "")
        target_a, target_b = rng.randint(100, 300), rng.randint(100, 300)
        added_a: list[str] = []
        text_a = row["response1"]
        while len(text_a.split()) < target_a:
            sentence = rng.choice(pool)
            added_a.append(sentence)
            text_a += " " + sentence
        text_b = row["response2"]
        while len(text_b.split()) < target_b:
            shared = added_a and rng.random() < 0.35
            text_b += " " + (rng.choice(added_a) if shared else rng.choice(pool))
        # A variation marker keeps repeated rows distinct even when the draws coincide.
        items.append(FeatureItem(k, prompt, f"{text_a} ({k})", f"{text_b} ({k + 1})"))
    return items


def features_bench(
    n_items: int = TARGET_ITEMS,
    *,
    embeddings: str = "static",
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Seconds for lexical_scores + binarize on n_items synthetic items; the target is 60 s for 10,000.

    embeddings: "static" (the default StaticEmbedder) or "contextual" (the MiniLM model on `device`).
    The model or the static table is loaded (or distilled) and warmed up before timing; the time
    that took is reported as setup_seconds.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    items = synthetic_items(n_items)
    setup = time.perf_counter()
    embedder: Embedder | StaticEmbedder = (
        get_embedder(device=device, dtype=dtype) if embeddings == "contextual" else get_static_embedder()
    )
    lexical_scores(synthetic_items(8, seed=1), embedder=embedder, batch_size=batch_size)  # load + warm up
    setup_seconds = time.perf_counter() - setup

    start = time.perf_counter()
    raw = lexical_scores(items, embedder=embedder, batch_size=batch_size)
    scored = time.perf_counter()
    names, matrix = binarize(raw)
    seconds = time.perf_counter() - start

    lengths = [len(ids) for ids in embedder.token_ids([t for i in items for t in (i.response_a, i.response_b)])]
    cap = embedder.max_length - 2
    target = TARGET_SECONDS * n_items / TARGET_ITEMS
    return {
        "n_items": n_items,
        "embeddings": embeddings,
        "setup_seconds": round(setup_seconds, 2),
        "device": embedder.device,
        "dtype": dtype,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "lexical_seconds": round(scored - start, 2),
        "binarize_seconds": round(seconds - (scored - start), 3),
        "items_per_s": round(n_items / seconds, 1),
        "response_tokens_mean": round(sum(lengths) / len(lengths), 1),
        "model_tokens": sum(min(n, cap) + 2 for n in lengths),
        "model_tokens_per_s": round(sum(min(n, cap) + 2 for n in lengths) / (scored - start), 1),
        "columns": len(names),
        "true_per_row": float(matrix.sum(1).mean()) if len(matrix) else 0.0,
        "target_seconds": target,
        "passed": seconds <= target,
    }


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else TARGET_ITEMS
    extra = dict(arg.split("=", 1) for arg in sys.argv[2:])
    kwargs: dict[str, Any] = {k: int(v) if k == "batch_size" else v for k, v in extra.items()}
    print(json.dumps(features_bench(n, **kwargs), indent=2))
