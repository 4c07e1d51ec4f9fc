"""Routing: item features, routing runs, candidates for the performance model, proxy scores, replays.

The maths is in routing/ (pure); this module reads the database into arrays, calls it, and writes
the decisions back (Item.route and route_reason; a RoutingRun with its summary). Human-routed
items enter the annotation queue by their route (webapp.services.queue). Background work (proxy
scoring here, metadata tagging in webapp.services.tagging) runs as RoutingJob rows on Celery.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Avg, Case, CharField, Count, Exists, Max, OuterRef, QuerySet, Value, When
from django.utils import timezone

from annotators.labels import label_to_score, winner
from webapp.models import (
    GoldItem,
    HumanAnnotation,
    Item,
    Judge,
    Judgment,
    Project,
    RoutingCandidate,
    RoutingJob,
    RoutingRun,
)
from webapp.scheme import PAIRWISE

FEATURE_BATCH = 256


class RoutingError(ValueError):
    """A routing request that cannot be carried out; the message says why."""


# --- features ---------------------------------------------------------------------------------------


def compute_features(
    project: Project,
    *,
    recompute: bool = False,
    embeddings: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Compute and store the lexical scores of the project's pairwise items; returns how many were computed.

    Stored in Item.features["lexical"] (raw scores; the bins depend on the whole project and are
    made at routing time), with the embeddings used in Item.features["lexical_embeddings"].
    embeddings: "static" or "contextual" (routing/features.py); default settings.ROUTING_EMBEDDINGS.
    Resumable: items that have scores from the same embeddings are skipped unless recompute, so a
    project never mixes scores of the two kinds (their bins would not mean the same).
    """
    from django.conf import settings

    from routing.features import FeatureItem, get_feature_embedder, lexical_scores

    embeddings = embeddings or settings.ROUTING_EMBEDDINGS
    try:
        embedder = get_feature_embedder(embeddings)
    except ValueError as exc:
        raise RoutingError(str(exc)) from None
    if project.kind != PAIRWISE:
        raise RoutingError("routing features compare two responses; this is a ranking project")
    items = project.items.order_by("id")
    if not recompute:
        items = items.exclude(features__has_key="lexical", features__lexical_embeddings=embeddings)
    ids = list(items.values_list("id", flat=True))
    done = 0
    for start in range(0, len(ids), FEATURE_BATCH):
        batch = list(
            Item.objects.filter(id__in=ids[start : start + FEATURE_BATCH]).prefetch_related("responses").order_by("id")
        )
        feature_items = []
        for item in batch:
            texts = [r.text for r in sorted(item.responses.all(), key=lambda r: r.position)]
            feature_items.append(FeatureItem(item.pk, prompt_text(item), texts[0], texts[1] if len(texts) > 1 else ""))
        scores = lexical_scores(feature_items, embedder=embedder)
        lexical = {item.pk: {k: float(v) for k, v in raw.items()} for item, raw in zip(batch, scores, strict=True)}
        merge_item_features(
            {item_id: {"lexical": values, "lexical_embeddings": embeddings} for item_id, values in lexical.items()}
        )
        done += len(batch)
        if progress:
            progress(done, len(ids))
    return done


def merge_item_features(updates: Mapping[int, Mapping[str, Any]]) -> None:
    """Set top-level keys of items' features ({item id: {key: value}}), keeping every other key.

    The rows are locked and read again inside the transaction, so writers of different keys (the
    lexical scores, the metadata tags) never overwrite each other's work.
    """
    if not updates:
        return
    with transaction.atomic():
        items = list(
            Item.objects.select_for_update().filter(id__in=list(updates)).only("id", "features").order_by("id")
        )
        for item in items:
            item.features = {**(item.features or {}), **updates[item.pk]}
        Item.objects.bulk_update(items, ["features"], batch_size=FEATURE_BATCH)


