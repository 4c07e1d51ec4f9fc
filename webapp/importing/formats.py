"""Import formats: each turns one raw row into an `ItemRecord`, or names what is wrong.

Pure code. The formats are documented in docs/formats.md. After a format has parsed a row,
`check_record` checks it against the project's scheme with the one annotation validator
(webapp.scheme.validate_annotation).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, field_validator

from webapp import scheme as sch

Problem = tuple[str, str]  # (field, message)


class RowProblems(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


@dataclass
class ResponseRecord:
    text: str
    model: str = ""


@dataclass
class HumanRecord:
    annotator: str
    tier: str
    annotation: dict[str, Any]
    timestamp: str = ""
    # Where the annotation is in the source row, and its fields' source names ("preferences.overall": "overall_pref"),
    # so that errors name what the file says. Empty for native rows: "human_annotations.N" and the native names.
    where: str = ""
    field_names: dict[str, str] = field(default_factory=dict)

    def source_field(self, name: str) -> str:
        for ours, theirs in self.field_names.items():
            if name == ours or name.startswith(ours + "."):
                return theirs + name[len(ours) :]
        return name


@dataclass
class LLMRecord:
    judge: str
    labels: dict[str, Any]
    ranking: list[Any] | None = None
    rationale: str = ""
    raw_output: str = ""
    order_inconsistent: bool | None = None
    failed: bool = False


@dataclass
class ItemRecord:
    external_id: str
    responses: list[ResponseRecord]
    prompt: str = ""
    conversation: list[dict[str, str]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    human: list[HumanRecord] = field(default_factory=list)
    llm: list[LLMRecord] = field(default_factory=list)
    # Made once and kept: the checks, the hash and the import each need them (see texts_utf8, metadata_json).
    _utf8: tuple[bytes, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _metadata_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def long_texts(self) -> list[tuple[str, str]]:
        """(field, text) of the prompt, the conversation's turns and the responses."""
        turns = self.conversation or []
        return [
            ("prompt", self.prompt),
            *((f"conversation.{i}.content", t.get("content", "")) for i, t in enumerate(turns)),
            *((f"responses.{i}.text", r.text) for i, r in enumerate(self.responses)),
        ]

    def texts_utf8(self) -> tuple[bytes, ...]:
        """The long texts in UTF-8, in long_texts' order. UnicodeEncodeError where one holds a lone surrogate.

        Encoded once for both the check and the hash: a few KB of text that is not ASCII takes about a
        microsecond a KB to encode, a good part of an import's time.
        """
        if self._utf8 is None:
            self._utf8 = tuple(text.encode() for _, text in self.long_texts())
        return self._utf8

    def metadata_json(self) -> str:
        """The metadata as the database stores it (JSON; values JSON has no type for as their str)."""
        if self._metadata_json is None:
            self._metadata_json = json.dumps(self.metadata, default=str)
        return self._metadata_json

    def content_hash(self) -> str:
        """Stable digest of everything imported for the item (re-imports compare it).

        The long texts (prompt, conversation turns, responses) go in as UTF-8, each after its
        length; the rest as canonical JSON. JSON-escaping the texts made hashing 2.5 times slower
        (28 against 11 µs for an item of 5 KB).
        """
        turns = self.conversation or []
        rest = json.dumps(
            [
                None if self.conversation is None else [{k: v for k, v in t.items() if k != "content"} for t in turns],
                [r.model for r in self.responses],
                self.metadata,
                [[h.annotator, h.tier, h.annotation, h.timestamp] for h in self.human],
                [[x.judge, x.labels, x.ranking, x.rationale, x.raw_output, x.order_inconsistent] for x in self.llm],
            ],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        digest = hashlib.sha256()
        for data in (rest.encode(), *self.texts_utf8()):
            digest.update(b"%d\n" % len(data))
            digest.update(data)
        return digest.hexdigest()


def _pydantic_problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (put extra keys under metadata)"
        out.append((prefix + loc, msg))
    return out


def _maybe_json(value: Any) -> Any:
    """CSV cells hold nested values as JSON text."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return json.loads(stripped)
            except (ValueError, RecursionError):  # not JSON, a number past Python's digit limit, nested too deeply
                return value
    return value


def _json_cells(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """Decode the CSV cells of columns that hold nested values; text cells stay text, even if they look like JSON."""
    return {k: _maybe_json(v) if k in columns else v for k, v in row.items()}


def _str_or_int(value: Any) -> Any:
    """Ids and labels are JSON strings or integers. Pydantic alone would read true as 1 and 1.5 as a union error."""
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise ValueError(f"must be a string or an integer, not {json.dumps(value, default=str)[:40]}")
    return value


StrOrInt = Annotated[str | int, BeforeValidator(_str_or_int)]


# --- native -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NativeTurn(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class NativeResponse(_Strict):
    text: str
    model: str = ""


class NativeHuman(_Strict):
    annotator: str = Field(min_length=1)
    tier: Literal["normal", "expert"] = "normal"
    labels: dict[str, StrOrInt] = Field(default_factory=dict)
    ranking: list[StrictInt | list[StrictInt]] | None = None
    ratings: dict[int, dict[str, StrictInt]] = Field(default_factory=dict)
    reasons: dict[str, list[str]] = Field(default_factory=dict)
    own_reasons: dict[str, str] = Field(default_factory=dict)
    confidence: dict[str, str] = Field(default_factory=dict)
    justification: str = ""
    time_spent: float | None = None
    flags: list[str] = Field(default_factory=list)
    timestamp: str = ""


class NativeLLM(_Strict):
    judge: str = Field(min_length=1)
    labels: dict[str, StrOrInt] = Field(default_factory=dict)
    ranking: list[StrictInt | list[StrictInt]] | None = None
    rationale: str = ""
    raw_output: str = ""
    order_inconsistent: bool | None = None


class NativeRow(_Strict):
    id: StrOrInt
    prompt: str | None = None
    conversation: list[NativeTurn] | None = None
    responses: list[NativeResponse]
    metadata: dict[str, Any] = Field(default_factory=dict)
    human_annotations: list[NativeHuman] = Field(default_factory=list)
    llm_annotations: list[NativeLLM] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: StrOrInt) -> StrOrInt:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


NATIVE_JSON_COLUMNS = ("conversation", "responses", "metadata", "human_annotations", "llm_annotations")


def _native_csv_shape(row: dict[str, Any]) -> dict[str, Any]:
    """Flat CSV columns (response_1, model_1, metadata.x) to the native object shape."""
    out: dict[str, Any] = {}
    responses: dict[int, dict[str, str]] = {}
    metadata: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith("response_") and key[9:].isdigit():
            responses.setdefault(int(key[9:]), {})["text"] = value
        elif key.startswith("model_") and key[6:].isdigit():
            responses.setdefault(int(key[6:]), {})["model"] = value
        elif key.startswith("metadata."):
            metadata[key[9:]] = value
        else:
            out[key] = _maybe_json(value) if key in NATIVE_JSON_COLUMNS else value
    if responses and "responses" not in out:
        out["responses"] = [responses[k] for k in sorted(responses)]
    if metadata:
        merged = out.get("metadata")
        out["metadata"] = {**(merged if isinstance(merged, dict) else {}), **metadata}
    return out


def parse_native(row: dict[str, Any], *, from_csv: bool = False) -> ItemRecord:
    if from_csv:
        row = _native_csv_shape(row)
    try:
        parsed = NativeRow.model_validate(row)
    except ValidationError as exc:
        raise RowProblems(_pydantic_problems(exc)) from None
    if not (parsed.prompt or "").strip() and not parsed.conversation:
        raise RowProblems([("prompt", "an item needs a prompt or a conversation")])
    return ItemRecord(
        external_id=str(parsed.id),
        prompt=parsed.prompt or "",
        conversation=[t.model_dump() for t in parsed.conversation] if parsed.conversation else None,
        responses=[ResponseRecord(text=r.text, model=r.model) for r in parsed.responses],
        metadata=parsed.metadata,
        human=[
            HumanRecord(
                annotator=h.annotator,
                tier=h.tier,
                timestamp=h.timestamp,
                annotation={
                    "preferences": h.labels,
                    "ranking": h.ranking,
                    "ratings": h.ratings,
                    "reasons": h.reasons,
                    "own_reasons": h.own_reasons,
                    "confidence": h.confidence,
                    "justification": h.justification,
                    "time_spent": h.time_spent,
                    "flags": h.flags,
                },
            )
            for h in parsed.human_annotations
        ],
        llm=[
            LLMRecord(
                judge=x.judge,
                labels=x.labels,
                ranking=x.ranking,
                rationale=x.rationale,
                raw_output=x.raw_output,
                order_inconsistent=x.order_inconsistent,
            )
            for x in parsed.llm_annotations
        ],
    )


# --- MultiPref --------------------------------------------------------------------------------

MULTIPREF_ASPECTS = {"overall": "overall", "helpful": "helpful", "truthful": "truthful", "harmless": "harmless"}
MULTIPREF_METADATA = ("prompt_id", "source", "category", "subject_study", "highest_level_degree")


class MultiPrefRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    comparison_id: StrOrInt
    text: str = Field(min_length=1)
    model_a: str = ""
    completion_a: str
    model_b: str = ""
    completion_b: str
    normal_worker_annotations: list[dict[str, Any]] = Field(default_factory=list)
    expert_worker_annotations: list[dict[str, Any]] = Field(default_factory=list)


def _multipref_annotation(raw: dict[str, Any], tier: str, where: str) -> HumanRecord:
    if not isinstance(raw, dict):
        raise RowProblems([(where, "each annotation must be an object")])
    evaluator = raw.get("evaluator")
    if not isinstance(evaluator, str | int) or str(evaluator) == "":
        raise RowProblems([(f"{where}.evaluator", "Field required")])
    prefs: dict[str, Any] = {}
    reasons: dict[str, Any] = {}
    own: dict[str, Any] = {}
    conf: dict[str, Any] = {}
    for src, aspect in MULTIPREF_ASPECTS.items():
        if raw.get(f"{src}_pref") not in (None, ""):
            prefs[aspect] = raw[f"{src}_pref"]
        if raw.get(f"{src}_checked_reasons"):
            reasons[aspect] = raw[f"{src}_checked_reasons"]
        if raw.get(f"{src}_own_reason"):
            own[aspect] = raw[f"{src}_own_reason"]
        if raw.get(f"{src}_confidence") not in (None, ""):
            conf[aspect] = raw[f"{src}_confidence"]
    time_spent = raw.get("time_spent")
    field_names = {"annotator": "evaluator", "time_spent": "time_spent"}
    for src, aspect in MULTIPREF_ASPECTS.items():
        field_names[f"preferences.{aspect}"] = f"{src}_pref"
        field_names[f"reasons.{aspect}"] = f"{src}_checked_reasons"
        field_names[f"own_reasons.{aspect}"] = f"{src}_own_reason"
        field_names[f"confidence.{aspect}"] = f"{src}_confidence"
    return HumanRecord(
        annotator=str(evaluator),
        tier=tier,
        timestamp=str(raw.get("timestamp") or ""),
        where=where,
        field_names=field_names,
        annotation={
            "preferences": prefs,
            "reasons": reasons,
            "own_reasons": own,
            "confidence": conf,
            "time_spent": time_spent,
        },
    )


def parse_multipref(row: dict[str, Any], *, from_csv: bool = False) -> ItemRecord:
    if from_csv:
        row = _json_cells(row, ("normal_worker_annotations", "expert_worker_annotations"))
    try:
        parsed = MultiPrefRow.model_validate(row)
    except ValidationError as exc:
        raise RowProblems(_pydantic_problems(exc)) from None
    human = [
        _multipref_annotation(a, "normal", f"normal_worker_annotations.{i}")
        for i, a in enumerate(parsed.normal_worker_annotations)
    ] + [
        _multipref_annotation(a, "expert", f"expert_worker_annotations.{i}")
        for i, a in enumerate(parsed.expert_worker_annotations)
    ]
    extra = parsed.model_extra or {}
    metadata = {k: extra[k] for k in MULTIPREF_METADATA if k in extra}
    return ItemRecord(
        external_id=str(parsed.comparison_id),
        prompt=parsed.text,
        responses=[
            ResponseRecord(text=parsed.completion_a, model=parsed.model_a),
            ResponseRecord(text=parsed.completion_b, model=parsed.model_b),
        ],
        metadata=metadata,
        human=human,
    )


# --- HelpSteer2-Preference ------------------------------------------------------------------


class HelpSteer2Row(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    response_1: str
    response_2: str
    preference_strength: int = Field(ge=-3, le=3)
    preference_statement: str = ""
    preference_elaboration: str = ""
    split: str = ""


def strength_label(scale: str, strength: int) -> str | int:
    """A -3..+3 strength on the project's scale (likert5 folds -3/-2 and 2/3 into 'clearly')."""
    if scale == sch.STRENGTH7:
        return strength
    if strength == 0:
        return "Tie"
    side = "A" if strength < 0 else "B"
    return f"{side}-is-{'slightly' if abs(strength) == 1 else 'clearly'}-better"


def parse_helpsteer2(row: dict[str, Any], *, scale: str, from_csv: bool = False) -> ItemRecord:
    # Every HelpSteer2 column is text or a number: CSV cells need no JSON decoding.
    try:
        parsed = HelpSteer2Row.model_validate(row)
    except ValidationError as exc:
        raise RowProblems(_pydantic_problems(exc)) from None
    extra = parsed.model_extra or {}
    external_id = extra.get("id")
    if external_id in (None, ""):
        # The public files carry no id: the content identifies the comparison.
        digest = hashlib.sha256(json.dumps([parsed.prompt, parsed.response_1, parsed.response_2]).encode()).hexdigest()
        external_id = f"hs2-{digest[:16]}"
    return ItemRecord(
        external_id=str(external_id),
        prompt=parsed.prompt,
        responses=[ResponseRecord(text=parsed.response_1), ResponseRecord(text=parsed.response_2)],
        metadata={"split": parsed.split} if parsed.split else {},
        human=[
            HumanRecord(
                annotator="helpsteer2",
                tier="normal",
                annotation={
                    "preferences": {"overall": strength_label(scale, parsed.preference_strength)},
                    "own_reasons": {"overall": parsed.preference_statement} if parsed.preference_statement else {},
                    "justification": parsed.preference_elaboration,
                },
            )
        ],
    )


# --- PandaLM ----------------------------------------------------------------------------------

PANDALM_LABELS = {"response1": -2, "response2": 2, "tie": 0}


def pandalm_label(scale: str, verdict: str) -> str | int:
    """PandaLM says which response is better, without a strength: 'clearly' / +-2."""
    strength = PANDALM_LABELS[verdict]
    if scale == sch.STRENGTH7:
        return strength
    return "Tie" if strength == 0 else ("A-is-clearly-better" if strength < 0 else "B-is-clearly-better")


class PandaLMRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    input: str = ""
    # The source JSON holds a few answers as JSON true (the model wrote "True"): read them as text.
    response1: str | bool | int | float
    response2: str | bool | int | float
    model_response1: str = ""
    model_response2: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    human_labels: list[Literal["response1", "response2", "tie"]]
    human_majority: str = ""
    llm_labels: dict[str, str] = Field(default_factory=dict)
    llm_reasons: dict[str, str] = Field(default_factory=dict)


def parse_pandalm(row: dict[str, Any], *, scale: str, from_csv: bool = False) -> ItemRecord:
    if from_csv:
        row = _json_cells(row, ("metadata", "human_labels", "llm_labels", "llm_reasons"))
    try:
        parsed = PandaLMRow.model_validate(row)
    except ValidationError as exc:
        raise RowProblems(_pydantic_problems(exc)) from None
    prompt = parsed.instruction + (f"\n\n{parsed.input}" if parsed.input.strip() else "")
    llm = []
    for judge, verdict in parsed.llm_labels.items():
        reason = parsed.llm_reasons.get(judge, "")
        if verdict in PANDALM_LABELS:
            llm.append(LLMRecord(judge=judge, labels={"overall": pandalm_label(scale, verdict)}, rationale=reason))
        else:  # e.g. "unparsed:garbage": kept on record as a failed judgment
            llm.append(LLMRecord(judge=judge, labels={}, rationale=reason, raw_output=verdict, failed=True))
    metadata = dict(parsed.metadata)
    if parsed.human_majority:
        metadata["human_majority"] = parsed.human_majority
    source = (parsed.model_extra or {}).get("source")
    if source:
        metadata["source"] = source
    return ItemRecord(
        external_id=parsed.id,
        prompt=prompt,
        responses=[
            ResponseRecord(text=str(parsed.response1), model=parsed.model_response1),
            ResponseRecord(text=str(parsed.response2), model=parsed.model_response2),
        ],
        metadata=metadata,
        human=[
            HumanRecord(
                annotator=f"pandalm-annotator{k + 1}",
                tier="normal",
                annotation={"preferences": {"overall": pandalm_label(scale, label)}},
            )
            for k, label in enumerate(parsed.human_labels)
        ],
        llm=llm,
    )


# --- dispatch and scheme checks ---------------------------------------------------------------

FORMATS = ("native", "multipref", "helpsteer2-preference", "pandalm")


def parser_for(fmt: str, *, scale: str, file_type: str) -> Callable[[dict[str, Any]], ItemRecord]:
    from_csv = file_type == "csv"
    if fmt == "native":
        return lambda row: parse_native(row, from_csv=from_csv)
    if fmt == "multipref":
        return lambda row: parse_multipref(row, from_csv=from_csv)
    if fmt == "helpsteer2-preference":
        return lambda row: parse_helpsteer2(row, scale=scale, from_csv=from_csv)
    if fmt == "pandalm":
        return lambda row: parse_pandalm(row, scale=scale, from_csv=from_csv)
    raise ValueError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")


# Lengths of the database columns these values go to (webapp.models): checked here, so that a longer
# value is a row's error instead of a failed INSERT.
COLUMN_LENGTHS = {"id": 255, "model": 200, "annotator": 255, "timestamp": 64, "judge": 200}


NUL_PROBLEM = "contains a NUL character (\\u0000), which cannot be stored"
SURROGATE_PROBLEM = "contains an unpaired surrogate (a broken \\ud800-\\udfff escape), which is not text"


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unstorable(value: Any) -> str | None:
    """Why PostgreSQL would refuse a value, if it would: text and jsonb hold no NUL, jsonb no NaN or Infinity."""
    if isinstance(value, str):
        if "\x00" in value:
            return NUL_PROBLEM
        if _has_surrogate(value):
            return SURROGATE_PROBLEM
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a number JSON can hold"
    if isinstance(value, dict):
        return next((why for v in (*value, *value.values()) if (why := _unstorable(v))), None)
    if isinstance(value, list | tuple):
        return next((why for v in value if (why := _unstorable(v))), None)
    return None


def check_record(record: ItemRecord, scheme: sch.Scheme, *, max_chars: int) -> list[Problem]:
    """Everything about a parsed item that depends on the project: counts, labels, sizes."""
    problems: list[Problem] = []
    n = len(record.responses)
    if scheme.kind == sch.PAIRWISE and n != 2:
        problems.append(("responses", f"a pairwise project needs exactly 2 responses, got {n}"))
    elif scheme.kind == sch.RANKING and n < 2:
        problems.append(("responses", f"a ranking project needs at least 2 responses, got {n}"))
    if len(record.external_id) > COLUMN_LENGTHS["id"]:
        problems.append(("id", f"longer than {COLUMN_LENGTHS['id']} characters"))

    def fits(field_name: str, text: str, column: str) -> None:
        if len(text) > COLUMN_LENGTHS[column]:
            problems.append((field_name, f"longer than {COLUMN_LENGTHS[column]} characters"))

    def storable(field_name: str, value: Any) -> None:
        if why := _unstorable(value):
            problems.append((field_name, why))

    def size(field_name: str, text: str) -> None:
        if len(text) > max_chars:
            problems.append((field_name, f"{len(text):,} characters, over the limit of {max_chars:,}"))
        storable(field_name, text)

    storable("id", record.external_id)
    for field_name, text in record.long_texts():
        if len(text) > max_chars:
            problems.append((field_name, f"{len(text):,} characters, over the limit of {max_chars:,}"))
        if "\x00" in text:
            problems.append((field_name, NUL_PROBLEM))
    try:
        record.texts_utf8()  # kept for the hash
    except UnicodeEncodeError:  # which of them
        problems.extend((f, SURROGATE_PROBLEM) for f, text in record.long_texts() if _has_surrogate(text))
    for i, resp in enumerate(record.responses):
        storable(f"responses.{i}.model", resp.model)
        fits(f"responses.{i}.model", resp.model, "model")
    if len(record.metadata_json()) > max_chars:
        problems.append(("metadata", f"over the limit of {max_chars:,} characters"))
    storable("metadata", record.metadata)

    seen: set[str] = set()
    for i, human in enumerate(record.human):
        where = human.where or f"human_annotations.{i}"
        if human.annotator in seen:
            name = human.source_field("annotator")
            problems.append((f"{where}.{name}", f"{human.annotator!r} appears twice for this item"))
        seen.add(human.annotator)
        if human.tier not in sch.TIERS:
            problems.append((f"{where}.tier", f"{human.tier!r} is not one of {', '.join(sch.TIERS)}"))
        try:
            sch.validate_annotation(scheme, human.annotation, n_responses=n, complete=False)
        except sch.SchemeError as exc:
            problems.extend((f"{where}.{human.source_field(f)}" if f else where, m) for f, m in exc.problems)
        size(f"{where}.justification", str(human.annotation.get("justification") or ""))
        storable(f"{where}.{human.source_field('annotator')}", human.annotator)
        fits(f"{where}.{human.source_field('annotator')}", human.annotator, "annotator")
        storable(f"{where}.timestamp", human.timestamp)
        fits(f"{where}.timestamp", human.timestamp, "timestamp")
        for key, value in human.annotation.items():
            if key != "justification":  # size() checked it
                for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
                    storable(f"{where}.{human.source_field(key if sub is None else f'{key}.{sub}')}", v)
    judges: set[str] = set()
    for i, judged in enumerate(record.llm):
        where = f"llm_annotations.{i}"
        if judged.judge in judges:
            problems.append((f"{where}.judge", f"{judged.judge!r} appears twice for this item"))
        judges.add(judged.judge)
        if judged.failed:
            continue
        try:
            sch.validate_annotation(
                scheme, {"preferences": judged.labels, "ranking": judged.ranking}, n_responses=n, complete=False
            )
        except sch.SchemeError as exc:
            problems.extend((f"{where}.{f.replace('preferences', 'labels')}", m) for f, m in exc.problems)
        size(f"{where}.rationale", judged.rationale)
        storable(f"{where}.judge", judged.judge)
        fits(f"{where}.judge", judged.judge, "judge")
        storable(f"{where}.labels", judged.labels)
        storable(f"{where}.raw_output", judged.raw_output)
    return problems
