"""The pure export layer (webapp.exporting): aggregation rules, row formats and file writers. No database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from webapp.exporting import aggregate as agg
from webapp.exporting.formats import (
    SCHEMAS,
    ExportError,
    ExportOptions,
    ExportSummary,
    RowBuilder,
    build_rows,
    export_rows,
    schema_for,
)
from webapp.exporting.records import AILabel, ExportItem, ExportResponse, HumanLabel
from webapp.exporting.writers import (
    JsonlWriter,
    ParquetWriter,
    dataset_card,
    paused_gc,
    sha256_file,
    write_hf_dataset,
)
from webapp.importing import formats as import_formats
from webapp.importing.readers import read_jsonl, read_parquet
from webapp.scheme import RANKING, STRENGTH7, Scheme

PAIRWISE_SCHEME = Scheme()  # pairwise, likert5, overall / helpful / truthful / harmless
RANKING_SCHEME = Scheme(kind=RANKING, aspects=("overall",), allow_ties=True)

N1 = HumanLabel(
    annotator="n1",
    tier="normal",
    preferences={"overall": "A-is-slightly-better", "helpful": "A-is-clearly-better"},
    reasons={"overall": ["correct"]},
    own_reasons={"overall": "B is wrong"},
    confidence={"overall": "fairly-confident"},
    justification="4 is right.",
    time_spent=30.0,
    timestamp="2024-05-01T10:00:00Z",
)
N2 = HumanLabel(
    annotator="n2",
    tier="normal",
    preferences={"overall": "B-is-slightly-better"},
    time_spent=12.5,
    timestamp="2024-05-01T10:05:00Z",
)
E1 = HumanLabel(
    annotator="e1",
    tier="expert",
    preferences={"overall": "A-is-clearly-better", "truthful": "A-is-clearly-better", "harmless": "Tie"},
    confidence={"overall": "absolutely-confident"},
    justification="Basic arithmetic.",
    timestamp="2024-05-02T09:00:00Z",
)
E2 = HumanLabel(annotator="e2", tier="expert", preferences={"overall": "B-is-clearly-better"})
GPT4 = AILabel(
    judge="gpt-4",
    prompt_version="v2",
    labels={"overall": "B-is-slightly-better"},
    rationale="B is bolder",
    order_inconsistent=False,
)

# Human-routed, two normal and two expert annotations, one AI label.
MATH = ExportItem(
    item_id=1,
    external_id="c1",
    prompt="What is 2+2?",
    conversation=None,
    responses=(ExportResponse(0, "4", "m-a"), ExportResponse(1, "5", "m-b")),
    metadata={
        "prompt_id": "p1",
        "source": "math",
        "category": "Open QA",
        "subject_study": "Mathematics",
        "highest_level_degree": "Bachelor's degree",
    },
    route="human",
    humans=(N1, N2, E1, E2),
    ais=(GPT4,),
)
# AI-routed conversation, no human labels; the first AI label calls a tie.
HELLO = ExportItem(
    item_id=2,
    external_id="c2",
    prompt="",
    conversation=[{"content": "Be brief.", "role": "system"}, {"role": "user", "content": "Say hi"}],
    responses=(ExportResponse(0, "Hi!", "m-a"), ExportResponse(1, "Hello there.", "m-b")),
    route="ai",
    ais=(
        AILabel(judge="llama", prompt_version="v1", labels={"overall": "Tie"}),
        AILabel(judge="gpt-4", prompt_version="v2", labels={"overall": "A-is-clearly-better"}, rationale="A greets"),
    ),
)
RANKED = ExportItem(
    item_id=3,
    external_id="r1",
    prompt="Rank these",
    conversation=None,
    responses=(ExportResponse(0, "x"), ExportResponse(1, "y"), ExportResponse(2, "z")),
    route="human",
    humans=(HumanLabel(annotator="h1", tier="normal", ranking=[2, [0, 1]]),),
)
# seed 2 puts MATH's prompt in test and HELLO's in train (test_fraction 0.1).
SEED = 2


def options(fmt: str, **kw: Any) -> ExportOptions:
    return ExportOptions(format=fmt, seed=SEED, **kw)


def rows_of(items: list[ExportItem], opts: ExportOptions, scheme: Scheme = PAIRWISE_SCHEME) -> list[dict[str, Any]]:
    return list(export_rows(items, opts, scheme))


def mp_annotation(evaluator: str, **fields: Any) -> dict[str, Any]:
    """A MultiPref annotation with nothing filled in but `fields`."""
    row: dict[str, Any] = {"evaluator": evaluator}
    for a in ("overall", "helpful", "truthful", "harmless"):
        row[f"{a}_pref"] = None
    for a in ("overall", "helpful", "truthful", "harmless"):
        row[f"{a}_confidence"] = None
    for a in ("overall", "helpful", "truthful", "harmless"):
        row[f"{a}_checked_reasons"] = []
    for a in ("overall", "helpful", "truthful", "harmless"):
        row[f"{a}_own_reason"] = ""
    row["time_spent"] = None
    row["timestamp"] = ""
    assert set(fields) <= set(row)
    return {**row, **fields}


MATH_MULTIPREF = {
    "comparison_id": "c1",
    "prompt_id": "p1",
    "text": "What is 2+2?",
    "model_a": "m-a",
    "completion_a": "4",
    "model_b": "m-b",
    "completion_b": "5",
    "source": "math",
    "category": "Open QA",
    "subject_study": "Mathematics",
    "highest_level_degree": "Bachelor's degree",
    "normal_worker_annotations": [
        mp_annotation(
            "n1",
            overall_pref="A-is-slightly-better",
            helpful_pref="A-is-clearly-better",
            overall_confidence="fairly-confident",
            overall_checked_reasons=["correct"],
            overall_own_reason="B is wrong",
            time_spent=30.0,
            timestamp="2024-05-01T10:00:00Z",
        ),
        mp_annotation("n2", overall_pref="B-is-slightly-better", time_spent=12.5, timestamp="2024-05-01T10:05:00Z"),
    ],
    "expert_worker_annotations": [
        mp_annotation(
            "e1",
            overall_pref="A-is-clearly-better",
            truthful_pref="A-is-clearly-better",
            harmless_pref="Tie",
            overall_confidence="absolutely-confident",
            timestamp="2024-05-02T09:00:00Z",
        ),
        mp_annotation("e2", overall_pref="B-is-clearly-better"),
    ],
    "ai_annotations": [
        {
            "judge": "gpt-4",
            "prompt_version": "v2",
            "overall_pref": "B-is-slightly-better",
            "helpful_pref": None,
            "truthful_pref": None,
            "harmless_pref": None,
            "rationale": "B is bolder",
            "order_inconsistent": False,
        }
    ],
}


# --- aggregation ----------------------------------------------------------------------------------


def test_majority_folds_slightly_into_clearly_and_breaks_a_tied_count_by_the_first_normal_worker() -> None:
    # Votes n1 A, n2 B, e1 A, e2 B: 2-2, and n1 (the first normal worker) voted A.
    c = agg.human_consensus([N1, N2, E1, E2], "overall", "likert5", "majority")
    assert c is not None
    assert (c.winner, c.folded, c.n, c.agreement, c.source) == (1, "A-is-clearly-better", 4, 0.5, "human")
    # The label is the backers' mean strength (slightly +1, clearly +2 -> 1.5), a half rounded toward a tie.
    assert c.label == "A-is-slightly-better"
    assert [h.annotator for h in c.labels] == ["n1", "n2", "e1", "e2"]


def test_majority_puts_normal_workers_first_whatever_the_input_order_and_keeps_the_order_within_a_tier() -> None:
    # Normal-first order is n2 (B), n1 (A), e1 (A), e2 (B): the tied count goes to B, the first vote.
    c = agg.human_consensus([E1, E2, N2, N1], "overall", "likert5", "majority")
    assert c is not None
    assert (c.label, c.folded, c.winner) == ("B-is-slightly-better", "B-is-clearly-better", -1)
    assert [h.annotator for h in c.labels] == ["n2", "n1", "e1", "e2"]


def test_majority_takes_the_most_common_winner_and_counts_only_annotators_of_the_aspect() -> None:
    c = agg.human_consensus([N1, E1, E2], "overall", "likert5", "majority")
    assert c is not None
    assert (c.label, c.n, c.agreement) == ("A-is-slightly-better", 3, 2 / 3)
    helpful = agg.human_consensus([N1, N2, E1, E2], "helpful", "likert5", "majority")
    assert helpful is not None
    assert (helpful.label, helpful.n, helpful.agreement, helpful.source) == (
        "A-is-clearly-better",
        1,
        1.0,
        "human-normal",
    )
    assert agg.human_consensus([N2, E2], "helpful", "likert5", "majority") is None


def test_majority_on_strength7_votes_by_sign_and_keeps_the_mean_strength_of_the_winning_side() -> None:
    labels = [
        HumanLabel("a", "normal", preferences={"overall": -3}),
        HumanLabel("b", "normal", preferences={"overall": -2}),
        HumanLabel("c", "normal", preferences={"overall": 1}),
    ]
    c = agg.human_consensus(labels, "overall", STRENGTH7, "majority")
    assert c is not None
    assert (c.label, c.folded, c.winner, c.agreement) == (-2, -3, 1, 2 / 3)  # -2.5 rounds toward a tie


def test_expert_first_uses_the_experts_when_any_labelled_the_aspect_else_the_normal_workers() -> None:
    c = agg.human_consensus([N1, N2, E1, E2], "overall", "likert5", "expert-first")
    assert c is not None
    # e1 (A, clearly) and e2 (B): a 1-1 tie goes to the first expert.
    assert (c.label, c.source, c.n, c.agreement) == ("A-is-clearly-better", "human-expert", 2, 0.5)
    helpful = agg.human_consensus([N1, N2, E1, E2], "helpful", "likert5", "expert-first")
    assert helpful is not None
    assert (helpful.label, helpful.source) == ("A-is-clearly-better", "human-normal")


def test_mean_averages_strengths_and_rounds_a_half_away_from_a_tie() -> None:
    c = agg.human_consensus([N1, N2, E1, E2], "overall", "likert5", "mean")
    assert c is not None
    assert (c.label, c.winner, c.agreement) == ("Tie", 0, 0.0)  # +1 -1 +2 -2
    c = agg.human_consensus([N1, E1], "overall", "likert5", "mean")
    assert c is not None
    assert c.label == "A-is-clearly-better"  # (1 + 2) / 2 = 1.5 -> 2, as score_to_label(0.75)
    labels = [HumanLabel("a", "normal", preferences={"overall": v}) for v in (2, 3)]
    c = agg.human_consensus(labels, "overall", STRENGTH7, "mean")
    assert c is not None
    assert c.label == 3  # 2.5 -> 3, not Python's round-half-to-even 2


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rule 'vote'"):
        agg.human_consensus([N1], "overall", "likert5", "vote")


def test_ranking_pairs_gives_every_better_worse_pair_with_its_rank_gap_and_none_for_ties() -> None:
    assert agg.ranking_pairs([2, 0, 1]) == [(2, 0, 1), (2, 1, 2), (0, 1, 1)]
    assert agg.ranking_pairs([[0, 2], 1]) == [(0, 1, 1), (2, 1, 1)]
    assert agg.ranking_pairs([3, [0, 2], 1]) == [(3, 0, 1), (3, 2, 1), (3, 1, 2), (0, 1, 1), (2, 1, 1)]
    assert agg.ranking_pairs([[0, 1, 2]]) == []
    assert agg.tied_pairs([[2, 0], 1]) == [(0, 2)]


def test_ranking_consensus_orders_by_mean_place_and_ties_equal_means() -> None:
    h1 = HumanLabel("h1", "normal", ranking=[2, 0, 1])
    h2 = HumanLabel("h2", "normal", ranking=[0, 2, 1])
    rc = agg.human_ranking_consensus([h1, h2])
    assert rc is not None
    assert (rc.ranking, rc.n, rc.agreement, rc.source) == ([[0, 2], 1], 2, 4 / 6, "human-normal")


def test_hybrid_label_takes_humans_on_human_routed_items_and_the_ai_elsewhere() -> None:
    math = agg.hybrid_label(MATH, "overall", "likert5")
    assert math is not None
    assert (math.label, math.source, math.n, math.agreement) == ("A-is-slightly-better", "hybrid", 4, 0.5)
    hello = agg.hybrid_label(HELLO, "overall", "likert5")
    assert hello is not None
    # No judge named: the first AI label with the aspect.
    assert (hello.label, hello.source, hello.n, hello.agreement) == ("Tie", "ai:llama@v1", 1, None)
    named = agg.hybrid_label(HELLO, "overall", "likert5", ai_judge="gpt-4")
    assert named is not None
    assert (named.label, named.winner, named.source) == ("A-is-clearly-better", 1, "ai:gpt-4@v2")


def test_hybrid_label_falls_back_to_humans_without_an_ai_label_but_not_from_humans_to_the_ai() -> None:
    unrouted = ExportItem(1, "u", "p", None, (ExportResponse(0, "a"), ExportResponse(1, "b")), humans=(N1,))
    choice = agg.hybrid_label(unrouted, "overall", "likert5")
    assert choice is not None
    assert (choice.label, choice.source) == ("A-is-slightly-better", "human-normal")
    pair = (ExportResponse(0, "a"), ExportResponse(1, "b"))
    waiting = ExportItem(2, "w", "p", None, pair, route="human", ais=(GPT4,))
    assert agg.hybrid_label(waiting, "overall", "likert5") is None
    assert agg.hybrid_label(waiting, "overall", "likert5", ai_judge="llama", label_source="ai") is None
    only_ai = agg.hybrid_label(MATH, "overall", "likert5", label_source="ai")
    assert only_ai is not None
    assert only_ai.source == "ai:gpt-4@v2"


def test_split_is_a_deterministic_hash_of_seed_and_prompt_so_no_prompt_is_in_both_splits() -> None:
    assert agg.split_for("What is 2+2?", 2, 0.1) == "test"
    assert agg.split_for("What is 2+2?", 0, 0.1) == "train"
    assert agg.split_for("anything", 0, 0.0) == "train"
    assert agg.split_for("anything", 0, 1.0) == "test"
    prompts = [f"prompt {i % 200}" for i in range(1000)]
    items = [
        ExportItem(i, f"i{i}", p, None, (ExportResponse(0, "a"), ExportResponse(1, "b")), route="human", humans=(N1,))
        for i, p in enumerate(prompts)
    ]
    rows = rows_of(items, ExportOptions(format="trl-preference", seed=0, test_fraction=0.1))
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        splits_of.setdefault(row["prompt"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert sum(s == {"test"} for s in splits_of.values()) == 18  # of 200 prompts, for seed 0 (about 10%)


# --- formats --------------------------------------------------------------------------------------


def test_multipref_rows_carry_every_annotation_by_tier_and_the_ai_labels() -> None:
    rows = rows_of([MATH, HELLO], options("multipref"))
    assert rows[0] == MATH_MULTIPREF
    assert rows[1] == {
        "comparison_id": "c2",
        "prompt_id": None,
        "text": "Say hi",
        "model_a": "m-a",
        "completion_a": "Hi!",
        "model_b": "m-b",
        "completion_b": "Hello there.",
        "source": None,
        "category": None,
        "subject_study": None,
        "highest_level_degree": None,
        "normal_worker_annotations": [],
        "expert_worker_annotations": [],
        "ai_annotations": [
            {
                "judge": "llama",
                "prompt_version": "v1",
                "overall_pref": "Tie",
                "helpful_pref": None,
                "truthful_pref": None,
                "harmless_pref": None,
                "rationale": "",
                "order_inconsistent": None,
            },
            {
                "judge": "gpt-4",
                "prompt_version": "v2",
                "overall_pref": "A-is-clearly-better",
                "helpful_pref": None,
                "truthful_pref": None,
                "harmless_pref": None,
                "rationale": "A greets",
                "order_inconsistent": None,
            },
        ],
    }
    assert list(rows[0]) == SCHEMAS["multipref"].names


def test_multipref_turns_strength7_labels_into_likert5_as_the_importer_does() -> None:
    item = ExportItem(
        1,
        "s",
        "p",
        None,
        (ExportResponse(0, "a"), ExportResponse(1, "b")),
        humans=(HumanLabel("a", "normal", preferences={"overall": -3, "helpful": -1, "truthful": 0, "harmless": 2}),),
        ais=(AILabel("j", "v1", labels={"overall": 1}),),
    )
    (row,) = rows_of([item], options("multipref"), Scheme(scale=STRENGTH7))
    annotation = row["normal_worker_annotations"][0]
    assert [annotation[f"{a}_pref"] for a in ("overall", "helpful", "truthful", "harmless")] == [
        "A-is-clearly-better",
        "A-is-slightly-better",
        "Tie",
        "B-is-clearly-better",
    ]
    assert row["ai_annotations"][0]["overall_pref"] == "B-is-slightly-better"


def test_helpsteer2_rows_hold_the_aggregated_strength_with_the_individual_ones() -> None:
    rows = rows_of([MATH, HELLO], options("helpsteer2-preference"))
    assert rows == [
        {
            "id": "c1",
            "prompt": "What is 2+2?",
            "response_1": "4",
            "response_2": "5",
            "preference_strength": -1,  # A-is-slightly-better
            "preference_statement": "B is wrong",  # n1, the first backer of A
            "preference_elaboration": "4 is right.",
            "split": "test",
            "source": "hybrid",
            "agreement": 0.5,
            "individual_preference": [
                {
                    "annotator": "n1",
                    "tier": "normal",
                    "strength": -1,
                    "statement": "B is wrong",
                    "elaboration": "4 is right.",
                },
                {"annotator": "n2", "tier": "normal", "strength": 1, "statement": "", "elaboration": ""},
                {
                    "annotator": "e1",
                    "tier": "expert",
                    "strength": -2,
                    "statement": "",
                    "elaboration": "Basic arithmetic.",
                },
                {"annotator": "e2", "tier": "expert", "strength": 2, "statement": "", "elaboration": ""},
            ],
        },
        {
            "id": "c2",
            "prompt": "Say hi",
            "response_1": "Hi!",
            "response_2": "Hello there.",
            "preference_strength": 0,
            "preference_statement": "",
            "preference_elaboration": "",
            "split": "train",
            "source": "ai:llama@v1",
            "agreement": None,
            "individual_preference": [],
        },
    ]
    named = rows_of([HELLO], options("helpsteer2-preference", ai_judge="gpt-4"))
    assert (named[0]["preference_strength"], named[0]["preference_elaboration"]) == (-2, "A greets")


def test_trl_preference_standard_rows_drop_ties_and_carry_the_margin_in_steps() -> None:
    assert rows_of([MATH, HELLO], options("trl-preference")) == [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.0, "source": "hybrid", "split": "test"},
    ]
    assert rows_of([MATH, HELLO], options("trl-preference", ai_judge="gpt-4", with_margin=False)) == [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "source": "hybrid", "split": "test"},
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Hello there.", "source": "ai:gpt-4@v2", "split": "train"},
    ]


def test_trl_preference_keeps_ties_with_response_a_as_chosen_and_margin_zero() -> None:
    assert rows_of([HELLO], options("trl-preference", ties="keep")) == [
        {
            "prompt": "Say hi",
            "chosen": "Hi!",
            "rejected": "Hello there.",
            "margin": 0.0,
            "source": "ai:llama@v1",
            "split": "train",
        },
    ]


def test_trl_preference_conversational_rows_use_messages() -> None:
    rows = rows_of([MATH, HELLO], options("trl-preference", conversational=True, ai_judge="gpt-4"))
    assert rows == [
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
            "margin": 1.0,
            "source": "hybrid",
            "split": "test",
        },
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
            "chosen": [{"role": "assistant", "content": "Hi!"}],
            "rejected": [{"role": "assistant", "content": "Hello there."}],
            "margin": 2.0,
            "source": "ai:gpt-4@v2",
            "split": "train",
        },
    ]


def test_trl_preference_label_source_human_or_ai_only() -> None:
    assert rows_of([MATH, HELLO], options("trl-preference", label_source="human", with_margin=False)) == [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "source": "hybrid", "split": "test"},
    ]
    assert rows_of([MATH], options("trl-preference", label_source="ai")) == [
        {
            "prompt": "What is 2+2?",
            "chosen": "5",
            "rejected": "4",
            "margin": 1.0,
            "source": "ai:gpt-4@v2",
            "split": "test",
        },
    ]


def test_trl_preference_expands_a_ranking_into_all_pairs_with_the_rank_gap_as_margin() -> None:
    opts = ExportOptions(format="trl-preference")
    rows = rows_of([RANKED], opts, RANKING_SCHEME)
    assert rows == [
        {
            "prompt": "Rank these",
            "chosen": "z",
            "rejected": "x",
            "margin": 1.0,
            "source": "human-normal",
            "split": "train",
        },
        {
            "prompt": "Rank these",
            "chosen": "z",
            "rejected": "y",
            "margin": 1.0,
            "source": "human-normal",
            "split": "train",
        },
    ]
    kept = rows_of([RANKED], ExportOptions(format="trl-preference", ties="keep"), RANKING_SCHEME)
    assert kept[2] == {
        "prompt": "Rank these",
        "chosen": "x",
        "rejected": "y",
        "margin": 0.0,
        "source": "human-normal",
        "split": "train",
    }
    three = ExportItem(
        4,
        "r2",
        "Order",
        None,
        tuple(ExportResponse(i, t) for i, t in enumerate("abc")),
        ais=(AILabel("j", "v1", ranking=[1, 0, 2]),),
    )
    assert [(r["chosen"], r["rejected"], r["margin"], r["source"]) for r in rows_of([three], opts, RANKING_SCHEME)] == [
        ("b", "a", 1.0, "ai:j@v1"),
        ("b", "c", 2.0, "ai:j@v1"),
        ("a", "c", 1.0, "ai:j@v1"),
    ]


def test_trl_unpaired_rows_mark_the_chosen_desirable_and_the_rejected_not() -> None:
    assert rows_of([MATH, HELLO], options("trl-unpaired", ties="keep")) == [
        {"prompt": "What is 2+2?", "completion": "4", "label": True, "source": "hybrid", "split": "test"},
        {"prompt": "What is 2+2?", "completion": "5", "label": False, "source": "hybrid", "split": "test"},
    ]
    rows = rows_of([RANKED], ExportOptions(format="trl-unpaired", conversational=True), RANKING_SCHEME)
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("z", True),
        ("x", False),
        ("z", True),
        ("y", False),
    ]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Rank these"}]


def test_a_ranking_project_cannot_be_exported_as_multipref_or_helpsteer2() -> None:
    with pytest.raises(ExportError, match=r"multipref format holds pairwise comparisons .* this is a ranking project"):
        RowBuilder(ExportOptions(format="multipref"), RANKING_SCHEME)
    with pytest.raises(ExportError, match="export it as trl-preference or trl-unpaired"):
        build_rows(RANKED, ExportOptions(format="helpsteer2-preference"), RANKING_SCHEME)
    with pytest.raises(ExportError, match="this is a ranking project"):
        export_rows(iter([RANKED]), ExportOptions(format="multipref"), RANKING_SCHEME)  # when called, not iterated


def test_bad_options_and_items_are_refused_with_clear_errors() -> None:
    with pytest.raises(ExportError, match=r"unknown format 'csv' .*; unknown ties option 'maybe'"):
        ExportOptions(format="csv", ties="maybe")
    with pytest.raises(ExportError, match="aspect 'style' is not one of this project's aspects"):
        RowBuilder(ExportOptions(format="trl-preference", aspect="style"), PAIRWISE_SCHEME)
    with pytest.raises(ExportError, match=r"the multipref format has the aspects .* also has style"):
        RowBuilder(ExportOptions(format="multipref"), Scheme(aspects=("overall", "style")))
    three = ExportItem(1, "t", "p", None, tuple(ExportResponse(i, "x") for i in range(3)), humans=(N1,))
    with pytest.raises(ExportError, match="item 't' has 3 responses; multipref needs 2"):
        rows_of([three], options("multipref"))


def test_the_summary_counts_rows_items_splits_sources_and_agreement() -> None:
    summary = ExportSummary()
    list(export_rows([MATH, HELLO], options("trl-preference"), PAIRWISE_SCHEME, summary))
    assert (summary.items, summary.rows, summary.unlabelled, summary.agreement) == (2, 1, 1, 0.5)
    assert (dict(summary.splits), dict(summary.sources)) == ({"test": 1}, {"hybrid": 1})
    raw = ExportSummary()
    list(export_rows([MATH, HELLO], options("multipref"), PAIRWISE_SCHEME, raw))
    assert dict(raw.sources) == {"human-normal": 2, "human-expert": 2, "ai:gpt-4@v2": 2, "ai:llama@v1": 1}


# --- files ----------------------------------------------------------------------------------------


def test_a_multipref_jsonl_export_imports_back_with_the_same_labels(tmp_path: Path) -> None:
    path = tmp_path / "multipref.jsonl"
    with JsonlWriter(path) as writer:
        writer.write_rows(rows_of([MATH, HELLO], options("multipref")))
    (_, row), _ = list(read_jsonl(path))
    assert isinstance(row, dict)
    record = import_formats.parse_multipref(row)
    assert import_formats.check_record(record, PAIRWISE_SCHEME, max_chars=10_000) == []
    assert (record.external_id, record.prompt, [r.text for r in record.responses]) == ("c1", "What is 2+2?", ["4", "5"])
    assert record.metadata == MATH.metadata
    for imported, original in zip(record.human, MATH.humans, strict=True):
        assert (imported.annotator, imported.tier, imported.timestamp) == (
            original.annotator,
            original.tier,
            original.timestamp,
        )
        assert imported.annotation == {
            "preferences": original.preferences,
            "reasons": original.reasons,
            "own_reasons": original.own_reasons,
            "confidence": original.confidence,
            "time_spent": original.time_spent,
        }


def test_jsonl_lines_are_compact_utf8_in_column_order(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"prompt": "Grüß dich", "chosen": "ja", "margin": 1.0})
        writer.write({"prompt": "b", "chosen": "c", "margin": 0.5})
    assert path.read_bytes() == (
        '{"prompt":"Grüß dich","chosen":"ja","margin":1.0}\n{"prompt":"b","chosen":"c","margin":0.5}\n'.encode()
    )
    with pytest.raises(ValueError, match="Out of range float values"), JsonlWriter(tmp_path / "nan.jsonl") as writer:
        writer.write({"margin": float("nan")})


def write_all(tmp_path: Path, name: str, rows: list[dict[str, Any]], schema: pa.Schema) -> dict[str, Path]:
    out = {"jsonl": tmp_path / f"{name}.jsonl", "parquet": tmp_path / f"{name}.parquet", "hf": tmp_path / f"{name}-hf"}
    with JsonlWriter(out["jsonl"]) as writer:
        writer.write_rows(rows)
    with ParquetWriter(out["parquet"], schema, row_group_size=2) as pw:
        pw.write_rows(rows)
    write_hf_dataset(rows, schema, out["hf"])
    return out


@pytest.mark.parametrize(
    "opts",
    [
        options("multipref"),
        options("helpsteer2-preference"),
        options("trl-preference", ai_judge="gpt-4"),
        options("trl-preference", conversational=True, ties="keep", with_margin=False),
        options("trl-unpaired", ai_judge="gpt-4", conversational=True),
    ],
    ids=["multipref", "helpsteer2", "trl", "trl-conversational", "kto"],
)
def test_parquet_and_hf_outputs_hold_the_exact_schema_and_rows_and_are_byte_identical_when_rewritten(
    tmp_path: Path, opts: ExportOptions
) -> None:
    import datasets

    schema = schema_for(opts)
    rows = rows_of([MATH, HELLO, MATH], opts)
    first = write_all(tmp_path, "first", rows, schema)
    second = write_all(tmp_path, "second", rows, schema)

    table = pq.read_table(first["parquet"])
    assert table.schema.equals(schema, check_metadata=False)
    assert table.to_pylist() == rows
    parquet = pq.ParquetFile(first["parquet"])
    assert [parquet.metadata.row_group(k).num_rows for k in range(parquet.num_row_groups)] == [2] * (len(rows) // 2) + [
        1
    ] * (len(rows) % 2)
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert b"pandas" not in (parquet.schema_arrow.metadata or {})

    ds = datasets.load_from_disk(str(first["hf"]))
    assert ds.column_names == schema.names
    assert ds.features == datasets.Features.from_arrow_schema(schema)
    assert ds.features.arrow_schema.equals(schema, check_metadata=False)
    assert ds.to_list() == rows

    assert first["jsonl"].read_bytes() == second["jsonl"].read_bytes()
    assert first["parquet"].read_bytes() == second["parquet"].read_bytes()
    names = sorted(p.name for p in first["hf"].iterdir())
    assert names == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    for name in names:
        assert (first["hf"] / name).read_bytes() == (second["hf"] / name).read_bytes(), name
    # The fingerprint hashes the data, not a random id: datasets derives the loaded one from it.
    fingerprint = json.loads((first["hf"] / "state.json").read_text())["_fingerprint"]
    data_digest = sha256_file(first["hf"] / "data-00000-of-00001.arrow")
    assert fingerprint == hashlib.sha256(data_digest.encode()).hexdigest()[:16]
    assert datasets.load_from_disk(str(second["hf"]))._fingerprint == ds._fingerprint


def test_a_multipref_parquet_export_reads_back_through_the_importer(tmp_path: Path) -> None:
    path = tmp_path / "multipref.parquet"
    with ParquetWriter(path, SCHEMAS["multipref"]) as writer:
        writer.write_rows(rows_of([MATH], options("multipref")))
    ((_, row),) = list(read_parquet(path))
    assert isinstance(row, dict)
    record = import_formats.parse_multipref(row)
    assert [h.annotation["preferences"] for h in record.human] == [h.preferences for h in MATH.humans]
    assert import_formats.check_record(record, PAIRWISE_SCHEME, max_chars=10_000) == []


def test_the_hf_writer_splits_shards_and_load_from_disk_reads_them_in_order(tmp_path: Path) -> None:
    import datasets

    schema = SCHEMAS["trl-unpaired"]
    rows = [
        {"prompt": f"p{i}", "completion": "c" * 100, "label": i % 2 == 0, "source": "s", "split": "train"}
        for i in range(50)
    ]
    info = write_hf_dataset(rows, schema, tmp_path / "hf", max_shard_bytes=1000, batch_rows=5, write_rows=10)
    assert info.rows == 50
    assert info.files == tuple(f"data-{k:05d}-of-00005.arrow" for k in range(5))
    assert datasets.load_from_disk(str(tmp_path / "hf")).to_list() == rows
    empty = write_hf_dataset([], schema, tmp_path / "empty")
    assert (empty.rows, empty.files) == (0, ("data-00000-of-00001.arrow",))
    assert len(datasets.load_from_disk(str(tmp_path / "empty"))) == 0
    with pytest.raises(FileExistsError, match="is not empty"):
        write_hf_dataset(rows, schema, tmp_path / "hf")


def test_sha256_file_is_the_hex_digest_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_dataset_card_has_a_hub_yaml_header_counts_sources_and_how_it_was_made() -> None:
    card = dataset_card(
        name="Prefs v1",
        format="trl-preference",
        rows=1500,
        items=1000,
        splits={"train": 1350, "test": 150},
        sources={"hybrid": 600, "ai:gpt-4@v2": 400},
        agreement=0.8125,
        license="odc-by",
        options={"format": "trl-preference", "ties": "drop"},
        filters={"status": "complete"},
        code_version="0.1.0+abc123",
        created="2025-01-02T03:04:05Z",
        files={"prefs.parquet": "ab" * 32},
    )
    assert card.startswith(
        '---\nlicense: odc-by\npretty_name: "Prefs v1"\nlanguage:\n- en\ntask_categories:\n- text-generation\n'
        "- reinforcement-learning\ntags:\n- preference\n- rlhf\n- reward-modeling\n- dpo\n- trl\nsize_categories:\n"
        "- 1K<n<10K\n---\n\n# Prefs v1\n"
    )
    for line in [
        "| rows | 1,500 |",
        "| items | 1,000 |",
        "| split `test` | 150 rows |",
        "| split `train` | 1,350 rows |",
        "| human agreement | 0.812 (mean share of annotators backing the label) |",
        "| made with | HybridPref 0.1.0+abc123 |",
        "| ai:gpt-4@v2 | 400 | 40.0% |",
        "| hybrid | 600 | 60.0% |",
        '  "status": "complete"',
        f"| prefs.parquet | `{'ab' * 32}` |",
    ]:
        assert line in card.splitlines(), line
    assert card.endswith("\n")
    assert not card.endswith("\n\n")


def test_paused_gc_turns_the_collector_off_inside_the_block_and_restores_it() -> None:
    import gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_parquet_row_groups_also_close_at_the_byte_cap(tmp_path: Path) -> None:
    schema = SCHEMAS["trl-unpaired"]
    rows = [{"prompt": f"p{i}", "completion": "c", "label": True, "source": "s", "split": "test"} for i in range(9)]
    path = tmp_path / "capped.parquet"
    with ParquetWriter(path, schema, row_group_size=1000, batch_rows=2, max_row_group_bytes=1) as writer:
        assert writer.write_rows(rows) == 9
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(k).num_rows for k in range(parquet.num_row_groups)] == [2, 2, 2, 2, 1]
    assert pq.read_table(path).to_pylist() == rows