def prompt_text(item: Item) -> str:
    if item.prompt:
        return item.prompt
    for turn in reversed(item.conversation or []):
        if turn.get("role") == "user":
            return str(turn.get("content", ""))
    return ""


def regular_items(project: Project) -> QuerySet[Item]:
    """The project's items less its gold items (services/gold.py), which routing never decides on."""
    return project.items.filter(~Exists(GoldItem.objects.filter(item=OuterRef("pk"))))


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
    from routing.features import ai_features, binarized_rows, feature_matrix, tag_features

    rows = list(regular_items(project).order_by("id").values_list("id", "features"))
    if not rows:
        raise RoutingError(f"project {project.slug} has no items")
    item_ids = np.array([r[0] for r in rows], dtype=np.int64)
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
    labels = _read_labels(project, item_ids, judge=judge, aspect=aspect, need_ai_label=need_ai_label)
    disagreement = np.full(len(rows), np.nan)
    for k, found in enumerate(labels.verdicts):
        if found:
            per_item[k].update(ai_features(found))
            disagreement[k] = _disagreement(found)
    names, X = feature_matrix(per_item)
    return ProjectData(
        item_ids,
        names,
        X,
        disagreement,
        labels.ai_winner,
        labels.has_ai,
        labels.human_first,
        labels.human_majority,
        labels.n_human,
    )


@dataclass
class ProjectLabels:
    """The AI and human labels of every item, in item-id order (no features needed)."""

    item_ids: np.ndarray
    ai_winner: np.ndarray  # +1 A, -1 B, 0 tie; 0 where the AI judge has no verdict
    has_ai: np.ndarray
    human_first: np.ndarray  # the first human annotation's winner (0 where none)
    human_majority: np.ndarray  # the majority of all human annotations (0 where none)
    n_human: np.ndarray
    verdicts: list[list[Any]]  # every judge's AIVerdicts per item (for the AI-side features)


def project_labels(
    project: Project, *, judge: str | None = None, aspect: str = "overall", need_ai_label: bool = False
) -> ProjectLabels:
    """Every item's AI label (the named judge's, or the only judge's) and human labels."""
    item_ids = np.array(list(regular_items(project).order_by("id").values_list("id", flat=True)), dtype=np.int64)
    if not len(item_ids):
        raise RoutingError(f"project {project.slug} has no items")
    return _read_labels(project, item_ids, judge=judge, aspect=aspect, need_ai_label=need_ai_label)


def _read_labels(
    project: Project, item_ids: np.ndarray, *, judge: str | None, aspect: str, need_ai_label: bool
) -> ProjectLabels:
    from routing.features import AIVerdict

    index = {int(i): k for k, i in enumerate(item_ids)}
    n = len(item_ids)
    scale = project.scale
    verdicts: list[list[Any]] = [[] for _ in range(n)]
    # Every judge's verdicts feed the features; the AI label is one judge's (the named one, or the only one).
    judgments = Judgment.objects.filter(item__project=project, order=Judgment.COMBINED, status=Judgment.DONE)
    judge_names = sorted(set(judgments.values_list("judge__name", flat=True).distinct()))
    if judge and judge not in judge_names:
        raise RoutingError(
            f"judge {judge!r} has no verdicts in {project.slug} (judges: {', '.join(judge_names) or 'none'})"
        )
    if need_ai_label and judge is None and len(judge_names) > 1:
        raise RoutingError(f"name the AI judge (--judge): {project.slug} has verdicts from {', '.join(judge_names)}")
    ai_winner = np.zeros(n, dtype=np.int8)
    has_ai = np.zeros(n, dtype=bool)
    chosen_judge = judge or (judge_names[0] if len(judge_names) == 1 else None)
    rows_ai = judgments.order_by("item_id", "-created_at").values_list(
        "item_id", "judge__name", "judge__backend", "labels", "soft", "details", "order_inconsistent"
    )
    for item_id, name, backend, labels, soft, details, inconsistent in rows_ai:
        if aspect not in (labels or {}) or item_id not in index:
            continue
        score = label_to_score(labels[aspect], scale)
        p = (soft or {}).get(aspect)
        jury = ((details or {}).get("disagreement") or {}).get(aspect)
        # Reward models and density ratios give a margin, not a probability.
        margin = backend in (Judge.REWARD_MODEL, Judge.DENSITY_RATIO)
        k = index[item_id]
        verdicts[k].append(AIVerdict(name, score, inconsistent, p, jury, soft_is_margin=margin))
        if name == chosen_judge and not has_ai[k]:
            has_ai[k] = True
            ai_winner[k] = winner(labels[aspect], scale)

    human_first = np.zeros(n, dtype=np.int8)
    human_majority = np.zeros(n, dtype=np.int8)
    n_human = np.zeros(n, dtype=np.int32)
    by_item: dict[int, list[int]] = {}
    for item_id, prefs in (
        HumanAnnotation.objects.filter(item__project=project)
        .order_by("item_id", "created_at", "id")
        .values_list("item_id", "preferences")
    ):
        if aspect in (prefs or {}) and item_id in index:
            by_item.setdefault(item_id, []).append(winner(prefs[aspect], scale))
    for item_id, votes in by_item.items():
        k = index[item_id]
        human_first[k] = votes[0]
        n_human[k] = len(votes)
        human_majority[k] = _majority(votes)
    return ProjectLabels(item_ids, ai_winner, has_ai, human_first, human_majority, n_human, verdicts)


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


