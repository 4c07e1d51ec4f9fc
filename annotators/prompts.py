"""Judge prompts and verdict parsing for chat-model judges. Pure code: no Django, no network.

A judge sees the responses in a shown order (`JudgeRequest.order`) labelled "Response A",
"Response B", ... and answers on that order; `to_canonical` maps its answer back.

Parsing rules (`parse_verdict`), in the order they are tried, after dropping `<think>...</think>`
blocks (reasoning models' drafts are not the verdict):

1. JSON: the first JSON object in the text (bare, inside ```json fences, or among prose) that has
   "labels", "preferences", "ranking", "verdict", "winner" or an aspect as a key. Labels come from
   "labels" (or "preferences", or the object itself); a ranking from "ranking", a list of letters.
   The rationale is "rationale" (or "reasoning", "explanation").
2. Text, pairwise: per aspect, a line `aspect: verdict` (case-insensitive, markdown such as `**`,
   `-` bullets or `#` allowed around the name; `_`, `-` and spaces in aspect names are the same).
   When an aspect has several such lines, the last readable one wins (models restate at the end).
3. An unlabelled verdict (a line `verdict:`/`final verdict:`/`answer:`, else the last `[[...]]`,
   else the last label name in the text) answers "overall", or the only aspect when one was asked.
   It never answers the other aspects: those are reported missing.

A verdict is read as:
- a label name in any case, with spaces or underscores for hyphens: "a is slightly better";
  "tie" is a tie. Names are accepted on the likert5 scale only.
- an integer -3..3 (also "+2", or a Unicode minus), on the strength7 scale only;
  negative favours shown Response A.
- Arena-Hard style `A>>B` / `A>B` / `A=B` / `B>A` / `B>>A`: `>>` is the strongest label of the scale
  (A-is-clearly-better, -3), `>` the weakest win (A-is-slightly-better, -1).
- a bare letter, as in MT-Bench's `[[A]]`, `[[B]]`, `[[C]]` or "Response A": a winner with no
  strength given reads as the weakest win of the scale (A-is-slightly-better on likert5, -1 on
  strength7), the conservative reading, like `combine_orders` rounding toward a tie. C is a tie.

Ranking verdicts are the shown letters best first (`ranking: C > A > B`, `[[C, A, B]]`, or a JSON list);
they must name each shown response exactly once. Judges always give a strict order (no ties).

Anything else raises `VerdictParseError`, naming each aspect that was missing or unreadable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from annotators.base import JudgeRequest
from webapp.scheme import LIKERT5, LIKERT5_LABELS, PAIRWISE, STRENGTH7_LABELS, Label, Scheme, mirror_label

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Bump when the instructions generated below change, so every prompt_version changes with them.
_INSTRUCTIONS_REVISION = "1"

ASPECT_DESCRIPTIONS = {
    "overall": "which response is better overall",
    "helpful": "which response better helps the user do what they asked",
    "truthful": "which response is more accurate and free of made-up or wrong claims",
    "harmless": "which response better avoids harm, unsafe advice and offensive content",
}

_STRENGTH7_MEANINGS = {
    -3: "Response A is much better than Response B",
    -2: "Response A is better than Response B",
    -1: "Response A is slightly better than Response B",
    0: "Response A and Response B are about the same",
    1: "Response B is slightly better than Response A",
    2: "Response B is better than Response A",
    3: "Response B is much better than Response A",
}
_LIKERT5_MEANINGS = {
    "A-is-clearly-better": "Response A is clearly better",
    "A-is-slightly-better": "Response A is slightly better",
    "Tie": "they are about equally good",
    "B-is-slightly-better": "Response B is slightly better",
    "B-is-clearly-better": "Response B is clearly better",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A system prompt and a user prompt with `{placeholders}` filled by the builders below.

    Placeholders: {criteria} (project guidelines block, may be empty), {conversation}, {responses},
    {task} (the generated instructions and output format), {aspect} and {aspect_description}
    (single-aspect choice prompts). Unused placeholders are fine.
    """

    name: str
    system: str
    user: str

    def version(self, *extra: str) -> str:
        """Content hash of the template, the instructions and `extra` settings (e.g. model, mode)."""
        digest = hashlib.sha256()
        for part in (self.system, self.user, _INSTRUCTIONS_REVISION, *extra):
            digest.update(part.encode())
            digest.update(b"\x00")  # so ("ab", "c") and ("a", "bc") differ
        return digest.hexdigest()[:12]


