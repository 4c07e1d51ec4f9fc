"""Export formats: the rows one item gives, with exact column names and Arrow types. Pure code.

- multipref: MultiPref's columns (allenai/multipref), one row per item with every human annotation
  (normal and expert lists) and, added, every AI label (`ai_annotations`). A raw export: no
  aggregation, no split; `rule`, `label_source`, `ties` and `aspect` do not apply. Pairwise projects
  only; strength7 labels become likert5 as the importer maps them (+-1 slightly, +-2 and +-3
  clearly, 0 Tie), so -2 and -3 both read "clearly". The project's aspects must be among MultiPref's
  four (overall, helpful, truthful, harmless); an aspect an annotation lacks is null.
- helpsteer2-preference: one row per labelled item: the aggregated `preference_strength` (-3..+3,
  negative = response_1/A better), the statement and elaboration of the first counted annotator
  who backs the consensus winner and wrote one (normal tier first; for an AI label, the judge's
  rationale as elaboration), the split, and extra columns `id`, `source`, `agreement` and
  `individual_preference` (each counted annotator's own strength). likert5 -> strength:
  A-is-clearly-better -2, A-is-slightly-better -1, Tie 0, B-is-slightly-better +1,
  B-is-clearly-better +2, so that the importer reads the same label back (it maps +-2 to clearly).
  Pairwise projects only.
- trl-preference: TRL's preference type. Standard form: prompt, chosen, rejected as strings;
  conversational form (options.conversational): prompt = the messages, chosen / rejected =
  [{"role": "assistant", "content": ...}]. `margin` (float, when options.with_margin): |strength|
  in steps (likert5 slightly 1, clearly 2; strength7 1..3), or the rank gap for rankings; RewardTrainer
  reads a "margin" column. Ties: "drop" leaves them out; "keep" writes them with response A (the
  lower canonical index) as chosen and margin 0. A ranking gives every pair of ranking_pairs
  (tied pairs only with ties "keep"). Plus `source` and `split`.
- trl-unpaired: TRL's unpaired preference type (KTO): prompt, completion, label (True for the chosen
  response of a decided pair, False for the rejected one), source, split. Two rows per decided pair
  (as trl's unpair_preference_dataset does); ties never give rows.

Prompts: the standard form uses the item's prompt, or the last user turn of its conversation when
it has no prompt (earlier turns are only in the conversational form). The conversational form uses
the conversation when there is one, else [{"role": "user", "content": prompt}]. Splits hash the
prompt text (or the conversation), see aggregate.split_for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from webapp.exporting import aggregate as agg
from webapp.exporting.records import AILabel, ExportItem, HumanLabel
from webapp.importing.formats import strength_label
from webapp.scheme import LIKERT5, PAIRWISE, Label, Scheme

MULTIPREF, HELPSTEER2, TRL_PREFERENCE, TRL_UNPAIRED = (
    "multipref",
    "helpsteer2-preference",
    "trl-preference",
    "trl-unpaired",
)
FORMATS = (MULTIPREF, HELPSTEER2, TRL_PREFERENCE, TRL_UNPAIRED)
PAIRWISE_ONLY = (MULTIPREF, HELPSTEER2)
TIES = ("drop", "keep")
MULTIPREF_ASPECTS = ("overall", "helpful", "truthful", "harmless")
MULTIPREF_METADATA = ("prompt_id", "source", "category", "subject_study", "highest_level_degree")

Row = dict[str, Any]


class ExportError(ValueError):
    """The options do not fit the project or an item (a clear message for the person exporting)."""


@dataclass(frozen=True)
class ExportOptions:
    """What an export asks for. See the module docstring for what each format does with them."""

    format: str
    rule: str = agg.MAJORITY
    ai_judge: str | None = None
    aspect: str = "overall"
    seed: int = 0
    test_fraction: float = 0.1
    conversational: bool = False
    ties: str = "drop"
    with_margin: bool = True
    label_source: str = "hybrid"

    def __post_init__(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"unknown format {self.format!r} (use {', '.join(FORMATS)})")
        if self.rule not in agg.RULES:
            problems.append(f"unknown rule {self.rule!r} (use {', '.join(agg.RULES)})")
        if self.label_source not in agg.LABEL_SOURCES:
            problems.append(f"unknown label source {self.label_source!r} (use {', '.join(agg.LABEL_SOURCES)})")
        if self.ties not in TIES:
            problems.append(f"unknown ties option {self.ties!r} (use {', '.join(TIES)})")
        if not 0.0 <= self.test_fraction <= 1.0:
            problems.append(f"test_fraction must be between 0 and 1, not {self.test_fraction}")
        if problems:
            raise ExportError("; ".join(problems))


# --- schemas --------------------------------------------------------------------------------------

_STR = pa.string()
_MESSAGES = pa.list_(pa.struct([("role", _STR), ("content", _STR)]))

MULTIPREF_HUMAN = pa.struct(
    [("evaluator", _STR)]
    + [(f"{a}_pref", _STR) for a in MULTIPREF_ASPECTS]
    + [(f"{a}_confidence", _STR) for a in MULTIPREF_ASPECTS]
    + [(f"{a}_checked_reasons", pa.list_(_STR)) for a in MULTIPREF_ASPECTS]
    + [(f"{a}_own_reason", _STR) for a in MULTIPREF_ASPECTS]
    + [("time_spent", pa.float64()), ("timestamp", _STR)]
)
MULTIPREF_AI = pa.struct(
    [("judge", _STR), ("prompt_version", _STR)]
    + [(f"{a}_pref", _STR) for a in MULTIPREF_ASPECTS]
    + [("rationale", _STR), ("order_inconsistent", pa.bool_())]
)
HELPSTEER2_INDIVIDUAL = pa.struct(
    [("annotator", _STR), ("tier", _STR), ("strength", pa.int64()), ("statement", _STR), ("elaboration", _STR)]
)

SCHEMAS: dict[str, pa.Schema] = {
    MULTIPREF: pa.schema(
        [(name, _STR) for name in ("comparison_id", "prompt_id", "text", "model_a", "completion_a", "model_b")]
        + [(name, _STR) for name in ("completion_b", *MULTIPREF_METADATA[1:])]
        + [
            ("normal_worker_annotations", pa.list_(MULTIPREF_HUMAN)),
            ("expert_worker_annotations", pa.list_(MULTIPREF_HUMAN)),
            ("ai_annotations", pa.list_(MULTIPREF_AI)),
        ]
    ),
    HELPSTEER2: pa.schema(
        [
            ("id", _STR),
            ("prompt", _STR),
            ("response_1", _STR),
            ("response_2", _STR),
            ("preference_strength", pa.int64()),
            ("preference_statement", _STR),
            ("preference_elaboration", _STR),
            ("split", _STR),
            ("source", _STR),
            ("agreement", pa.float64()),
            ("individual_preference", pa.list_(HELPSTEER2_INDIVIDUAL)),
        ]
    ),
    TRL_PREFERENCE: pa.schema(
        [
            ("prompt", _STR),
            ("chosen", _STR),
            ("rejected", _STR),
            ("margin", pa.float64()),
            ("source", _STR),
            ("split", _STR),
        ]
    ),
    TRL_UNPAIRED: pa.schema(
        [("prompt", _STR), ("completion", _STR), ("label", pa.bool_()), ("source", _STR), ("split", _STR)]
    ),
}


def schema_for(options: ExportOptions) -> pa.Schema:
    """The exact schema of an export: SCHEMAS[format], with message lists in place of the prompt and
    completions in the conversational form, and without `margin` when with_margin is off."""
    schema = SCHEMAS[options.format]
    if options.format not in (TRL_PREFERENCE, TRL_UNPAIRED):
        return schema
    fields = []
    for f in schema:
        if f.name == "margin" and not options.with_margin:
            continue
        if options.conversational and f.name in ("prompt", "chosen", "rejected", "completion"):
            f = pa.field(f.name, _MESSAGES)
        fields.append(f)
    return pa.schema(fields)


# --- helpers --------------------------------------------------------------------------------------


def prompt_text(item: ExportItem) -> str:
    """The prompt as one string: the item's prompt, or its conversation's last user turn."""
    if item.prompt or not item.conversation:
        return item.prompt
    for turn in reversed(item.conversation):
        if turn.get("role") == "user":
            return turn.get("content", "")
    return ""


def prompt_messages(item: ExportItem) -> list[dict[str, str]]:
    """The prompt as chat messages, keys in a fixed order (role, content) for stable bytes."""
    if item.conversation:
        return [{"role": t.get("role", ""), "content": t.get("content", "")} for t in item.conversation]
    return [{"role": "user", "content": item.prompt}]


def prompt_key(item: ExportItem) -> str:
    """What split_for hashes: the prompt text, or the whole conversation."""
    if item.conversation:
        return json.dumps([[t.get("role", ""), t.get("content", "")] for t in item.conversation], ensure_ascii=False)
    return item.prompt


def _meta_str(value: Any) -> str | None:
    # MultiPref's metadata columns are strings; other JSON values keep their JSON spelling.
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _texts(item: ExportItem) -> dict[int, str]:
    return {r.position: r.text for r in item.responses}


def hs2_strength(label: Label, scale: str) -> int:
    """A label as HelpSteer2's preference_strength (-3..+3, negative = response 1 better)."""
    return -agg.to_steps(label, scale)