# At least this many scored candidates of one source before the PPM is fitted.
PPM_MIN_ROWS = 10
_ppm_cache: dict[tuple[Any, ...], tuple[Any, list[str], str, int]] = {}
_ppm_lock = threading.Lock()


@dataclass(frozen=True)
class FittedPPMInfo:
    """The project's performance model, the mixture feature names it takes, and what it learned from."""

    ppm: Any  # routing.ppm.FittedPPM
    names: list[str]
    source: str  # RoutingCandidate.EXTERNAL or PROXY
    rows: int


def ppm_training_rows(project: Project) -> tuple[str | None, int]:
    """The score source the PPM learns from and how many scored candidates it has.

    External scores (reward models trained elsewhere) when there are at least PPM_MIN_ROWS of them, else
    the in-platform proxy's: the two measure different things, so they are never mixed in one model.
    """
    counts = dict(
        RoutingCandidate.objects.filter(project=project, score__isnull=False)
        .values("score_source")
        .annotate(n=Count("id"))
        .values_list("score_source", "n")
    )
    for source in (RoutingCandidate.EXTERNAL, RoutingCandidate.PROXY):
        if counts.get(source, 0) >= PPM_MIN_ROWS:
            return source, counts[source]
    best = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
    return best[0], best[1]


def fitted_ppm_info(project: Project) -> FittedPPMInfo | None:
    """The best performance model by cross-validation on the project's scored candidates of one source,
    or None below PPM_MIN_ROWS. Fits are cached per process until a candidate's score changes."""
    from routing.ppm import fit_best

    source, n_rows = ppm_training_rows(project)
    if source is None or n_rows < PPM_MIN_ROWS:
        return None
    scored_qs = RoutingCandidate.objects.filter(project=project, score__isnull=False, score_source=source)
    n_items = regular_items(project).count()
    stamp = scored_qs.aggregate(n=Count("id"), last_id=Max("id"), last=Max("scored_at"))
    key = (project.pk, source, n_items, stamp["n"], stamp["last_id"], stamp["last"])
    with _ppm_lock:
        cached = _ppm_cache.get(key)
    if cached is None:
        scored = list(scored_qs.order_by("id"))
        names = sorted({n for c in scored for n in c.mixture})
        M = np.array([[c.mixture.get(n, 0) for n in names] for c in scored], dtype=float)
        y = np.array([c.score for c in scored], dtype=float)
        ppm = fit_best(M, y, k=min(10, len(scored)), seed=0, n_items=n_items, feature_names=names)
        cached = (ppm, names, source, len(scored))
        with _ppm_lock:
            if len(_ppm_cache) >= 32:
                _ppm_cache.clear()
            _ppm_cache[key] = cached
    return FittedPPMInfo(*cached)