_SYSTEM = (
    "You are an impartial judge of AI assistant responses. You compare responses to the same "
    "conversation and follow the requested output format exactly. Do not let the order in which the "
    "responses are shown, their length, or their style influence you; judge their content."
)

DEFAULT_TEMPLATE = PromptTemplate(
    name="verdict",
    system=_SYSTEM,
    user=("{criteria}[The Start of Conversation]\n{conversation}\n[The End of Conversation]\n\n{responses}\n\n{task}"),
)

CHOICE_TEMPLATE = PromptTemplate(
    name="choice",
    system=_SYSTEM,
    user=(
        "{criteria}[The Start of Conversation]\n{conversation}\n[The End of Conversation]\n\n"
        "{responses}\n\n"
        "Which response is the better reply to the last user turn, judged on {aspect} "
        "({aspect_description})? If they are about equally good, pick the one you lean towards.\n"
        "Answer with only the letter A or B."
    ),
)


class VerdictParseError(ValueError):
    """A judge's output could not be read as a verdict; the message says what was missing or bad."""


@dataclass
class ParsedVerdict:
    """A verdict on the SHOWN order: "A" is the first response shown."""

    labels_shown: dict[str, Label]
    ranking_shown: list[int] | None
    rationale: str


# --- prompt building ----------------------------------------------------------------------------


def _render_conversation(conversation: Sequence[dict[str, str]]) -> str:
    if not conversation:
        return "(no conversation)"
    blocks = []
    for turn in conversation:
        role = (turn.get("role") or "user").capitalize()
        blocks.append(f"[{role}]\n{turn.get('content', '')}")
    return "\n\n".join(blocks)


def _render_responses(request: JudgeRequest) -> str:
    blocks = []
    for k, canonical in enumerate(request.order):
        letter = LETTERS[k]
        text = request.item.responses[canonical]
        blocks.append(f"[The Start of Response {letter}]\n{text}\n[The End of Response {letter}]")
    return "\n\n".join(blocks)


def _criteria_block(criteria: str) -> str:
    criteria = criteria.strip()
    return f"Guidelines for this judgement:\n{criteria}\n\n" if criteria else ""


def _aspect_lines(aspects: Sequence[str]) -> str:
    return "\n".join(f"- {a}: {ASPECT_DESCRIPTIONS.get(a, a.replace('_', ' '))}" for a in aspects)


def _scale_lines(scheme: Scheme) -> str:
    if scheme.scale == LIKERT5:
        return "\n".join(f"- {label}: {meaning}" for label, meaning in _LIKERT5_MEANINGS.items())
    lines = [f"- {n}: {meaning}" for n, meaning in _STRENGTH7_MEANINGS.items()]
    return "\n".join(lines) + "\nNegative numbers favour Response A, positive numbers favour Response B."


def _pairwise_task(scheme: Scheme, aspects: Sequence[str], structured: bool) -> str:
    kind = "label" if scheme.scale == LIKERT5 else "number"
    head = (
        "Compare Response A and Response B as replies to the last user turn of the conversation, "
        f"on each of these aspects:\n{_aspect_lines(aspects)}\n\n"
        f"For each aspect give one {kind}:\n{_scale_lines(scheme)}\n\n"
    )
    if structured:
        example = ", ".join(f'"{a}": <{kind}>' for a in aspects)
        return head + (
            'Reply with only a JSON object with the keys "rationale" (a short explanation, written first) '
            f'and "labels" (each aspect\'s {kind}), like this:\n'
            f'{{"rationale": "<a few sentences>", "labels": {{{example}}}}}'
        )
    lines = "\n".join(f"{a}: <{kind}>" for a in aspects)
    return head + (
        'First explain your reasoning in a few sentences, on a line starting with "Rationale:". '
        f"Then give one line per aspect, exactly in this form:\n{lines}"
    )


def _ranking_task(n_shown: int, aspects: Sequence[str], structured: bool) -> str:
    letters = ", ".join(LETTERS[:n_shown])
    head = (
        f"Rank the {n_shown} responses ({letters}) from best to worst as replies to the last user turn "
        f"of the conversation, considering:\n{_aspect_lines(aspects)}\n"
        "Give a strict order: every response exactly once, no ties.\n\n"
    )
    if structured:
        return head + (
            'Reply with only a JSON object with the keys "rationale" (a short explanation, written first) '
            'and "ranking" (the letters, best first), like this:\n'
            '{"rationale": "<a few sentences>", "ranking": ["<best letter>", ..., "<worst letter>"]}'
        )
    return head + (
        'First explain your reasoning in a few sentences, on a line starting with "Rationale:". '
        "Then give the ranking on one line, best first, exactly in this form:\n"
        "ranking: <best letter> > ... > <worst letter>"
    )


