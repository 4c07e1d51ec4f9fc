"""The annotation scheme and the one validator of annotation payloads.

Everything that stores a preference label (the annotation UI, the API, file imports and the LLM
judges) validates it here, against a `Scheme` built from the project. Pure code: no database.

Canonical order: response index 0 is "A", 1 is "B". Labels are always stored in this order,
whatever order an annotator or a judge was shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError

LIKERT5 = "likert5"
STRENGTH7 = "strength7"
SCALES = (LIKERT5, STRENGTH7)

PAIRWISE = "pairwise"
RANKING = "ranking"
KINDS = (PAIRWISE, RANKING)

# MultiPref's five labels, from "A much better" to "B much better".
LIKERT5_LABELS = (
    "A-is-clearly-better",
    "A-is-slightly-better",
    "Tie",
    "B-is-slightly-better",
    "B-is-clearly-better",
)
# HelpSteer2-Preference: -3 (response 1 much better) .. +3 (response 2 much better).
STRENGTH7_LABELS = (-3, -2, -1, 0, 1, 2, 3)

DEFAULT_ASPECTS = ("overall", "helpful", "truthful", "harmless")
CONFIDENCE_LABELS = ("absolutely-confident", "fairly-confident", "not-confident")
RATING_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
RATING_RANGE = (0, 4)
FLAGS = ("unsafe", "broken-prompt", "both-bad")
TIERS = ("normal", "expert")

Label = str | int


@dataclass(frozen=True)
class Scheme:
    """What a project asks of every annotation."""

    kind: str = PAIRWISE
    scale: str = LIKERT5
    aspects: tuple[str, ...] = DEFAULT_ASPECTS
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rating_attributes: tuple[str, ...] = ()
    justification_required: bool = False
    justification_min_length: int = 0
    ask_confidence: bool = True
    allow_ties: bool = False

    @property
    def labels(self) -> tuple[Label, ...]:
        return LIKERT5_LABELS if self.scale == LIKERT5 else STRENGTH7_LABELS


class SchemeError(ValueError):
    """An annotation does not fit the scheme. `problems` holds (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))