# --- builders -------------------------------------------------------------------------------------


class RowBuilder:
    """Builds the rows of one item at a time for fixed options and project scheme.

    Checks that the options fit the project once, up front (ExportError). `build(item)` gives the
    label used (None for multipref and for items without one) and the rows; calling the builder
    gives the rows only.
    """

    def __init__(self, options: ExportOptions, scheme: Scheme) -> None:
        self.options = options
        self.scheme = scheme
        self.schema = schema_for(options)
        fmt = options.format
        if fmt in PAIRWISE_ONLY and scheme.kind != PAIRWISE:
            raise ExportError(
                f"the {fmt} format holds pairwise comparisons (two responses and an A/B preference); "
                f"this is a {scheme.kind} project: export it as {TRL_PREFERENCE} or {TRL_UNPAIRED}"
            )
        if fmt == MULTIPREF:
            extra = [a for a in scheme.aspects if a not in MULTIPREF_ASPECTS]
            if extra:
                raise ExportError(
                    f"the multipref format has the aspects {', '.join(MULTIPREF_ASPECTS)} only; this project also "
                    f"has {', '.join(extra)}: export it as {HELPSTEER2}, {TRL_PREFERENCE} or {TRL_UNPAIRED} "
                    "(one aspect at a time)"
                )
        elif scheme.kind == PAIRWISE and options.aspect not in scheme.aspects:
            raise ExportError(
                f"aspect {options.aspect!r} is not one of this project's aspects ({', '.join(scheme.aspects)})"
            )
        self._build: Callable[[ExportItem], tuple[agg.LabelChoice | None, list[Row]]] = {
            MULTIPREF: self._multipref,
            HELPSTEER2: self._helpsteer2,
            TRL_PREFERENCE: self._trl_preference,
            TRL_UNPAIRED: self._trl_unpaired,
        }[fmt]

    def __call__(self, item: ExportItem) -> Iterator[Row]:
        return iter(self._build(item)[1])

    def build(self, item: ExportItem) -> tuple[agg.LabelChoice | None, list[Row]]:
        return self._build(item)

    def _choice(self, item: ExportItem) -> agg.LabelChoice | None:
        o = self.options
        return agg.hybrid_label(
            item,
            o.aspect,
            self.scheme.scale,
            rule=o.rule,
            ai_judge=o.ai_judge,
            label_source=o.label_source,
            kind=self.scheme.kind,
        )

    def _split(self, item: ExportItem) -> str:
        return agg.split_for(prompt_key(item), self.options.seed, self.options.test_fraction)

    def _pair_texts(self, item: ExportItem) -> tuple[str, str]:
        texts = _texts(item)
        if len(texts) != 2 or 0 not in texts or 1 not in texts:
            raise ExportError(f"item {item.external_id!r} has {len(item.responses)} responses; a pair needs 2")
        return texts[0], texts[1]

    # multipref

    def _likert5(self, labels: dict[str, Label]) -> dict[str, Label]:
        """Labels as MultiPref's likert5 strings: as they are on likert5, mapped from strength7."""
        if self.scheme.scale == LIKERT5:
            return labels  # the hot path: no copy, no call per label
        return {aspect: strength_label(LIKERT5, int(v)) for aspect, v in labels.items()}

    def _multipref_human(self, h: HumanLabel) -> Row:
        p, c, r, o = self._likert5(h.preferences), h.confidence, h.reasons, h.own_reasons
        return {
            "evaluator": h.annotator,
            "overall_pref": p.get("overall"),
            "helpful_pref": p.get("helpful"),
            "truthful_pref": p.get("truthful"),
            "harmless_pref": p.get("harmless"),
            "overall_confidence": c.get("overall"),
            "helpful_confidence": c.get("helpful"),
            "truthful_confidence": c.get("truthful"),
            "harmless_confidence": c.get("harmless"),
            "overall_checked_reasons": r.get("overall") or [],
            "helpful_checked_reasons": r.get("helpful") or [],
            "truthful_checked_reasons": r.get("truthful") or [],
            "harmless_checked_reasons": r.get("harmless") or [],
            "overall_own_reason": o.get("overall", ""),
            "helpful_own_reason": o.get("helpful", ""),
            "truthful_own_reason": o.get("truthful", ""),
            "harmless_own_reason": o.get("harmless", ""),
            "time_spent": h.time_spent,
            "timestamp": h.timestamp,
        }

    def _multipref_ai(self, a: AILabel) -> Row:
        lab = self._likert5(a.labels)
        return {
            "judge": a.judge,
            "prompt_version": a.prompt_version,
            "overall_pref": lab.get("overall"),
            "helpful_pref": lab.get("helpful"),
            "truthful_pref": lab.get("truthful"),
            "harmless_pref": lab.get("harmless"),
            "rationale": a.rationale,
            "order_inconsistent": a.order_inconsistent,
        }

    def _multipref(self, item: ExportItem) -> tuple[agg.LabelChoice | None, list[Row]]:
        by_position = {r.position: r for r in item.responses}
        if len(item.responses) != 2 or sorted(by_position) != [0, 1]:
            raise ExportError(f"item {item.external_id!r} has {len(item.responses)} responses; multipref needs 2")
        a, b = by_position[0], by_position[1]
        meta = item.metadata
        human = self._multipref_human
        row = {
            "comparison_id": item.external_id,
            "prompt_id": _meta_str(meta.get("prompt_id")),
            "text": prompt_text(item),
            "model_a": a.model,
            "completion_a": a.text,
            "model_b": b.model,
            "completion_b": b.text,
            "source": _meta_str(meta.get("source")),
            "category": _meta_str(meta.get("category")),
            "subject_study": _meta_str(meta.get("subject_study")),
            "highest_level_degree": _meta_str(meta.get("highest_level_degree")),
            "normal_worker_annotations": [human(h) for h in item.humans if h.tier != "expert"],
            "expert_worker_annotations": [human(h) for h in item.humans if h.tier == "expert"],
            "ai_annotations": [self._multipref_ai(x) for x in item.ais],
        }
        return None, [row]

    # helpsteer2-preference

    def _helpsteer2(self, item: ExportItem) -> tuple[agg.LabelChoice | None, list[Row]]:
        choice = self._choice(item)
        if choice is None or choice.label is None:
            return choice, []
        response_1, response_2 = self._pair_texts(item)
        scale, aspect = self.scheme.scale, self.options.aspect
        statement = elaboration = ""
        if choice.ai is not None:
            elaboration = choice.ai.rationale
        else:
            backers = [h for h in choice.humans if agg.winner_of(h.preferences[aspect], scale) == choice.winner]
            statement = next((s for h in backers if (s := h.own_reasons.get(aspect, ""))), "")
            elaboration = next((h.justification for h in backers if h.justification), "")
        row = {
            "id": item.external_id,
            "prompt": prompt_text(item),
            "response_1": response_1,
            "response_2": response_2,
            "preference_strength": hs2_strength(choice.label, scale),
            "preference_statement": statement,
            "preference_elaboration": elaboration,
            "split": self._split(item),
            "source": choice.source,
            "agreement": choice.agreement,
            "individual_preference": [
                {
                    "annotator": h.annotator,
                    "tier": h.tier,
                    "strength": hs2_strength(h.preferences[aspect], scale),
                    "statement": h.own_reasons.get(aspect, ""),
                    "elaboration": h.justification,
                }
                for h in choice.humans
            ],
        }
        return choice, [row]

    # trl

    def _pairs(self, item: ExportItem, choice: agg.LabelChoice, keep_ties: bool) -> list[tuple[int, int, float]]:
        """(chosen, rejected, margin) of a label; ties (chosen = lower index, margin 0) when keep_ties."""
        if choice.ranking is not None:
            pairs = [(b, w, float(gap)) for b, w, gap in agg.ranking_pairs(choice.ranking)]
            if keep_ties:
                pairs.extend((a, b, 0.0) for a, b in agg.tied_pairs(choice.ranking))
            return pairs
        self._pair_texts(item)  # a pairwise label needs responses 0 and 1: ExportError otherwise
        if choice.winner == 0:
            return [(0, 1, 0.0)] if keep_ties else []
        assert choice.label is not None  # a pairwise choice always has a label
        steps = agg.to_steps(choice.label, self.scheme.scale)
        return [(0, 1, float(steps))] if steps > 0 else [(1, 0, float(-steps))]

    def _trl_preference(self, item: ExportItem) -> tuple[agg.LabelChoice | None, list[Row]]:
        choice = self._choice(item)
        if choice is None:
            return None, []
        pairs = self._pairs(item, choice, self.options.ties == "keep")
        if not pairs:
            return choice, []
        texts = _texts(item)
        conversational, with_margin = self.options.conversational, self.options.with_margin
        prompt: Any = prompt_messages(item) if conversational else prompt_text(item)
        source, split = choice.source, self._split(item)
        rows = []
        for chosen, rejected, margin in pairs:
            row: Row = {"prompt": prompt}
            if conversational:
                row["chosen"] = [{"role": "assistant", "content": texts[chosen]}]
                row["rejected"] = [{"role": "assistant", "content": texts[rejected]}]
            else:
                row["chosen"] = texts[chosen]
                row["rejected"] = texts[rejected]
            if with_margin:
                row["margin"] = margin
            row["source"] = source
            row["split"] = split
            rows.append(row)
        return choice, rows

    def _trl_unpaired(self, item: ExportItem) -> tuple[agg.LabelChoice | None, list[Row]]:
        choice = self._choice(item)
        if choice is None:
            return None, []
        # A tie decides nothing: no desirable or undesirable completion, even with ties "keep".
        pairs = self._pairs(item, choice, keep_ties=False)
        if not pairs:
            return choice, []
        texts = _texts(item)
        conversational = self.options.conversational
        prompt: Any = prompt_messages(item) if conversational else prompt_text(item)
        source, split = choice.source, self._split(item)
        rows = []
        for chosen, rejected, _ in pairs:
            for index, label in ((chosen, True), (rejected, False)):
                completion: Any = [{"role": "assistant", "content": texts[index]}] if conversational else texts[index]
                row = {"prompt": prompt, "completion": completion, "label": label, "source": source, "split": split}
                rows.append(row)
        return choice, rows


