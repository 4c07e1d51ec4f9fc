"""Routing benchmarks: features for 10,000 items, routing 100,000 items, PPM cross-validation, and the
PandaLM replay (the strategies' hybrid-label accuracy against random routing)."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import Context, Row

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
FEATURE_ITEMS = 10_000
# The contextual model is about 20x slower on a CPU: timed on a sample and scaled (the work is linear in items).
CONTEXTUAL_SAMPLE = 300
FEATURE_TARGET_S = 60.0
SEEDS = 5
BUDGETS = (0.1, 0.25, 0.5)


def run(ctx: Context) -> list[Row]:
    from bench.routing_features_bench import features_bench
    from bench.routing_model_bench import run as model_rows

    rows = list(model_rows(ctx))
    features = features_bench(FEATURE_ITEMS, embeddings="static")
    ctx.note(f"features (static): {features}")
    rows.append(
        Row(
            f"Features (no LLM tagging) for {FEATURE_ITEMS:,} items, static MiniLM embeddings (the default)",
            f"< {FEATURE_TARGET_S:.0f} s",
            f"{features['seconds']:.1f} s ({features['items_per_s']:,.0f} items/s;"
            f" table load {features['setup_seconds']:.1f} s)",
            features["seconds"] < FEATURE_TARGET_S,
        )
    )
    contextual = features_bench(CONTEXTUAL_SAMPLE, embeddings="contextual")
    ctx.note(f"features (contextual): {contextual}")
    scaled = contextual["seconds"] * FEATURE_ITEMS / CONTEXTUAL_SAMPLE
    rows.append(
        Row(
            f"Features for {FEATURE_ITEMS:,} items, contextual MiniLM (measured on {CONTEXTUAL_SAMPLE}, scaled)",
            "—",
            f"{scaled:.0f} s ({contextual['seconds']:.1f} s for {CONTEXTUAL_SAMPLE})",
            None,
        )
    )
    rows.extend(_replay(ctx))
    return rows


def _replay(ctx: Context) -> list[Row]:
    from webapp.services.imports import import_file
    from webapp.services.projects import create_project
    from webapp.services.routing import compute_features, simulate_project

    project = create_project(slug="bench-pandalm", name="PandaLM replay", aspects=["overall"])
    import_file(project, PANDALM, fmt="pandalm")
    compute_features(project)
    report = simulate_project(
        project, budgets=BUDGETS, seeds=SEEDS, calibration=0.05, judge="gpt-3.5-turbo", proxy=True
    )
    ctx.note(f"replay: n={report['n_items']} all_ai={report['all_ai']:.4f} all_human={report['all_human']:.4f}")
    rows = [
        Row(
            f"PandaLM replay ({report['n_items']} items): all-AI (gpt-3.5-turbo) accuracy",
            "—",
            f"{report['all_ai']:.4f}",
            None,
        ),
        Row("PandaLM replay: all-human (first annotation) accuracy", "—", f"{report['all_human']:.4f}", None),
    ]
    by = {(r["strategy"], r["budget"]): r for r in report["results"]}
    for budget in BUDGETS:
        for r in (v for (s, b), v in by.items() if b == budget):
            proxy = "" if r["proxy_rm_mean"] is None else f", proxy RM {r['proxy_rm_mean']:.4f}"
            rows.append(
                Row(
                    f"PandaLM replay, budget {budget:g}: {r['strategy']}",
                    "—",
                    f"{r['accuracy_mean']:.4f} ± {r['accuracy_sd']:.4f}{proxy}",
                    None,
                )
            )
    random = by[("random", 0.25)]
    best = max((v for (s, b), v in by.items() if b == 0.25 and s != "random"), key=lambda v: v["accuracy_mean"])
    sd = statistics.fmean([random["accuracy_sd"], best["accuracy_sd"]]) or 1e-9
    margin = (best["accuracy_mean"] - random["accuracy_mean"]) / sd
    rows.append(
        Row(
            "PandaLM replay at 25 %: best strategy over random, in standard deviations (mean of the two sds)",
            "> 2 sd",
            f"{best['strategy']}: {margin:.1f} sd ({best['accuracy_mean']:.4f} vs {random['accuracy_mean']:.4f})",
            margin > 2,
        )
    )
    return rows


METHOD = f"""\
**Routing** (`bench/routing_bench.py`, `bench/routing_model_bench.py`, `bench/routing_features_bench.py`).
Routing: ppm-simulated routing of 100,000 synthetic items with 90 binary features (a paper-like layout and a
sparse one) at budgets of 10, 50 and 90 %, with 1,024 candidates scored by a fitted quadratic PPM; the figure
is the slowest budget. PPM: 10-fold cross-validation of the linear, quadratic and LightGBM models on 250
synthetic (mixture, score) rows, the choice and the refit. Features: `routing.features.lexical_scores` +
`binarize` on {FEATURE_ITEMS:,} items built from the PandaLM rows (see `bench/routing_features_bench.py`), on
this CPU, no LLM tagging, with the default static embeddings (MiniLM distilled to one vector per token; the
table is loaded before timing, from the disk cache or distilled in about 10 s); the contextual model (the
other setting, the one the static table approximates) is timed on {CONTEXTUAL_SAMPLE} items and scaled (the
work is linear in the number of items), for comparison only. Replay: the 999 PandaLM items are imported
with their three human labels and two LLM verdicts, their features computed, then `simulate_project` (what
`manage.py simulate_routing` runs) with gpt-3.5-turbo as the AI label, budgets {
    ", ".join(f"{b:g}" for b in BUDGETS)
}, a 5 % calibration batch and {SEEDS} seeds; accuracy is the hybrid label's agreement with the
majority of the three human labels over the items that have both kinds of label, mean ± sd over seeds."""