def validate_scheme_config(
    *,
    kind: str,
    scale: str,
    aspects: list[str] | tuple[str, ...],
    reasons: dict[str, Any],
    rating_attributes: list[str],
) -> list[tuple[str, str]]:
    """Problems with a project's scheme settings, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if kind not in KINDS:
        problems.append(("kind", f"{kind!r} is not one of {', '.join(KINDS)}"))
    if scale not in SCALES:
        problems.append(("scale", f"{scale!r} is not one of {', '.join(SCALES)}"))
    if not aspects:
        problems.append(("aspects", "at least one aspect is needed"))
    if len(set(aspects)) != len(aspects):
        problems.append(("aspects", "aspects must be unique"))
    for aspect in aspects:
        if not aspect or not aspect.replace("_", "").replace("-", "").isalnum():
            problems.append(("aspects", f"{aspect!r} must be letters, digits, '-' or '_'"))
    for aspect, listed in reasons.items():
        if aspect not in aspects:
            problems.append(("reasons", f"reasons given for unknown aspect {aspect!r}"))
        if not isinstance(listed, list | tuple) or not all(isinstance(r, str) and r for r in listed):
            problems.append(("reasons", f"reasons for {aspect!r} must be a list of non-empty strings"))
    for attr in rating_attributes:
        if attr not in RATING_ATTRIBUTES:
            problems.append(("rating_attributes", f"{attr!r} is not one of {', '.join(RATING_ATTRIBUTES)}"))
    return problems


def _not_bool(value: Any) -> Any:
    # Lax parsing would turn True into 1 (a strength7 label) before the scale check sees it.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a label")
    return value


class AnnotationPayload(BaseModel):
    """An annotation in canonical response order, as stored."""

    model_config = ConfigDict(extra="forbid", strict=False)

    preferences: dict[str, Annotated[Label, BeforeValidator(_not_bool)]] = Field(default_factory=dict)
    # Best first; a nested list is a group of tied responses.
    ranking: list[StrictInt | list[StrictInt]] | None = None
    ratings: dict[int, dict[str, StrictInt]] = Field(default_factory=dict)  # no True or "3" as a score
    reasons: dict[str, list[str]] = Field(default_factory=dict)
    own_reasons: dict[str, str] = Field(default_factory=dict)
    confidence: dict[str, str] = Field(default_factory=dict)
    justification: str = ""
    time_spent: float | None = Field(default=None, ge=0)
    flags: list[str] = Field(default_factory=list)


def _label_ok(scheme: Scheme, value: Any) -> bool:
    if scheme.scale == LIKERT5:
        return isinstance(value, str) and value in LIKERT5_LABELS
    # strength7: integers (bool is an int in Python, and never a label)
    return isinstance(value, int) and not isinstance(value, bool) and value in STRENGTH7_LABELS


def flatten_ranking(ranking: list[int | list[int]]) -> list[int]:
    out: list[int] = []
    for entry in ranking:
        out.extend(entry if isinstance(entry, list) else [entry])
    return out


def validate_annotation(
    scheme: Scheme, data: dict[str, Any] | AnnotationPayload, *, n_responses: int, complete: bool
) -> AnnotationPayload:
    """Check an annotation against the scheme; raise SchemeError naming every bad field.

    complete=True (the annotation UI and API) asks for every aspect and the justification rules;
    complete=False (imports of existing datasets) accepts the aspects a source happens to have.
    """
    if isinstance(data, AnnotationPayload):
        payload = data
    else:
        try:
            payload = AnnotationPayload.model_validate(data)
        except ValidationError as exc:
            raise SchemeError([(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]) from None

    problems: list[tuple[str, str]] = []
    if scheme.kind == PAIRWISE:
        for aspect, value in payload.preferences.items():
            if aspect not in scheme.aspects:
                problems.append(
                    (f"preferences.{aspect}", f"unknown aspect (project aspects: {', '.join(scheme.aspects)})")
                )
            elif not _label_ok(scheme, value):
                allowed = ", ".join(str(v) for v in scheme.labels)
                problems.append((f"preferences.{aspect}", f"{value!r} is not on the {scheme.scale} scale ({allowed})"))
        missing = [a for a in scheme.aspects if a not in payload.preferences]
        if complete and missing:
            problems.append(("preferences", f"missing aspects: {', '.join(missing)}"))
        if not payload.preferences and payload.ranking is None:
            problems.append(("preferences", "at least one preference is needed"))
    elif payload.preferences:
        problems.append(("preferences", "ranking projects answer with a ranking, not pairwise preferences"))

    if payload.ranking is not None:
        flat = flatten_ranking(payload.ranking)
        if sorted(flat) != list(range(n_responses)):
            problems.append(("ranking", f"must list each response index 0..{n_responses - 1} exactly once"))
        has_ties = any(isinstance(e, list) and len(e) > 1 for e in payload.ranking)
        if has_ties and scheme.kind == RANKING and not scheme.allow_ties:
            problems.append(("ranking", "this project does not allow ties"))
    elif scheme.kind == RANKING:
        problems.append(("ranking", "a ranking is required"))

    for index, attrs in payload.ratings.items():
        if not 0 <= index < n_responses:
            problems.append((f"ratings.{index}", f"no response {index} (item has {n_responses})"))
        for attr, score in attrs.items():
            if attr not in scheme.rating_attributes:
                problems.append((f"ratings.{index}.{attr}", "not a rating attribute of this project"))
            elif not RATING_RANGE[0] <= score <= RATING_RANGE[1]:
                problems.append((f"ratings.{index}.{attr}", f"{score} is outside {RATING_RANGE[0]}..{RATING_RANGE[1]}"))

    for aspect, checked in payload.reasons.items():
        allowed_reasons = scheme.reasons.get(aspect, ())
        if aspect not in scheme.aspects:
            problems.append((f"reasons.{aspect}", "unknown aspect"))
        elif allowed_reasons:
            unknown = [r for r in checked if r not in allowed_reasons]
            if unknown:
                problems.append((f"reasons.{aspect}", f"unknown reasons: {', '.join(map(repr, unknown))}"))
    for aspect in payload.own_reasons:
        if aspect not in scheme.aspects:
            problems.append((f"own_reasons.{aspect}", "unknown aspect"))
    for aspect, answer in payload.confidence.items():
        if aspect not in scheme.aspects:
            problems.append((f"confidence.{aspect}", "unknown aspect"))
        elif answer not in CONFIDENCE_LABELS:
            problems.append((f"confidence.{aspect}", f"{answer!r} is not one of {', '.join(CONFIDENCE_LABELS)}"))
    if complete and scheme.ask_confidence and not payload.confidence:
        problems.append(("confidence", "a confidence answer is required"))
    if complete and scheme.justification_required:
        text = payload.justification.strip()
        if not text:
            problems.append(("justification", "a justification is required"))
        elif len(text) < scheme.justification_min_length:
            problems.append(
                ("justification", f"needs at least {scheme.justification_min_length} characters (has {len(text)})")
            )
    for flag in payload.flags:
        if flag not in FLAGS:
            problems.append(("flags", f"{flag!r} is not one of {', '.join(FLAGS)}"))

    if problems:
        raise SchemeError(problems)
    return payload


# --- display order ------------------------------------------------------------------------------
# An annotator sees the responses in a permutation `order`: order[k] is the canonical index of the
# k-th response shown. Labels given on what was shown are mapped back before they are stored.

_LIKERT5_MIRROR = dict(zip(LIKERT5_LABELS, reversed(LIKERT5_LABELS), strict=True))


def mirror_label(label: Label) -> Label:
    """The same judgement with A and B swapped."""
    if isinstance(label, str):
        return _LIKERT5_MIRROR[label]
    return -label


def _map_payload(payload: AnnotationPayload, index_map: list[int]) -> AnnotationPayload:
    """Re-index responses by index_map (old index -> new index) and flip pairwise labels if A/B swap."""
    swapped = len(index_map) == 2 and index_map[0] == 1
    preferences = {a: mirror_label(v) if swapped else v for a, v in payload.preferences.items()}
    ranking = None
    if payload.ranking is not None:
        ranking = [[index_map[i] for i in e] if isinstance(e, list) else index_map[e] for e in payload.ranking]
    ratings = {index_map[i]: attrs for i, attrs in payload.ratings.items() if 0 <= i < len(index_map)}
    return payload.model_copy(update={"preferences": preferences, "ranking": ranking, "ratings": ratings})


def to_canonical(payload: AnnotationPayload, order: list[int]) -> AnnotationPayload:
    """Labels given on the shown order -> canonical order (what is stored)."""
    return _map_payload(payload, list(order))


def to_display(payload: AnnotationPayload, order: list[int]) -> AnnotationPayload:
    """Stored (canonical) labels -> the order shown, to pre-fill an edit form."""
    inverse = [0] * len(order)
    for shown, canonical in enumerate(order):
        inverse[canonical] = shown
    return _map_payload(payload, inverse)