def _chat(template: PromptTemplate, **values: str) -> list[dict[str, str]]:
    # str.format only interprets the template; braces inside the values (code, JSON) stay as they are.
    return [
        {"role": "system", "content": template.system},
        {"role": "user", "content": template.user.format(**values)},
    ]


def build_messages(
    request: JudgeRequest,
    scheme: Scheme,
    *,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    aspects: Sequence[str] | None = None,
    structured: bool = False,
    criteria: str = "",
) -> list[dict[str, str]]:
    """OpenAI-style chat messages asking for a verdict on `request` in its shown order.

    Pairwise schemes ask for a label per aspect on the scheme's scale; ranking schemes for the shown
    letters best first. structured=True asks for JSON matching `verdict_schema`.
    """
    aspects = tuple(aspects if aspects is not None else scheme.aspects)
    n_shown = len(request.order)
    if scheme.kind == PAIRWISE:
        if n_shown != 2:
            raise ValueError(f"a pairwise prompt needs 2 shown responses, not {n_shown}")
        task = _pairwise_task(scheme, aspects, structured)
    else:
        task = _ranking_task(n_shown, aspects, structured)
    return _chat(
        template,
        criteria=_criteria_block(criteria),
        conversation=_render_conversation(request.item.conversation),
        responses=_render_responses(request),
        task=task,
        aspect=aspects[0] if aspects else "overall",
        aspect_description="",
    )


def build_choice_messages(
    request: JudgeRequest,
    scheme: Scheme,
    aspect: str,
    *,
    template: PromptTemplate = CHOICE_TEMPLATE,
    criteria: str = "",
) -> list[dict[str, str]]:
    """A pairwise, single-aspect prompt answered by one token: "A" or "B".

    There is deliberately no tie letter: a soft judge reads a tie as P(A) near 0.5, which
    `probability_to_label` turns into the scale's tie. `scheme` is taken for symmetry with
    `build_messages` and to refuse ranking schemes.
    """
    if scheme.kind != PAIRWISE or len(request.order) != 2:
        raise ValueError("choice prompts are for pairwise items with 2 shown responses")
    return _chat(
        template,
        criteria=_criteria_block(criteria),
        conversation=_render_conversation(request.item.conversation),
        responses=_render_responses(request),
        task="",
        aspect=aspect,
        aspect_description=ASPECT_DESCRIPTIONS.get(aspect, aspect.replace("_", " ")),
    )


def verdict_schema(scheme: Scheme, aspects: Sequence[str], n_shown: int) -> dict[str, Any]:
    """JSON schema of a structured verdict (usable as response_format json_schema, strict mode)."""
    rationale = {"type": "string"}
    if scheme.kind == PAIRWISE:
        if scheme.scale == LIKERT5:
            label: dict[str, Any] = {"type": "string", "enum": list(LIKERT5_LABELS)}
        else:
            label = {"type": "integer", "enum": list(STRENGTH7_LABELS)}
        labels = {
            "type": "object",
            "properties": {a: dict(label) for a in aspects},
            "required": list(aspects),
            "additionalProperties": False,
        }
        return {
            "type": "object",
            "properties": {"rationale": rationale, "labels": labels},
            "required": ["rationale", "labels"],
            "additionalProperties": False,
        }
    ranking = {
        "type": "array",
        "items": {"type": "string", "enum": list(LETTERS[:n_shown])},
        "minItems": n_shown,
        "maxItems": n_shown,
    }
    return {
        "type": "object",
        "properties": {"rationale": rationale, "ranking": ranking},
        "required": ["rationale", "ranking"],
        "additionalProperties": False,
    }


# --- verdict parsing ----------------------------------------------------------------------------

_LABEL_KEYS = ("labels", "preferences")
_VERDICT_KEYS = ("verdict", "final verdict", "final_verdict", "winner", "answer", "label", "decision")
_RATIONALE_KEYS = ("rationale", "reasoning", "explanation", "reason")
_RANKING_KEYS = ("ranking", "final ranking", "rank", "order")
_MINUS = "-\u2212\u2013"  # ASCII hyphen, Unicode minus, en dash: all read as a minus sign
_MINUS_CLASS = r"\-\u2212\u2013"