def fitted_ppm(project: Project) -> Any:
    """(the best performance model, its feature names), or None without enough scored candidates."""
    info = fitted_ppm_info(project)
    return None if info is None else (info.ppm, info.names)


def _ppm_columns(data: ProjectData, names: Sequence[str]) -> np.ndarray:
    """The items' features in the PPM's column order (a feature the items lack is all False)."""
    n = len(data.item_ids)
    return np.column_stack([data.X[:, data.names.index(f)] if f in data.names else np.zeros(n, bool) for f in names])


def ai_cost_per_item(project: Project, judge: str | None) -> float | None:
    """The AI judge's mean recorded cost per item (its combined verdicts; order rows summed), or None when
    the judge records no cost (local models, imported verdicts) or no judge is named among several."""
    judgments = Judgment.objects.filter(
        item__project=project, order=Judgment.COMBINED, status=Judgment.DONE, cost__isnull=False
    )
    if judge is None:
        names = list(
            Judgment.objects.filter(item__project=project, order=Judgment.COMBINED, status=Judgment.DONE)
            .values_list("judge__name", flat=True)
            .distinct()[:2]
        )
        if len(names) != 1:
            return None
        judge = names[0]
    mean = judgments.filter(judge__name=judge).aggregate(mean=Avg("cost"))["mean"]
    return None if mean is None else float(mean)


