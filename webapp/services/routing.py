"""Routing: item features, routing runs, candidates for the performance model, and replays.

The maths is in routing/ (pure); this module reads the database into arrays, calls it, and writes
the decisions back (Item.route and route_reason; a RoutingRun with its summary). Human-routed
items enter the annotation queue by their route (webapp.services.queue).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Case, CharField, Value, When
from django.utils import timezone

from annotators.labels import label_to_score, winner
from webapp.models import HumanAnnotation, Item, Judge, Judgment, Project, RoutingCandidate, RoutingRun
from webapp.scheme import PAIRWISE

FEATURE_BATCH = 256


class RoutingError(ValueError):
    """A routing request that cannot be carried out; the message says why."""


# --- features ---------------------------------------------------------------------------------------


def compute_features(
    project: Project, *, recompute: bool = False, progress: Callable[[int, int], None] | None = None
) -> int:
    """Compute and store the lexical scores of the project's pairwise items; returns how many were computed.

    Stored in Item.features["lexical"] (raw scores; the bins depend on the whole project and are
    made at routing time). Resumable: items that have scores are skipped unless recompute.
    """
    from routing.features import FeatureItem, lexical_scores

    if project.kind != PAIRWISE:
        raise RoutingError("routing features compare two responses; this is a ranking project")
    items = project.items.order_by("id")
    if not recompute:
        items = items.exclude(features__has_key="lexical")
    ids = list(items.values_list("id", flat=True))
    done = 0
    for start in range(0, len(ids), FEATURE_BATCH):
        batch = list(
            Item.objects.filter(id__in=ids[start : start + FEATURE_BATCH]).prefetch_related("responses").order_by("id")
        )
        feature_items = []
        for item in batch:
            texts = [r.text for r in sorted(item.responses.all(), key=lambda r: r.position)]
            feature_items.append(FeatureItem(item.pk, _prompt_text(item), texts[0], texts[1] if len(texts) > 1 else ""))
        scores = lexical_scores(feature_items)
        for item, raw in zip(batch, scores, strict=True):
            item.features = {**(item.features or {}), "lexical": {k: float(v) for k, v in raw.items()}}
        Item.objects.bulk_update(batch, ["features"], batch_size=FEATURE_BATCH)
        done += len(batch)
        if progress:
            progress(done, len(ids))
    return done


def _prompt_text(item: Item) -> str:
    if item.prompt:
        return item.prompt
    for turn in reversed(item.conversation or []):
        if turn.get("role") == "user":
            return str(turn.get("content", ""))
    return ""


@dataclass
class ProjectData:
    """What routing needs of a project, as arrays in item-id order."""

    item_ids: np.ndarray
    names: list[str]
    X: np.ndarray
    ai_disagreement: np.ndarray  # NaN: no AI verdict
    ai_winner: np.ndarray  # +1 A, -1 B, 0 tie; 0 where there is no verdict
    has_ai: np.ndarray
    human_first: np.ndarray  # the first human annotation's winner (0 where none)
    human_majority: np.ndarray  # the majority of all human annotations (0 where none)
    n_human: np.ndarray


def project_data(
    project: Project, *, judge: str | None = None, aspect: str = "overall", need_ai_label: bool = False
) -> ProjectData:
    """Features (lexical bins, tags, AI side), AI verdicts and human labels of every item."""
    from routing.features import AIVerdict, ai_features, binarized_rows, feature_matrix, tag_features

    rows = list(project.items.order_by("id").values_list("id", "features"))
    if not rows:
        raise RoutingError(f"project {project.slug} has no items")
    item_ids = np.array([r[0] for r in rows], dtype=np.int64)
    index = {int(i): k for k, i in enumerate(item_ids)}
    missing = [i for i, f in rows if "lexical" not in (f or {})]
    if missing:
        raise RoutingError(
            f"{len(missing)} item(s) have no features yet;"
            f" compute them first (manage.py compute_features {project.slug})"
        )
    per_item = binarized_rows([f["lexical"] for _, f in rows])
    for k, (_, f) in enumerate(rows):
        if f.get("tags"):
            per_item[k].update(tag_features(f["tags"]))

    scale = project.scale
    verdicts: dict[int, list[Any]] = {i: [] for i in index}
    # Every judge's verdicts feed the features; the AI label is one judge's (the named one, or the only one).
    judgments = Judgment.objects.filter(item__project=project, order=Judgment.COMBINED, status=Judgment.DONE)
    judge_names = sorted(set(judgments.values_list("judge__name", flat=True).distinct()))
    if judge and judge not in judge_names:
        raise RoutingError(
            f"judge {judge!r} has no verdicts in {project.slug} (judges: {', '.join(judge_names) or 'none'})"
        )
    if need_ai_label and judge is None and len(judge_names) > 1:
        raise RoutingError(f"name the AI judge (--judge): {project.slug} has verdicts from {', '.join(judge_names)}")
    ai_winner = np.zeros(len(rows), dtype=np.int8)
    has_ai = np.zeros(len(rows), dtype=bool)
    disagreement = np.full(len(rows), np.nan)
    chosen_judge = judge or (judge_names[0] if len(judge_names) == 1 else None)
    rows_ai = judgments.order_by("item_id", "-created_at").values_list(
        "item_id", "judge__name", "judge__backend", "labels", "soft", "details", "order_inconsistent"
    )
    for item_id, name, backend, labels, soft, details, inconsistent in rows_ai:
        if aspect not in (labels or {}):
            continue
        score = label_to_score(labels[aspect], scale)
        p = (soft or {}).get(aspect)
        jury = ((details or {}).get("disagreement") or {}).get(aspect)
        # Reward models and density ratios give a margin, not a probability.
        margin = backend in (Judge.REWARD_MODEL, Judge.DENSITY_RATIO)
        verdicts[item_id].append(AIVerdict(name, score, inconsistent, p, jury, soft_is_margin=margin))
        k = index[item_id]
        if name == chosen_judge and not has_ai[k]:
            has_ai[k] = True
            ai_winner[k] = winner(labels[aspect], scale)
    for item_id, found in verdicts.items():
        k = index[item_id]
        if found:
            per_item[k].update(ai_features(found))
            disagreement[k] = _disagreement(found)
    names, X = feature_matrix(per_item)

    human_first = np.zeros(len(rows), dtype=np.int8)
    human_majority = np.zeros(len(rows), dtype=np.int8)
    n_human = np.zeros(len(rows), dtype=np.int32)
    by_item: dict[int, list[int]] = {}
    for item_id, prefs in (
        HumanAnnotation.objects.filter(item__project=project)
        .order_by("item_id", "created_at", "id")
        .values_list("item_id", "preferences")
    ):
        if aspect in (prefs or {}):
            by_item.setdefault(item_id, []).append(winner(prefs[aspect], scale))
    for item_id, votes in by_item.items():
        k = index[item_id]
        human_first[k] = votes[0]
        n_human[k] = len(votes)
        human_majority[k] = _majority(votes)
    return ProjectData(item_ids, names, X, disagreement, ai_winner, has_ai, human_first, human_majority, n_human)


def _disagreement(found: Sequence[Any]) -> float:
    """How unsure the AI side is about an item, in [0, 1]: order flips, split juries, split judges, weak soft scores."""
    signals = []
    if any(v.order_inconsistent for v in found):
        signals.append(1.0)
    signals.extend(float(v.jury_disagreement) for v in found if v.jury_disagreement is not None)
    winners = {(v.label_score > 0) - (v.label_score < 0) for v in found}
    signals.append(1.0 if len(winners) > 1 else 0.0)
    for v in found:
        if v.soft is not None and math.isfinite(v.soft):
            p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, v.soft)))) if v.soft_is_margin else v.soft
            signals.append(1.0 - abs(2.0 * min(1.0, max(0.0, p)) - 1.0))
        signals.append(1.0 - abs(v.label_score))
    return float(max(signals))


def _majority(votes: Sequence[int]) -> int:
    """The most common winner; a tied count goes to the vote seen first (MultiPref's rule)."""
    counts = Counter(votes)
    top = max(counts.values())
    return next(v for v in votes if counts[v] == top)


# --- routing ----------------------------------------------------------------------------------------


def fitted_ppm(project: Project) -> Any:
    """The best performance model by cross-validation, from the project's scored candidates (or None)."""
    from routing.ppm import fit_best

    scored = list(RoutingCandidate.objects.filter(project=project, score__isnull=False).order_by("id"))
    if len(scored) < 10:
        return None
    names = sorted({n for c in scored for n in c.mixture})
    M = np.array([[c.mixture.get(n, 0) for n in names] for c in scored], dtype=float)
    y = np.array([c.score for c in scored], dtype=float)
    n_items = project.items.count()
    ppm = fit_best(M, y, k=min(10, len(scored)), seed=0, n_items=n_items, feature_names=names)
    return ppm, names


def route_project(
    project: Project,
    *,
    strategy: str,
    budget: float,
    seed: int = 0,
    n_candidates: int = 1024,
    judge: str | None = None,
    user: Any = None,
) -> RoutingRun:
    """Decide each item's route and record the run. Items routed to humans join the annotation queue."""
    from routing.router import STRATEGIES, budget_n_from, route, train_error_model

    if strategy not in STRATEGIES:
        raise RoutingError(f"unknown strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    data = project_data(project, judge=judge, need_ai_label=strategy == "error-model")
    n = len(data.item_ids)
    try:
        budget_n = budget_n_from(budget, n)
    except ValueError as exc:
        raise RoutingError(f"budget: {exc}") from None
    error_model = None
    summary: dict[str, Any] = {"n_items": n, "strategy": strategy}
    if strategy == "error-model":
        both = data.has_ai & (data.n_human > 0)
        if both.sum() < 2:
            raise RoutingError(
                "the error model learns from items with both a human and an AI label; there are none yet"
            )
        ai_wrong = data.ai_winner[both] != data.human_majority[both]
        error_model = train_error_model(data.X[both], ai_wrong, seed)
        summary["error_model"] = {
            "kind": error_model.kind,
            "trained_on": int(both.sum()),
            "ai_wrong_rate": float(ai_wrong.mean()),
        }
    if strategy == "ai-disagreement" and not np.isfinite(data.ai_disagreement).any():
        raise RoutingError("ai-disagreement needs AI verdicts; run a judge on the project first")
    ppm = None
    X = data.X
    if strategy.startswith("ppm"):
        fitted = fitted_ppm(project)
        if fitted is None:
            raise RoutingError(
                "the performance model needs at least 10 scored candidates: run export_candidates and record_score,"
                " or the proxy (manage.py score_candidates)"
            )
        ppm, names = fitted
        X = np.column_stack([data.X[:, data.names.index(f)] if f in data.names else np.zeros(n, bool) for f in names])
        summary["ppm"] = {
            "model": ppm.name,
            "cv": {k: {"spearman": r.spearman, "rmse": r.rmse} for k, r in ppm.report.items()},
        }
    try:
        result = route(
            strategy,
            n_items=n,
            budget_n=budget_n,
            seed=seed,
            X=X,
            ai_disagreement=data.ai_disagreement,
            error_model=error_model,
            ppm=ppm,
            n_candidates=n_candidates,
        )
    except ValueError as exc:
        raise RoutingError(str(exc)) from None
    human = np.zeros(n, dtype=bool)
    human[result.human] = True
    summary.update(result.summary)
    summary.update(
        budget_used=int(human.sum()),
        budget_share=float(human.mean()) if n else 0.0,
        human_cost=float(human.sum() * (project.overlap_normal or 1) * float(project.cost_per_human_annotation or 0)),
        drivers=_drivers(data.names, data.X, human),
    )
    with transaction.atomic():
        run = RoutingRun.objects.create(
            project=project,
            created_by=user if getattr(user, "pk", None) else None,
            strategy=strategy,
            budget=budget,
            budget_n=int(human.sum()),
            seed=seed,
            n_candidates=n_candidates,
            status=RoutingRun.DONE,
            summary=_jsonable(summary),
            finished_at=timezone.now(),
        )
        _write_routes(data.item_ids, human, result.reasons, run)
    return run


def _drivers(names: list[str], X: np.ndarray, human: np.ndarray, top: int = 8) -> list[dict[str, Any]]:
    """The features most over-represented among the human-routed items (share in human set / share overall)."""
    if not human.any() or not len(names):
        return []
    overall = X.mean(axis=0)
    routed = X[human].mean(axis=0)
    lift = np.where(overall > 0, routed / np.maximum(overall, 1e-12), 0.0)
    order = np.argsort(-lift)[:top]
    return [
        {"feature": names[i], "lift": round(float(lift[i]), 3), "share_routed": round(float(routed[i]), 3)}
        for i in order
        if overall[i] > 0
    ]


def _write_routes(item_ids: np.ndarray, human: np.ndarray, reasons: Sequence[str], run: RoutingRun) -> None:
    """Set every item's route and reason, a few thousand rows per statement."""
    tag = f"run {run.pk} ({run.strategy}): "
    for start in range(0, len(item_ids), 2000):
        ids = [int(i) for i in item_ids[start : start + 2000]]
        routes = ["human" if human[start + k] else "ai" for k in range(len(ids))]
        texts = [tag + str(reasons[start + k])[:400] for k in range(len(ids))]
        Item.objects.filter(id__in=ids).update(
            route=Case(
                *[When(id=i, then=Value(r)) for i, r in zip(ids, routes, strict=True)], output_field=CharField()
            ),
            route_reason=Case(
                *[When(id=i, then=Value(t)) for i, t in zip(ids, texts, strict=True)], output_field=CharField()
            ),
            updated_at=timezone.now(),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


# --- candidates for the performance model -------------------------------------------------------------


def make_candidates(
    project: Project, *, n: int, budget: float, seed: int = 0, strategy: str = "paper"
) -> list[RoutingCandidate]:
    """n candidate hybrid datasets at a budget (the paper's generator), recorded with their mixtures."""
    from routing.candidates import generate_candidates
    from routing.ppm import mixture_vector
    from routing.router import budget_n_from

    data = project_data(project)
    try:
        budget_n = budget_n_from(budget, len(data.item_ids))
    except ValueError as exc:
        raise RoutingError(f"budget: {exc}") from None
    share = budget_n / len(data.item_ids)
    if share <= 0:
        raise RoutingError("budget: routes no item to humans")
    candidates = generate_candidates(data.X, budget_n, n, seed)
    made = []
    with transaction.atomic():
        for chosen in candidates:
            mixture = mixture_vector(data.X, chosen)
            made.append(
                RoutingCandidate.objects.create(
                    project=project,
                    budget=share,
                    seed=seed,
                    strategy=strategy,
                    human_item_ids=[int(data.item_ids[i]) for i in chosen],
                    mixture={name: int(v) for name, v in zip(data.names, mixture, strict=True) if v},
                )
            )
    return made


# --- replay -------------------------------------------------------------------------------------------


def simulate_project(
    project: Project,
    *,
    budgets: Sequence[float],
    seeds: int = 5,
    calibration: float = 0.05,
    judge: str | None = None,
    strategies: Sequence[str] | None = None,
    proxy: bool = True,
) -> dict[str, Any]:
    """Replay routing on items that already carry human and AI labels (see routing.simulate)."""
    from routing.router import STRATEGIES
    from routing.simulate import simulate

    data = project_data(project, judge=judge, need_ai_label=True)
    keep = data.has_ai & (data.n_human > 0)
    if keep.sum() < 10:
        raise RoutingError(f"replay needs items with both human and AI labels; {project.slug} has {int(keep.sum())}")
    emb_a = emb_b = None
    if proxy:
        emb_a, emb_b = response_embeddings(data.item_ids[keep])
    result = simulate(
        human_first=data.human_first[keep],
        reference=data.human_majority[keep],
        ai=data.ai_winner[keep],
        X=data.X[keep],
        ai_disagreement=data.ai_disagreement[keep],
        budgets=list(budgets),
        strategies=tuple(strategies or STRATEGIES),
        seeds=tuple(range(seeds)),
        calibration=calibration,
        emb_a=emb_a,
        emb_b=emb_b,
    )
    return _jsonable(result)


def response_embeddings(item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sentence embeddings of each item's two responses (for the Bradley-Terry proxy)."""
    from routing.features import get_embedder

    texts: dict[int, list[str]] = {}
    for item_id, position, text in Item.objects.filter(id__in=[int(i) for i in item_ids]).values_list(
        "id", "responses__position", "responses__text"
    ):
        if position is not None and position < 2:
            texts.setdefault(item_id, ["", ""])[position] = text
    embedder = get_embedder()
    a = embedder.encode([texts[int(i)][0] for i in item_ids])
    b = embedder.encode([texts[int(i)][1] for i in item_ids])
    return np.asarray(a), np.asarray(b)