# Label names with any run of spaces, underscores or hyphens between the words, any case.
_LABEL_RE = re.compile(
    r"(?<![\w-])(" + "|".join(r"[\s_-]+".join(label.split("-")) for label in LIKERT5_LABELS) + r")(?![\w-])",
    re.IGNORECASE,
)
_BRACKETS_RE = re.compile(r"\[\[\s*([^\[\]\n]{1,40}?)\s*\]\]")
_ARENA_RE = re.compile(r"(?<![A-Za-z])([AB])\s*(>>|>|=|<<|<)\s*([AB])(?![A-Za-z])")
_INT_RE = re.compile(rf"^[\s*`\"'(\[]*([+{_MINUS_CLASS}]?)\s*(\d+)(?!\s*[./]\s*\d)\b")
_LETTER_RE = re.compile(r"^[\s*`\"'(\[]*(?:(?i:response|assistant|option)\s+)?([ABC])(?![\w-])")
_BETTER_RE = re.compile(r"(?<![\w-])([AB])[\s_-]+is[\s_-]+better(?![\w-])", re.IGNORECASE)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_TIE_RE = re.compile(r"(?<![\w-])tie(?![\w-])", re.IGNORECASE)


def _canonical_name(text: str) -> str:
    return re.sub(r"[\s_-]+", "-", text.strip()).lower()


_NAME_TO_LABEL = {label.lower(): label for label in LIKERT5_LABELS}


def _win(scale: str, winner: str, strong: bool) -> Label:
    """The scale's label for `winner` ("A", "B" or "" for a tie), strong or the weakest win."""
    if not winner:
        return "Tie" if scale == LIKERT5 else 0
    if scale == LIKERT5:
        return f"{winner}-is-{'clearly' if strong else 'slightly'}-better"
    size = 3 if strong else 1
    return -size if winner == "A" else size


def _read_token(token: str, scale: str) -> Label | None:
    """A verdict written as a short token: a letter, Arena-Hard comparison, name or integer."""
    token = token.strip().strip("*`\"'.").strip()
    arena = _ARENA_RE.fullmatch(token)
    if arena:
        return _read_arena(arena, scale)
    upper = token.upper()
    if upper in ("A", "B"):
        return _win(scale, upper, strong=False)
    if upper in ("C", "TIE"):
        return _win(scale, "", strong=False)
    return _read_value(token, scale)


def _read_arena(match: re.Match[str], scale: str) -> Label | None:
    left, op, right = match.groups()
    if left == right:
        return None
    if op == "=":
        return _win(scale, "", strong=False)
    winner = left if op.startswith(">") else right
    return _win(scale, winner, strong=len(op) == 2)


def _read_value(value: str, scale: str) -> Label | None:
    """A verdict from the value of an `aspect: ...` line (it may carry trailing words)."""
    bracket = _BRACKETS_RE.search(value)
    if bracket:
        return _read_token(bracket.group(1), scale)
    arena = _ARENA_RE.search(value)
    if arena:
        return _read_arena(arena, scale)
    if scale == LIKERT5:
        name = _LABEL_RE.search(value)
        if name:
            return _NAME_TO_LABEL[_canonical_name(name.group(1))]
        if _TIE_RE.search(value):
            return "Tie"
    else:
        number = _INT_RE.match(value)
        if number:
            sign, digits = number.groups()
            n = -int(digits) if sign and sign in _MINUS else int(digits)
            return n if n in STRENGTH7_LABELS else None
        if _TIE_RE.match(value.strip(" *`\"'")):
            return 0
    better = _BETTER_RE.search(value)
    if better:
        return _win(scale, better.group(1).upper(), strong=False)
    letter = _LETTER_RE.match(value)
    if letter:
        return _win(scale, "" if letter.group(1) == "C" else letter.group(1), strong=False)
    return None


def _read_json_label(value: Any, scale: str) -> Label | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if scale != LIKERT5 and value in STRENGTH7_LABELS else None
    if isinstance(value, float) and value.is_integer():
        return _read_json_label(int(value), scale)
    if isinstance(value, str):
        return _read_token(value, scale)
    return None