def _cost(project: Project, n_items: int, budget_n: int, ai_per_item: float | None) -> Any:
    from routing.costs import budget_cost

    return budget_cost(
        n_items=n_items,
        budget_n=budget_n,
        annotations_per_item=project.overlap_normal or 1,
        cost_per_annotation=float(project.cost_per_human_annotation or 0),
        ai_cost_per_item=ai_per_item,
    )


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
    from routing.ppm import mixture_vector
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
        info = fitted_ppm_info(project)
        if info is None:
            raise RoutingError(
                f"the performance model needs at least {PPM_MIN_ROWS} scored candidates: run export_candidates and"
                " record_score, or the proxy (manage.py score_candidates)"
            )
        ppm = info.ppm
        X = _ppm_columns(data, info.names)
        summary["ppm"] = {
            "model": ppm.name,
            "trained_on": info.rows,
            "score_source": info.source,
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
    if ppm is not None:
        # The PPM's prediction for the routed mixture (ppm-simulated: its best candidate's "predicted").
        summary["predicted_score"] = float(ppm.predict(mixture_vector(X, human))[0])
    cost = _cost(project, n, int(human.sum()), ai_cost_per_item(project, judge))
    summary.update(
        budget_used=int(human.sum()),
        budget_share=float(human.mean()) if n else 0.0,
        human_cost=cost.human,
        ai_cost=cost.ai,
        total_cost=cost.total,
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


# --- the budget preview -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetPreview:
    """What a budget would buy, before routing: items, costs, and the PPM's predicted score.

    predicted_score is what ``ppm-simulated`` with the same seed and candidates would predict for its
    best candidate (None, with ``note`` saying why, when there is no PPM or no features yet).
    """

    budget: float | int
    n_items: int
    budget_n: int
    ai_items: int
    share: float
    annotations_per_item: int
    cost_per_annotation: float
    ai_cost_per_item: float | None
    human_cost: float
    ai_cost: float | None
    total_cost: float
    predicted_score: float | None
    ppm_model: str | None
    ppm_rows: int
    ppm_source: str | None
    note: str


NO_PPM_NOTE = "no scored candidates yet: score candidates first"


def parse_budget(text: str) -> float | int:
    """A budget as typed: a share in (0, 1] or a whole count above 1."""
    value = float(text)
    if value > 1:
        if value != int(value):
            raise RoutingError("budget: a count above 1 must be whole")
        return int(value)
    return value


def budget_preview(
    project: Project, budget: float | int, *, judge: str | None = None, seed: int = 0, n_candidates: int = 1024
) -> BudgetPreview:
    """The items, cost and predicted score of a budget, computed the way route_project would."""
    from routing.candidates import best_of_candidates
    from routing.router import budget_n_from

    n = regular_items(project).count()
    if not n:
        raise RoutingError(f"project {project.slug} has no items")
    try:
        budget_n = budget_n_from(budget, n)
    except ValueError as exc:
        raise RoutingError(f"budget: {exc}") from None
    if n_candidates < 1:
        raise RoutingError("candidates: must be at least 1")
    if seed < 0:
        raise RoutingError("seed: must be at least 0")
    ai_per_item = ai_cost_per_item(project, judge)
    cost = _cost(project, n, budget_n, ai_per_item)
    predicted: float | None = None
    model: str | None = None
    source, rows = ppm_training_rows(project)
    note = ""
    info = fitted_ppm_info(project)
    if info is None:
        note = NO_PPM_NOTE
        if rows:
            note += f" ({rows} scored, the model needs {PPM_MIN_ROWS})"
    else:
        try:
            data = project_data(project, judge=judge)
        except RoutingError as exc:
            note = str(exc)
        else:
            best = best_of_candidates(_ppm_columns(data, info.names), budget_n, n_candidates, seed, info.ppm)
            predicted, model, rows, source = best.predicted, info.ppm.name, info.rows, info.source
    return BudgetPreview(
        budget=budget,
        n_items=n,
        budget_n=budget_n,
        ai_items=cost.ai_items,
        share=budget_n / n,
        annotations_per_item=project.overlap_normal or 1,
        cost_per_annotation=float(project.cost_per_human_annotation or 0),
        ai_cost_per_item=ai_per_item,
        human_cost=cost.human,
        ai_cost=cost.ai,
        total_cost=cost.total,
        predicted_score=predicted,
        ppm_model=model,
        ppm_rows=rows,
        ppm_source=source,
        note=note,
    )


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
    from routing.router import budget_n_from

    data = project_data(project)
    try:
        budget_n = budget_n_from(budget, len(data.item_ids))
    except ValueError as exc:
        raise RoutingError(f"budget: {exc}") from None
    if budget_n <= 0:
        raise RoutingError("budget: routes no item to humans")
    with transaction.atomic():
        return _save_candidates(project, data, [(budget_n, n, seed)], strategy)


def make_spread_candidates(project: Project, *, n: int, seed: int = 0) -> list[RoutingCandidate]:
    """n candidates at budgets spread evenly over the shares (k + 0.5) / n, one each (seeds seed, seed + 1,
    ...): training rows for the PPM across budgets, as the paper samples them."""
    if n < 1:
        raise RoutingError("candidates: make at least one")
    data = project_data(project)
    n_items = len(data.item_ids)
    plan = [(max(1, min(n_items, round((k + 0.5) / n * n_items))), 1, seed + k) for k in range(n)]
    with transaction.atomic():
        return _save_candidates(project, data, plan, "paper-spread")


def _save_candidates(
    project: Project, data: ProjectData, plan: Iterable[tuple[int, int, int]], strategy: str
) -> list[RoutingCandidate]:
    """Generate and store candidates: for each (items to humans, how many, seed) in the plan."""
    from routing.candidates import generate_candidates
    from routing.ppm import mixture_vector

    made = []
    n_items = len(data.item_ids)
    for budget_n, count, seed in plan:
        for chosen in generate_candidates(data.X, budget_n, count, seed):
            mixture = mixture_vector(data.X, chosen)
            made.append(
                RoutingCandidate.objects.create(
                    project=project,
                    budget=budget_n / n_items,
                    seed=seed,
                    strategy=strategy,
                    human_item_ids=[int(data.item_ids[i]) for i in chosen],
                    mixture={name: int(v) for name, v in zip(data.names, mixture, strict=True) if v},
                )
            )
    return made


# --- jobs (proxy scoring here, tagging in webapp.services.tagging) ---------------------------------------


def active_job(project: Project, kind: str) -> RoutingJob | None:
    return RoutingJob.objects.filter(project=project, kind=kind, status__in=RoutingJob.ACTIVE).first()


def check_no_active_job(project: Project, kind: str) -> None:
    """Lock the project row (inside a transaction) and refuse when a job of the kind is queued or running."""
    Project.objects.select_for_update().filter(pk=project.pk).first()
    active = active_job(project, kind)
    if active is not None:
        raise RoutingError(f"{kind} job {active.pk} is still {active.status} on {project.slug}; wait for it")


def create_job(project: Project, kind: str, **fields: Any) -> RoutingJob:
    """A new job row (call inside a transaction); RoutingError when one of the kind is still active."""
    check_no_active_job(project, kind)
    try:
        with transaction.atomic():
            return RoutingJob.objects.create(project=project, kind=kind, **fields)
    except IntegrityError:  # a concurrent start won the race
        raise RoutingError(f"a {kind} job is still running on {project.slug}; wait for it") from None


def claim_job(job_id: int, kind: str) -> RoutingJob | None:
    """The job, marked running, if it is queued or running (a redelivered task resumes it); else None."""
    with transaction.atomic():
        job = (
            RoutingJob.objects.select_for_update(of=("self",))
            .select_related("project", "judge")
            .filter(pk=job_id, kind=kind)
            .first()
        )
        if job is None or job.status not in RoutingJob.ACTIVE:
            return None
        if job.status == RoutingJob.QUEUED:
            job.status, job.started_at = RoutingJob.RUNNING, timezone.now()
            job.save(update_fields=["status", "started_at"])
    return job


def finish_job(job: RoutingJob, *, error: str = "") -> RoutingJob:
    RoutingJob.objects.filter(pk=job.pk, status__in=RoutingJob.ACTIVE).update(
        status=RoutingJob.FAILED if error else RoutingJob.DONE, error=error[:2000], finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def enqueue_job(job: RoutingJob) -> None:
    """Send the job's Celery task once the transaction that created it commits."""
    from webapp import tasks  # tasks import services, not the other way round

    task = tasks.tag_items if job.kind == RoutingJob.TAGGING else tasks.score_candidates
    job_id = job.pk
    transaction.on_commit(lambda: task.delay(job_id))


# --- the in-platform proxy: scores for candidates --------------------------------------------------------

PROXY_METRIC = "proxy-bt-pairwise-accuracy"
PROXY_FOLDS = 5
PROXY_SEED = 0
# The reference: items with at least this many human annotations, scored against their majority.
PROXY_MIN_ANNOTATIONS = 2
# The proxy trains on items with both labels; fewer than this and there is nothing to learn from.
PROXY_MIN_POOL = 10
# Labelled pairs a Bradley-Terry fit trains on at most (the paper sampled 7,000).
PROXY_MAX_PAIRS = 7000


@dataclass
class ProxyPool:
    """The items the proxy trains and scores on, with their labels and the reference."""

    item_ids: np.ndarray
    ai: np.ndarray
    human_first: np.ndarray
    reference: np.ndarray  # human majority where >= PROXY_MIN_ANNOTATIONS annotations, else 0 (not scored)

    def positions(self, item_ids: Iterable[int]) -> np.ndarray:
        where = {int(i): k for k, i in enumerate(self.item_ids)}
        return np.array(sorted({where[int(i)] for i in item_ids if int(i) in where}), dtype=np.int64)


def proxy_pool(project: Project, *, judge: str | None = None) -> ProxyPool:
    """Items with both an AI label (the judge's) and a human label; RoutingError when too few to score."""
    from routing.proxy import reference_labels

    if project.kind != PAIRWISE:
        raise RoutingError("the proxy reward model compares two responses; this is a ranking project")
    labels = project_labels(project, judge=judge, need_ai_label=True)
    keep = labels.has_ai & (labels.n_human > 0)
    if keep.sum() < PROXY_MIN_POOL:
        raise RoutingError(
            f"the proxy trains on items with both a human and an AI label; {project.slug} has {int(keep.sum())}"
            f" (it needs {PROXY_MIN_POOL})"
        )
    reference = reference_labels(labels.human_majority[keep], labels.n_human[keep], PROXY_MIN_ANNOTATIONS)
    if np.count_nonzero(reference) < PROXY_FOLDS:
        raise RoutingError(
            f"the proxy is scored on items with at least {PROXY_MIN_ANNOTATIONS} human annotations and a"
            f" non-tie majority; {project.slug} has {int(np.count_nonzero(reference))} (it needs {PROXY_FOLDS})"
        )
    return ProxyPool(labels.item_ids[keep], labels.ai_winner[keep], labels.human_first[keep], reference)


def proxy_score(pool: ProxyPool, emb_a: np.ndarray, emb_b: np.ndarray, human_item_ids: Iterable[int]) -> float:
    """The proxy's score of one candidate: a Bradley-Terry model on the hybrid labels (human where the
    candidate routes to humans, AI elsewhere), cross-fitted over PROXY_FOLDS folds, pairwise accuracy on
    the reference. NaN when no fold has a reference pair."""
    from routing.proxy import hybrid_labels, hybrid_proxy_score

    labels = hybrid_labels(pool.ai, pool.human_first, pool.positions(human_item_ids))
    return hybrid_proxy_score(
        labels, pool.reference, emb_a, emb_b, folds=PROXY_FOLDS, seed=PROXY_SEED, max_pairs=PROXY_MAX_PAIRS
    )


def start_proxy_scoring(
    project: Project,
    *,
    judge: str | None = None,
    candidate_ids: Sequence[int] | None = None,
    new: int = 0,
    seed: int = 0,
    force: bool = False,
    user: Any = None,
    enqueue: bool = True,
) -> RoutingJob:
    """Queue proxy scores for the project's unscored candidates (or the given ones; all of them with force).

    new > 0 first makes that many candidates at budgets spread over (0, 1] (make_spread_candidates).
    The job's total is 0, and it is done at once, when there is nothing to score.
    """
    if new < 0:
        raise RoutingError("new: cannot make a negative number of candidates")
    judge_row = None
    if judge:
        judge_row = Judge.objects.filter(name=judge).first()
        if judge_row is None:
            raise RoutingError(f"no judge called {judge!r}")
    proxy_pool(project, judge=judge)  # fail here, not on the worker, when the labels cannot be scored
    with transaction.atomic():
        check_no_active_job(project, RoutingJob.PROXY)
        made = make_spread_candidates(project, n=new, seed=seed) if new else []
        candidates = RoutingCandidate.objects.filter(project=project)
        if candidate_ids is not None:
            wanted = {int(c) for c in candidate_ids} | {c.pk for c in made}
            found = set(candidates.filter(id__in=wanted).values_list("id", flat=True))
            if wanted - found:
                raise RoutingError(f"no candidate {', '.join(map(str, sorted(wanted - found)))} in {project.slug}")
            candidates = candidates.filter(id__in=wanted)
        if not force:
            candidates = candidates.filter(score__isnull=True)
        ids = sorted(candidates.values_list("id", flat=True))
        job = create_job(
            project,
            RoutingJob.PROXY,
            judge=judge_row,
            created_by=user if getattr(user, "pk", None) else None,
            force=force,
            options={"candidate_ids": ids, "judge": judge, "metric": PROXY_METRIC, "made": len(made)},
            total=len(ids),
        )
        if not ids:
            finish_job(job)
        elif enqueue:
            enqueue_job(job)
    return job


def run_proxy_job(job_id: int, *, progress: Callable[[int, int], None] | None = None) -> RoutingJob | None:
    """Score a proxy job's candidates and record each score (score_source "proxy"). Safe to run twice:
    candidates this job has handled, and (without force) candidates that have a score, are skipped."""
    from routing.ppm import one_blas_thread
    from webapp.services.candidates import record_score

    job = claim_job(job_id, RoutingJob.PROXY)
    if job is None:
        return RoutingJob.objects.filter(pk=job_id).first()
    try:
        pool = proxy_pool(job.project, judge=job.options.get("judge"))
        with transaction.atomic():
            job = RoutingJob.objects.select_for_update(of=("self",)).select_related("project").get(pk=job.pk)
            handled = set(job.options.get("handled", []))
            todo = [
                c
                for c in RoutingCandidate.objects.filter(id__in=job.options.get("candidate_ids", [])).order_by("id")
                if c.pk not in handled and (job.force or c.score is None)
            ]
            # What this job handles: what it did before a restart, and what is left now.
            job.total = len(handled) + len(todo)
            job.save(update_fields=["total"])
        if todo:
            emb_a, emb_b = response_embeddings(pool.item_ids)
            with one_blas_thread():
                for candidate in todo:
                    score = proxy_score(pool, emb_a, emb_b, candidate.human_item_ids)
                    with transaction.atomic():
                        locked = RoutingJob.objects.select_for_update().get(pk=job.pk)
                        if candidate.pk in locked.options.get("handled", []):
                            continue  # another run of this job got there first
                        if math.isfinite(score):
                            record_score(candidate.pk, score, source=RoutingCandidate.PROXY, metric=PROXY_METRIC)
                            locked.done += 1
                        else:
                            failures = locked.options.setdefault("failures", {})
                            failures[str(candidate.pk)] = "no reference pair to score on"
                            locked.failed += 1
                        locked.options.setdefault("handled", []).append(candidate.pk)
                        locked.save(update_fields=["done", "failed", "options"])
                    if progress:
                        progress(locked.done + locked.failed, locked.total)
    except RoutingError as exc:
        return finish_job(job, error=str(exc))
    except Exception as exc:
        finish_job(job, error=f"{type(exc).__name__}: {exc}")
        raise
    return finish_job(job)


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


CURVE_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CurvePoint:
    """One budget on the predicted-score curve: what budget_preview would say for it."""

    share: float
    budget_n: int
    predicted_score: float
    total_cost: float


def budget_curve(
    project: Project,
    *,
    judge: str | None = None,
    seed: int = 0,
    n_candidates: int = 256,
    shares: Sequence[float] = CURVE_SHARES,
) -> tuple[list[CurvePoint], str]:
    """The PPM's predicted score and the cost across budgets (the chart beside the budget control).

    Each point is budget_preview's for that share, with `n_candidates` candidates (fewer than a routing
    run's default, so that the whole curve costs about what one preview does). ([], why) without a PPM.
    """
    from routing.candidates import best_of_candidates
    from routing.router import budget_n_from

    n = regular_items(project).count()
    if not n:
        return [], f"project {project.slug} has no items"
    info = fitted_ppm_info(project)
    if info is None:
        return [], NO_PPM_NOTE
    try:
        data = project_data(project, judge=judge)
    except RoutingError as exc:
        return [], str(exc)
    ai_per_item = ai_cost_per_item(project, judge)
    columns = _ppm_columns(data, info.names)
    points = []
    for share in shares:
        budget_n = budget_n_from(share, n)
        best = best_of_candidates(columns, budget_n, n_candidates, seed, info.ppm)
        cost = _cost(project, n, budget_n, ai_per_item)
        points.append(CurvePoint(share, budget_n, float(best.predicted), float(cost.total)))
    return points, ""
