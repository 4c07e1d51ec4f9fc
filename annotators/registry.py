"""Judge configuration -> backend object. Pure code: the caller passes plain values, not models.

Backends that load local models do it lazily (on the first `judge` call) and keep them per process,
so building a backend to learn its prompt version or to validate a configuration is cheap.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from annotators.base import JudgeBackend
from annotators.labels import JURY_RULES, MAJORITY
from annotators.ratelimit import Limiter

OPENAI, GENERATIVE, REWARD_MODEL, DENSITY_RATIO, JURY = "openai", "transformers-judge", "reward-model", "cdr", "jury"
RUNNABLE_BACKENDS = (OPENAI, GENERATIVE, REWARD_MODEL, DENSITY_RATIO, JURY)


def build_backend(backend: str, model: str, config: dict[str, Any], *, limiter: Limiter | None = None) -> JudgeBackend:
    """A backend for one judge. Raises ValueError naming the bad setting."""
    config = dict(config)
    if backend == OPENAI:
        from annotators.openai_backend import from_config as openai_from_config

        return openai_from_config(model, config, limiter=limiter)
    if backend in (GENERATIVE, REWARD_MODEL, DENSITY_RATIO):
        from annotators import local

        factories: dict[str, type[local.LocalJudge]] = {
            GENERATIVE: local.GenerativeJudge,
            REWARD_MODEL: local.RewardModelJudge,
            DENSITY_RATIO: local.DensityRatioJudge,
        }
        return factories[backend].from_config(model, config)
    if backend == JURY:
        raise ValueError("a jury is not one backend: run its members (see webapp.services.judging)")
    raise ValueError(f"unknown backend {backend!r} (use {', '.join(RUNNABLE_BACKENDS)})")


def validate_jury_config(config: dict[str, Any]) -> str:
    """The jury's aggregation rule; ValueError for unknown keys or rules."""
    unknown = set(config) - {"rule"}
    if unknown:
        raise ValueError(f"unknown jury setting(s): {', '.join(sorted(unknown))} (a jury takes 'rule')")
    rule = str(config.get("rule", MAJORITY))
    if rule not in JURY_RULES:
        raise ValueError(f"rule: {rule!r} is not one of {', '.join(JURY_RULES)}")
    return rule


def jury_prompt_version(rule: str, members: list[tuple[str, str]]) -> str:
    """A jury's version: its rule and each member's (name, prompt version)."""
    blob = json.dumps([rule, sorted(members)], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