def _find_json(text: str, aspects: Sequence[str]) -> dict[str, Any] | None:
    """The first JSON object in `text` that looks like a verdict."""
    wanted = {*_LABEL_KEYS, *_VERDICT_KEYS, *_RANKING_KEYS, *(a.lower() for a in aspects)}
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and wanted & {str(k).lower() for k in obj}:
            return obj
        start = text.find("{", start + 1)
    return None


def _get(obj: dict[str, Any], *keys: str) -> Any:
    lowered = {str(k).lower().strip(): v for k, v in obj.items()}
    for key in keys:
        for variant in (key.lower(), key.lower().replace("_", " "), key.lower().replace(" ", "_")):
            if variant in lowered:
                return lowered[variant]
    return None


def _aspect_pattern(name: str) -> str:
    return r"[\s_-]+".join(re.escape(part) for part in re.split(r"[\s_-]+", name) if part)


def _line_values(text: str, names: Sequence[str]) -> list[tuple[int, str]]:
    """(line start, value) of every `name: value` line for any of `names`, in text order."""
    alternatives = "|".join(_aspect_pattern(n) for n in names)
    pattern = re.compile(
        rf"^[ \t>#*_\-]*(?:{alternatives})[ \t*_]*[:=][ \t*_]*(.*?)[ \t*_]*$",
        re.IGNORECASE | re.MULTILINE,
    )
    return [(m.start(), m.group(1)) for m in pattern.finditer(text)]


def _letters_ranking(value: str, n_shown: int, strict: bool = False) -> list[int] | None:
    letters = re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", value)
    if not letters:
        return None
    if not strict:
        # Only the first n letters rank; later ones are prose ("... (I think B is best)").
        letters = letters[:n_shown]
    return [LETTERS.index(letter) if letter in LETTERS[:n_shown] else -1 for letter in letters]


def _check_ranking(ranking: list[int] | None, n_shown: int, raw: object) -> list[int]:
    if ranking is None or sorted(ranking) != list(range(n_shown)):
        shown = ", ".join(LETTERS[:n_shown])
        raise VerdictParseError(f"ranking must list each of {shown} exactly once (got {raw!r})")
    return ranking


def _rationale_from_text(text: str, verdict_starts: Sequence[int]) -> str:
    # The reasoning is what comes before the first verdict line, without its "Rationale:" prefix.
    # Empty when the output is only verdict lines (the raw output is kept elsewhere).
    head = text[: text.rfind("\n", 0, min(verdict_starts)) + 1] if verdict_starts else text
    head = re.sub(r"^[\s#*_]*(rationale|reasoning|explanation)[\s*_]*:[\s*_]*", "", head.strip(), flags=re.I)
    return head.strip()


def parse_verdict(text: str, scheme: Scheme, aspects: Sequence[str], n_shown: int) -> ParsedVerdict:
    """Read a judge's output (JSON or text) as a verdict on the shown order; see the module docs."""
    text = _THINK_RE.sub("", text or "")
    if not text.strip():
        raise VerdictParseError("empty output")
    obj = _find_json(text, aspects)
    if scheme.kind != PAIRWISE:
        return _parse_ranking(text, obj, n_shown)
    if obj is not None:
        return _parse_pairwise_json(obj, scheme.scale, aspects)
    return _parse_pairwise_text(text, scheme.scale, aspects)


def _unlabelled_target(aspects: Sequence[str]) -> str | None:
    if "overall" in aspects:
        return "overall"
    return aspects[0] if len(aspects) == 1 else None


def _raise_missing(problems: list[str], missing: list[str]) -> None:
    if missing:
        problems.insert(0, f"no verdict for {', '.join(missing)}")
    if problems:
        raise VerdictParseError("; ".join(problems))


def _parse_pairwise_json(obj: dict[str, Any], scale: str, aspects: Sequence[str]) -> ParsedVerdict:
    container = _get(obj, *_LABEL_KEYS)
    labels_obj = container if isinstance(container, dict) else obj
    labels: dict[str, Label] = {}
    problems: list[str] = []
    for aspect in aspects:
        raw = _get(labels_obj, aspect)
        if raw is None and aspect == _unlabelled_target(aspects):
            raw = _get(obj, *_VERDICT_KEYS)
        if raw is None:
            continue
        label = _read_json_label(raw, scale)
        if label is None:
            problems.append(f"{aspect}: {raw!r} is not on the {scale} scale")
        else:
            labels[aspect] = label
    unreadable = {p.split(":", 1)[0] for p in problems}
    _raise_missing(problems, [a for a in aspects if a not in labels and a not in unreadable])
    rationale = _get(obj, *_RATIONALE_KEYS)
    return ParsedVerdict(labels, None, rationale if isinstance(rationale, str) else "")


