"""Routing benchmarks: features for 10,000 items, routing 100,000 items, PPM cross-validation, and the
PandaLM replay (the strategies' hybrid-label accuracy against random routing)."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import Context, Row

ROOT = Path(__file__).resolve().parent.parent
PANDALM = ROOT / "webapp" / "demo_data" / "pandalm" / "pandalm_testset_joined.jsonl"
FEATURE_ITEMS = 10_000
# Measured on a fifth of the items and scaled up (the work is linear in items), to keep make bench short.
FEATURE_SAMPLE = 1_000
FEATURE_TARGET_S = 60.0
SEEDS = 5
BUDGETS = (0.1, 0.25, 0.5)


def run(ctx: Context) -> list[Row]:
    from bench.routing_features_bench import features_bench
    from bench.routing_model_bench import run as model_rows

    rows = list(model_rows(ctx))
    features = features_bench(FEATURE_SAMPLE)
    ctx.note(f"features: {features}")
    scaled = features["seconds"] * FEATURE_ITEMS / FEATURE_SAMPLE
    rows.append(
        Row(
            f"Features (no LLM tagging) for {FEATURE_ITEMS:,} items (measured on {FEATURE_SAMPLE:,}, scaled)",
            f"< {FEATURE_TARGET_S:.0f} s",
            f"{scaled:.1f} s ({features['seconds']:.1f} s for {FEATURE_SAMPLE:,})",
            scaled < FEATURE_TARGET_S,
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
`binarize` on items built from the PandaLM rows (see `bench/routing_features_bench.py`), on this CPU, no LLM
tagging, timed on {FEATURE_SAMPLE:,} of them and scaled to {FEATURE_ITEMS:,} (the work is linear in the number
of items; the scaled figure is what is compared with the target). Replay: the 999 PandaLM items are imported
with their three human labels and two LLM verdicts, their features computed, then `simulate_project` (what
`manage.py simulate_routing` runs) with gpt-3.5-turbo as the AI label, budgets {
    ", ".join(f"{b:g}" for b in BUDGETS)
}, a 5 % calibration batch and {SEEDS} seeds; accuracy is the hybrid label's agreement with the
majority of the three human labels over the items that have both kinds of label, mean ± sd over seeds."""