def build_rows(item: ExportItem, options: ExportOptions, scheme: Scheme) -> Iterator[Row]:
    """The rows of one item (convenience; a RowBuilder reuses its checks across items)."""
    return RowBuilder(options, scheme)(item)


# --- whole exports --------------------------------------------------------------------------------


@dataclass
class ExportSummary:
    """Counts for the dataset card and the snapshot record.

    sources: label formats count items by the source of their label; multipref counts annotations
    ("human-normal", "human-expert", "ai:judge@version"), as its rows carry all of them.
    unlabelled: items that gave no row (no label of the kind asked for, or a tie dropped).
    agreement: mean human agreement over the items whose label is a human consensus.
    """

    items: int = 0
    rows: int = 0
    unlabelled: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    _agreement_sum: float = 0.0
    _agreement_n: int = 0

    @property
    def agreement(self) -> float | None:
        return self._agreement_sum / self._agreement_n if self._agreement_n else None

    def add(self, item: ExportItem, choice: agg.LabelChoice | None, rows: list[Row]) -> None:
        self.items += 1
        self.rows += len(rows)
        if not rows:
            self.unlabelled += 1
        for row in rows:
            if "split" in row:
                self.splits[row["split"]] += 1
        if choice is None:
            if not rows:
                return
            for h in item.humans:  # multipref: every annotation is in the row
                self.sources[agg.HUMAN_EXPERT if h.tier == "expert" else agg.HUMAN_NORMAL] += 1
            for a in item.ais:
                self.sources[agg.ai_source(a)] += 1
            return
        if rows:
            self.sources[choice.source] += 1
            if choice.agreement is not None:
                self._agreement_sum += choice.agreement
                self._agreement_n += 1


def export_rows(
    items: Iterable[ExportItem], options: ExportOptions, scheme: Scheme, summary: ExportSummary | None = None
) -> Iterator[Row]:
    """Every row of every item, in item order, counting into `summary` when given.

    The options are checked against the scheme here, when called (ExportError), not at the first
    row: an export that cannot be made fails before any file is opened.
    """
    builder = RowBuilder(options, scheme)

    def rows() -> Iterator[Row]:
        for item in items:
            choice, item_rows = builder.build(item)
            if summary is not None:
                summary.add(item, choice, item_rows)
            yield from item_rows

    return rows()


def counts_by(values: Mapping[str, int]) -> dict[str, int]:
    """A counter as a plain dict sorted by key (stable card and JSON output)."""
    return {k: values[k] for k in sorted(values)}