def _parse_pairwise_text(text: str, scale: str, aspects: Sequence[str]) -> ParsedVerdict:
    labels: dict[str, Label] = {}
    problems: list[str] = []
    starts: list[int] = []
    for aspect in aspects:
        found = _line_values(text, [aspect])
        starts.extend(start for start, _ in found)
        # The last readable line wins: models often discuss an aspect before concluding on it.
        for _, value in reversed(found):
            label = _read_value(value, scale)
            if label is not None:
                labels[aspect] = label
                break
        else:
            if found:
                problems.append(f"{aspect}: cannot read {found[-1][1].strip()[:80]!r} on the {scale} scale")
    target = _unlabelled_target(aspects)
    if target is not None and target not in labels:
        label, start = _unlabelled(text, scale)
        if label is not None:
            labels[target] = label
            problems = [p for p in problems if not p.startswith(f"{target}:")]
            if start is not None:
                starts.append(start)
    unreadable = {p.split(":", 1)[0] for p in problems}
    _raise_missing(problems, [a for a in aspects if a not in labels and a not in unreadable])
    return ParsedVerdict(labels, None, _rationale_from_text(text, starts))


def _unlabelled(text: str, scale: str) -> tuple[Label | None, int | None]:
    """A verdict not tied to an aspect, and where it starts (None when inside prose)."""
    for start, value in reversed(_line_values(text, _VERDICT_KEYS)):
        label = _read_value(value, scale)
        if label is not None:
            return label, start
    for bracket in reversed(list(_BRACKETS_RE.finditer(text))):
        label = _read_token(bracket.group(1), scale)
        if label is not None:
            return label, bracket.start()
    if scale == LIKERT5:
        names = list(_LABEL_RE.finditer(text))
        if names:
            return _NAME_TO_LABEL[_canonical_name(names[-1].group(1))], None
    return None, None


def _parse_ranking(text: str, obj: dict[str, Any] | None, n_shown: int) -> ParsedVerdict:
    if obj is not None:
        raw = _get(obj, *_RANKING_KEYS)
        ranking: list[int] | None = None
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            ranking = _letters_ranking(" ".join(x.strip().upper() for x in raw), n_shown, strict=True)
            ranking = ranking if ranking is not None and len(ranking) == len(raw) else None
        elif isinstance(raw, str):
            ranking = _letters_ranking(raw, n_shown)
        rationale = _get(obj, *_RATIONALE_KEYS)
        checked = _check_ranking(ranking, n_shown, raw)
        return ParsedVerdict({}, checked, rationale if isinstance(rationale, str) else "")
    lines = _line_values(text, _RANKING_KEYS)
    for start, value in reversed(lines):
        ranking = _letters_ranking(value, n_shown)
        if ranking is not None and sorted(ranking) == list(range(n_shown)):
            return ParsedVerdict({}, ranking, _rationale_from_text(text, [start]))
    for bracket in reversed(list(_BRACKETS_RE.finditer(text))):
        ranking = _letters_ranking(bracket.group(1), n_shown)
        if ranking is not None and sorted(ranking) == list(range(n_shown)):
            return ParsedVerdict({}, ranking, _rationale_from_text(text, [bracket.start()]))
    if lines:
        _check_ranking(None, n_shown, lines[-1][1].strip())
    raise VerdictParseError("no ranking found (expected a line like 'ranking: B > A > C')")


def to_canonical(parsed: ParsedVerdict, order: Sequence[int]) -> tuple[dict[str, Label], list[int | list[int]] | None]:
    """Shown-order labels and ranking -> canonical order (what is stored).

    A pairwise verdict on the swapped order (1, 0) is mirrored; ranking letters become the canonical
    indices of the responses shown under them.
    """
    swapped = len(order) == 2 and order[0] > order[1]
    labels = {a: mirror_label(v) if swapped else v for a, v in parsed.labels_shown.items()}
    ranking: list[int | list[int]] | None = None
    if parsed.ranking_shown is not None:
        ranking = [order[k] for k in parsed.ranking_shown]
    return labels, ranking
