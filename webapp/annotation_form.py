"""The annotation form's fields <-> an annotation payload (in the order shown). Pure code.

Field names: `pref-<aspect>`, `reasons-<aspect>` (repeated), `confidence`, `justification`,
`rating-<shown index>-<attribute>`, `ranking` (JSON, best first, nested lists for ties; written by
the page's script) or `rank-<shown index>` (1 = best; the no-script fallback), `flags` (repeated),
`active_seconds`. Validation stays in webapp.scheme.validate_annotation.
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from webapp import scheme as sch


class MultiValue(Protocol):
    def get(self, key: str, default: Any = ...) -> Any: ...

    def getlist(self, key: str) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...


def _label(scheme: sch.Scheme, raw: str) -> sch.Label | str:
    if scheme.scale == sch.STRENGTH7:
        try:
            return int(raw)
        except ValueError:
            return raw  # the validator names it
    return raw


def _ranking_from_ranks(data: MultiValue, n: int) -> list[int | list[int]] | None:
    ranks: dict[int, list[int]] = {}
    for k in range(n):
        raw = (data.get(f"rank-{k}") or "").strip()
        if not raw:
            return None
        try:
            ranks.setdefault(int(raw), []).append(k)
        except ValueError:
            return None
    return [group[0] if len(group) == 1 else group for _, group in sorted(ranks.items())]


def parse_form(scheme: sch.Scheme, data: MultiValue, n_responses: int) -> dict[str, Any]:
    """A payload dict for validate_annotation, from submitted form fields (shown order)."""
    payload: dict[str, Any] = {}
    if scheme.kind == sch.PAIRWISE:
        payload["preferences"] = {
            aspect: _label(scheme, data.get(f"pref-{aspect}"))
            for aspect in scheme.aspects
            if data.get(f"pref-{aspect}")
        }
    ranking_raw = (data.get("ranking") or "").strip()
    if ranking_raw:
        try:
            payload["ranking"] = json.loads(ranking_raw)
        except json.JSONDecodeError:
            payload["ranking"] = ranking_raw  # rejected by the validator with a field name
    elif scheme.kind == sch.RANKING:
        payload["ranking"] = _ranking_from_ranks(data, n_responses)
    payload["reasons"] = {a: data.getlist(f"reasons-{a}") for a in scheme.aspects if data.getlist(f"reasons-{a}")}
    confidence = (data.get("confidence") or "").strip()
    if confidence:
        payload["confidence"] = {scheme.aspects[0]: confidence}
    payload["justification"] = (data.get("justification") or "").strip()
    ratings: dict[int, dict[str, Any]] = {}
    for k in range(n_responses):
        for attr in scheme.rating_attributes:
            raw = (data.get(f"rating-{k}-{attr}") or "").strip()
            if raw:
                ratings.setdefault(k, {})[attr] = int(raw) if raw.lstrip("-").isdigit() else raw
    payload["ratings"] = ratings
    payload["flags"] = data.getlist("flags")
    try:
        seconds = float(data.get("active_seconds") or "")
        payload["time_spent"] = round(seconds, 1) if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        payload["time_spent"] = None
    return payload


def form_values(payload: sch.AnnotationPayload, scheme: sch.Scheme) -> dict[str, Any]:
    """Form field values that show a (shown-order) payload again, e.g. to edit it."""
    values: dict[str, Any] = {f"pref-{a}": str(v) for a, v in payload.preferences.items()}
    for aspect, checked in payload.reasons.items():
        values[f"reasons-{aspect}"] = checked
    if payload.confidence:
        values["confidence"] = next(iter(payload.confidence.values()))
    values["justification"] = payload.justification
    for k, attrs in payload.ratings.items():
        for attr, score in attrs.items():
            values[f"rating-{k}-{attr}"] = str(score)
    if payload.ranking is not None:
        values["ranking"] = json.dumps(payload.ranking)
    values["flags"] = payload.flags
    if payload.time_spent is not None:
        # The page's timer counts on from here, so an edit adds its time instead of replacing (or erasing) it.
        values["active_seconds"] = payload.time_spent
    return values
