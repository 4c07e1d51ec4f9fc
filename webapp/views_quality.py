"""The manager console: Quality (agreement), Progress (live) and Costs pages, with server-drawn SVG charts.

Views stay thin: the numbers come from webapp.selectors_quality; this module only shapes them into
rows and chart geometry (pure functions below) for the templates. Charts are inline SVG drawn by the
templates from that geometry: no JavaScript library, nothing loaded from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webapp import selectors, selectors_quality
from webapp.models import Membership, Project
from webapp.views import HtmxHttpRequest

PALETTE = ("#3151d3", "#e8590c", "#2f9e44", "#ae3ec9", "#0c8599", "#c92a2a", "#5c940d", "#862e9c")
LIGHT = "#c5cff5"

# --- chart geometry (pure) ------------------------------------------------------------------------------

LABEL_W = 190  # the row labels' column
PLOT_W = 340
VALUE_W = 110  # the value printed after each bar
BAR_H = 12
BAR_GAP = 2
ROW_GAP = 10
AXIS_H = 22


def percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def money(value: float) -> str:
    return f"{value:,.2f}"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # the tooltip: series, label and value


@dataclass(frozen=True)
class BarRow:
    label: str
    label_y: float
    value_text: str
    bars: list[Bar]


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    rows: list[BarRow]
    legend: list[tuple[str, str, float]]  # (name, colour, unused); drawn in HTML above the chart
    ticks: list[tuple[float, str]]  # (x, text) along the axis
    plot_x: float
    plot_top: float
    plot_bottom: float
    value_x: float

    @property
    def label_x(self) -> float:
        return self.plot_x - 6

    @property
    def tick_y(self) -> float:
        return self.plot_bottom + 14


def _ticks(lo: float, hi: float, fmt: Callable[[float], str], n: int = 4) -> list[tuple[float, str]]:
    return [(LABEL_W + PLOT_W * k / n, fmt(lo + (hi - lo) * k / n)) for k in range(n + 1)]


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, Sequence[float | None]]],
    series: Sequence[str],
    *,
    lo: float = 0.0,
    hi: float = 1.0,
    fmt: Callable[[float], str] = percent,
) -> BarChart:
    """Horizontal grouped bars: one group per row, one bar per series (None: no bar, printed as "—").

    Values are clipped to [lo, hi] for drawing; the printed values are not.
    """
    span = (hi - lo) or 1.0
    top = 4.0
    y = top
    out: list[BarRow] = []
    for label, values in rows:
        bars: list[Bar] = []
        for k, value in enumerate(values):
            by = y + k * (BAR_H + BAR_GAP)
            if value is None:
                continue
            width = PLOT_W * (min(max(value, lo), hi) - lo) / span
            name = series[k] if k < len(series) else ""
            colour = PALETTE[k % len(PALETTE)]
            bars.append(Bar(LABEL_W, by, round(width, 2), BAR_H, colour, f"{name} · {label}: {fmt(value)}"))
        group_h = max(1, len(values)) * (BAR_H + BAR_GAP) - BAR_GAP
        text = " / ".join("—" if v is None else fmt(v) for v in values)
        out.append(BarRow(label, y + group_h / 2 + 4, text, bars))
        y += group_h + ROW_GAP
    bottom = y - ROW_GAP + 6
    return BarChart(
        title=title,
        width=LABEL_W + PLOT_W + VALUE_W,
        height=int(bottom + AXIS_H),
        rows=out,
        legend=[(name, PALETTE[k % len(PALETTE)], 0.0) for k, name in enumerate(series)] if len(series) > 1 else [],
        ticks=_ticks(lo, hi, fmt),
        plot_x=LABEL_W,
        plot_top=top,
        plot_bottom=bottom,
        value_x=LABEL_W + PLOT_W + 6,
    )


def stacked_chart(
    title: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    segments: Sequence[str],
    *,
    fmt: Callable[[float], str] = money,
) -> BarChart:
    """Horizontal stacked bars (one per row, a segment per entry of `segments`: the first solid, the
    second light), on one scale: the largest total fills the plot."""
    colours = [PALETTE[0], LIGHT, *PALETTE[1:]]
    hi = max((sum(v) for _, v in rows), default=0.0) or 1.0
    top = 4.0
    y = top
    out: list[BarRow] = []
    for label, values in rows:
        x = float(LABEL_W)
        bars: list[Bar] = []
        for k, value in enumerate(values):
            width = PLOT_W * max(value, 0.0) / hi
            tip = f"{label} · {segments[k]}: {fmt(value)}"
            bars.append(Bar(round(x, 2), y, round(width, 2), BAR_H + 4, colours[k % len(colours)], tip))
            x += width
        out.append(BarRow(label, y + (BAR_H + 4) / 2 + 4, fmt(sum(values)), bars))
        y += BAR_H + 4 + ROW_GAP
    bottom = y - ROW_GAP + 6
    return BarChart(
        title=title,
        width=LABEL_W + PLOT_W + VALUE_W,
        height=int(bottom + AXIS_H),
        rows=out,
        legend=[(name, colours[k % len(colours)], 0.0) for k, name in enumerate(segments)],
        ticks=_ticks(0.0, hi, fmt),
        plot_x=LABEL_W,
        plot_top=top,
        plot_bottom=bottom,
        value_x=LABEL_W + PLOT_W + 6,
    )


@dataclass(frozen=True)
class LineChart:
    title: str
    width: int
    height: int
    points: str  # the polyline's "x,y x,y ..."
    dots: list[tuple[float, float, str]]  # (x, y, tooltip); only where there are few points
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    left: float
    right: float
    top: float
    bottom: float
    last: int

    @property
    def y_label_x(self) -> float:
        return self.left - 6

    @property
    def x_label_y(self) -> float:
        return self.bottom + 16


def line_chart(
    title: str, series: Sequence[tuple[datetime, int]], *, width: int = 640, height: int = 220
) -> LineChart | None:
    """A cumulative count over time as a step line; None without points."""
    if not series:
        return None
    left, right, top, bottom = 56.0, float(width - 16), 12.0, float(height - 28)
    t0, t1 = series[0][0].timestamp(), series[-1][0].timestamp()
    if t1 <= t0:
        t1 = t0 + 3600.0
    y_max = max(n for _, n in series) or 1

    def sx(t: float) -> float:
        return round(left + (right - left) * (t - t0) / (t1 - t0), 2)

    def sy(n: float) -> float:
        return round(bottom - (bottom - top) * n / y_max, 2)

    coords: list[tuple[float, float]] = [(sx(t0), sy(0))]
    for when, n in series:
        x = sx(when.timestamp())
        coords.append((x, coords[-1][1]))
        coords.append((x, sy(n)))
    if len(series) == 1:
        coords.append((right, sy(series[0][1])))
    dots = [(sx(w.timestamp()), sy(n), f"{w:%Y-%m-%d %H:%M}: {n}") for w, n in series] if len(series) <= 60 else []
    middle = series[len(series) // 2][0]
    fmt = "%m-%d %H:%M" if t1 - t0 <= 3 * 86400 else "%Y-%m-%d"
    x_ticks = [(sx(t0), series[0][0].strftime(fmt))]
    if len(series) > 2:
        x_ticks.append((sx(middle.timestamp()), middle.strftime(fmt)))
    if len(series) > 1:
        x_ticks.append((sx(t1), series[-1][0].strftime(fmt)))
    y_ticks = [(sy(v), f"{v:,}") for v in sorted({0, y_max // 2, y_max})]
    return LineChart(
        title=title,
        width=width,
        height=height,
        points=" ".join(f"{x},{y}" for x, y in coords),
        dots=dots,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        last=series[-1][1],
    )


# --- the pages ------------------------------------------------------------------------------------------


def _manager_project(request: HtmxHttpRequest, slug: str, page: str) -> Project:
    return selectors.manager_project(request.user, slug, f"Only the project's managers see its {page}.")


def _timeline_chart(timeline: Sequence[tuple[datetime, int]]) -> LineChart | None:
    return line_chart("Annotations so far (cumulative)", timeline)


def _percent(agreement: selectors_quality.Agreement | None) -> float | None:
    return agreement.percent if agreement is not None else None


def quality_context(report: selectors_quality.QualityReport) -> dict[str, Any]:
    """The report as template rows (templates cannot index by a variable) and charts."""
    names = dict(report.judges)
    aspects = list(report.project.aspects or [])
    judges = [name for _, name in report.judges]
    pairs = list(report.ai_ai)
    pair_names = [f"{names[a]} vs {names[b]}" for a, b in pairs]
    slice_rows = [
        {
            "slice": row.slice,
            "items": row.items,
            "humans": row.humans,
            "small": row.small,
            "judges": [row.judges.get(j) for j, _ in report.judges],
            "pairs": [row.judge_pairs.get(p) for p in pairs],
        }
        for row in report.slices
    ]
    groups: dict[str, list[selectors_quality.SliceRow]] = {}
    for row in report.slices:
        groups.setdefault(row.slice.group, []).append(row)
    series = ["humans (pairs agreeing)", *(f"{n} vs human majority" for n in judges)]
    slice_charts = [
        bar_chart(
            f"Agreement by {group}",
            [
                (row.slice.value, [row.humans.percent, *(_percent(row.judges.get(j)) for j, _ in report.judges)])
                for row in rows
            ],
            series,
        )
        for group, rows in groups.items()
    ]
    consistency = [
        {
            "name": names.get(c.judge) or str(c.judge),
            "source": c.source,
            "overall": c.overall,
            "aspects": [c.per_aspect.get(a) for a in aspects],
        }
        for c in report.consistency
    ]
    judge_names_all = {c.judge: names.get(c.judge) for c in report.consistency}
    consistency_chart = (
        bar_chart(
            "Position consistency (both orders give the same winner, every aspect)",
            [(str(judge_names_all[c.judge] or c.judge), [c.overall.percent]) for c in report.consistency],
            ["consistent"],
        )
        if report.consistency
        else None
    )
    rated = [a for a in report.annotators if a.consensus is not None and a.consensus.compared]
    annotator_chart = (
        bar_chart(
            f"Agreement with the leave-one-out majority ({report.aspect})",
            [(a.name, [a.consensus.rate if a.consensus else None]) for a in rated[:40]],
            ["agrees"],
        )
        if rated
        else None
    )
    return {
        "report": report,
        "aspects": aspects,
        "human_rows": [(a, report.humans_by_aspect[a]) for a in aspects],
        "selected_humans": report.humans_by_aspect.get(report.aspect),
        "judge_names": judges,
        "human_ai_rows": [(name, [report.human_ai[j][a] for a in aspects]) for j, name in report.judges],
        "ai_ai_rows": [(names[a], names[b], [report.ai_ai[(a, b)][x] for x in aspects]) for a, b in pairs],
        "pair_names": pair_names,
        "slice_rows": slice_rows,
        "slice_charts": slice_charts,
        "consistency": consistency,
        "consistency_chart": consistency_chart,
        "annotator_chart": annotator_chart,
        "timeline_chart": _timeline_chart(report.timeline),
        "small_slice": selectors_quality.SMALL_SLICE,
        "top_values": selectors_quality.TOP_VALUES,
    }


@require_GET
def quality_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug, "agreement figures")
    report = selectors_quality.quality_report(project, request.GET.get("aspect"))
    context = {"project": project, "role": Membership.MANAGER, **quality_context(report)}
    return render(request, "webapp/quality.html", context)


@require_GET
def progress_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The whole page, or (htmx polling every 5 s) its live partial."""
    project = _manager_project(request, slug, "progress")
    summary = selectors_quality.progress_summary(project)
    context = {
        "project": project,
        "role": Membership.MANAGER,
        "summary": summary,
        "timeline_chart": _timeline_chart(summary.timeline),
    }
    template = "webapp/progress.html#live" if request.htmx else "webapp/progress.html"
    return render(request, template, context)


def _f(value: Decimal | None) -> float:
    return float(value or 0)


@require_GET
def costs_page(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    project = _manager_project(request, slug, "costs")
    costs = selectors_quality.cost_summary(project)
    chart = stacked_chart(
        "Spent and still to spend",
        [
            ("Human", [_f(costs.human_spent), _f(costs.human_remaining)]),
            ("AI", [_f(costs.ai_spent), _f(costs.ai_remaining)]),
            ("Total", [_f(costs.spent), _f(costs.remaining)]),
        ],
        ["spent", "projected to finish"],
    )
    context = {
        "project": project,
        "role": Membership.MANAGER,
        "costs": costs,
        "chart": chart,
        "expert_setting": selectors_quality.EXPERT_COST_SETTING,
    }
    return render(request, "webapp/costs.html", context)
