"""The one interface every judge backend implements. Pure code: no Django, no database.

A backend judges a batch of `JudgeRequest`s (an item shown in one response order) and returns one
`JudgeOutcome` per request, in the same order. Outcomes carry labels already mapped back to the
canonical response order and the project's scale, so "A" always means the item's first response.
A failed request (API error, unparseable output) is an outcome with status "failed"; it never
carries labels and never counts as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from webapp.scheme import Label, Scheme

Status = Literal["done", "failed"]


@dataclass(frozen=True)
class JudgeItem:
    """An item as a judge sees it: the conversation and the responses in canonical order."""

    item_id: int
    # The turns before the responses, [{"role": "user"|"assistant"|"system", "content": str}, ...];
    # a single-prompt item is one user turn.
    conversation: tuple[dict[str, str], ...]
    responses: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """The last user turn (what the responses answer)."""
        for turn in reversed(self.conversation):
            if turn.get("role") == "user":
                return turn.get("content", "")
        return ""


@dataclass(frozen=True)
class JudgeRequest:
    item: JudgeItem
    # order[k] is the canonical index of the k-th response shown: (0, 1) as imported, (1, 0) swapped.
    order: tuple[int, ...]

    @property
    def order_key(self) -> str:
        """How the order is stored on a Judgment ("0-1", "1-0", "2-0-1")."""
        return "-".join(str(i) for i in self.order)


@dataclass
class JudgeOutcome:
    item_id: int
    order: tuple[int, ...]
    status: Status
    # Canonical order, project scale: {"overall": "A-is-slightly-better", ...} or {"overall": -2, ...}.
    labels: dict[str, Label] = field(default_factory=dict)
    # Ranking projects: best first, canonical indices; a nested list is a tie.
    ranking: list[int | list[int]] | None = None
    # Soft preference where the backend has one: P(canonical A is better) per aspect, or a reward
    # margin (canonical A minus B) for reward models and density ratios.
    soft: dict[str, float] = field(default_factory=dict)
    rationale: str = ""
    raw_output: str = ""
    error: str = ""
    # A failure worth trying again (429, 5xx, timeout), as opposed to a parse failure.
    retryable: bool = False
    # Seconds the server asked us to wait (Retry-After), if it said.
    retry_after: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None


class JudgeBackend(Protocol):
    """What `annotators.registry.build_backend` returns for a judge configuration."""

    # Content hash of the prompt template and the settings that change the verdict (12 hex chars).
    prompt_version: str

    def judge(self, requests: Sequence[JudgeRequest], scheme: Scheme) -> list[JudgeOutcome]:
        """Judge each request; one outcome per request, same order. Never raises for one bad item."""
        ...
