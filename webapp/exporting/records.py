"""What the export layer reads: plain, frozen records of one item and its labels.

The export service builds these from the database; tests build them by hand. All labels are in
canonical response order (index 0 is "A") and on the project's scale, as stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webapp.scheme import Label

# A ranking: response indices best first; a nested list is a group of tied responses.
Ranking = list[int | list[int]]


@dataclass(frozen=True, slots=True)
class ExportResponse:
    position: int  # canonical index: 0 is A
    text: str
    model: str = ""


@dataclass(frozen=True, slots=True)
class HumanLabel:
    """One person's annotation of one item (webapp.models.HumanAnnotation)."""

    annotator: str
    tier: str  # "normal" | "expert"
    preferences: dict[str, Label] = field(default_factory=dict)
    ranking: Ranking | None = None
    ratings: dict[int, dict[str, int]] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    own_reasons: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, str] = field(default_factory=dict)
    justification: str = ""
    time_spent: float | None = None
    timestamp: str = ""  # ISO 8601
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AILabel:
    """One judge's combined verdict on one item (a Judgment with order "combined")."""

    judge: str
    prompt_version: str
    labels: dict[str, Label] = field(default_factory=dict)
    ranking: Ranking | None = None
    rationale: str = ""
    order_inconsistent: bool | None = None


@dataclass(frozen=True, slots=True)
class ExportItem:
    """An item with everything an export may need.

    `humans` and `ais` are in the caller's order, and that order matters: majority ties are broken
    by first occurrence (see aggregate.human_consensus), and without a named judge the first AI
    label wins (see aggregate.hybrid_label). The export service should pass humans in creation
    order and AI labels newest prompt version first.
    """

    item_id: int
    external_id: str
    prompt: str
    conversation: list[dict[str, str]] | None  # turns the responses continue, or None
    responses: tuple[ExportResponse, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    route: str = "unrouted"  # "human" | "ai" | "unrouted"
    humans: tuple[HumanLabel, ...] = ()
    ais: tuple[AILabel, ...] = ()
