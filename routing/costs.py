"""What a routing budget costs: human annotations for the human-routed items, AI verdicts for the rest.

Pure code: no Django, no database. Money is a float in the project's currency (display only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetCost:
    """human: human-routed items x annotations per item x cost per annotation. ai: AI-routed items x the
    judge's mean cost per item, None when the judge has no recorded cost. total: their sum (AI unknown: 0)."""

    human_items: int
    ai_items: int
    human: float
    ai: float | None
    total: float


def budget_cost(
    *,
    n_items: int,
    budget_n: int,
    annotations_per_item: int,
    cost_per_annotation: float,
    ai_cost_per_item: float | None,
) -> BudgetCost:
    """The cost of sending ``budget_n`` of ``n_items`` items to humans and the rest to the AI."""
    if n_items < 0 or not 0 <= budget_n <= n_items:
        raise ValueError(f"need 0 <= budget_n <= n_items; got budget_n={budget_n}, n_items={n_items}")
    if annotations_per_item < 0 or cost_per_annotation < 0 or (ai_cost_per_item is not None and ai_cost_per_item < 0):
        raise ValueError("costs and annotations per item cannot be negative")
    human = float(budget_n * annotations_per_item * cost_per_annotation)
    ai_items = n_items - budget_n
    ai = None if ai_cost_per_item is None else float(ai_items * ai_cost_per_item)
    return BudgetCost(budget_n, ai_items, human, ai, human + (ai or 0.0))
