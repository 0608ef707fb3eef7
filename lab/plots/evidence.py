"""Forest plot of verdict rows, and each comparison over training (:func:`stability_figures`).

Forest plot: each paired difference (arm a - arm b) with its confidence
interval, one line per metric and comparison, a zero line, n in the label and the hover.

Rates (percentage points) and nats never share an axis: each unit gets its own panel. Each
comparison has one colour from plotly's own qualitative sequence; a filled marker is
significant after Holm's adjustment, an open one is not. With several seeds, a small cross
marks each seed's own difference on the row, so a pooled interval that one seed carries (or
seeds that disagree in sign) shows at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.evidence.sentences import sample_size, seed_diffs, verdict_text
from lab.evidence.verdicts import arm_display
from lab.plots.common import LAYOUT, empty_figure

UNITS = {"points": "percentage points", "nats": "nats"}


def _row_dict(row) -> dict | None:
    r = row.to_dict() if hasattr(row, "to_dict") else row
    if not isinstance(r, Mapping):
        return None
    diff = r.get("diff")
    if not isinstance(diff, (int, float)) or not math.isfinite(diff):
        return None
    return dict(r)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _name(comparison: tuple[str, str]) -> str:
    return f"{arm_display(comparison[0])} − {arm_display(comparison[1])}"


def _label(r: dict) -> str:
    """The y label of a row: metric, comparison and n."""
    return f"{r['label']} · {_name((r['arm_a'], r['arm_b']))} ({sample_size(r)})"


def _seed_points(r: dict) -> list[dict]:
    """Each seed's difference of a row ({"seed", "diff"}), when the row has several seeds."""
    points = seed_diffs(r)
    return points if len(points) > 1 else []


def _row_traces(part: list[dict], name: str, colour: str, unit: str, legend: bool) -> list:
    """The traces of one comparison's rows in one panel: each difference with its interval
    (filled when significant after Holm), and a small cross for each seed's own difference."""
    xs = [float(r["diff"]) for r in part]
    up = [float(r["ci_high"]) - x if _finite(r.get("ci_high")) else 0.0 for r, x in zip(part, xs)]
    down = [x - float(r["ci_low"]) if _finite(r.get("ci_low")) else 0.0 for r, x in zip(part, xs)]
    hover = [
        f"{verdict_text(r)}<br>p = {r['p']:.3g}, Holm p = {r['p_holm']:.3g}, "
        f"n = {r['n']}, seeds = {r['n_seeds']}"
        + (f", MDD = {r['mdd']:.3g}" if _finite(r.get("mdd")) else "")
        for r in part
    ]
    traces = [
        go.Scatter(
            x=xs, y=[_label(r) for r in part], mode="markers", name=name, legendgroup=name,
            showlegend=legend,
            marker={"color": colour, "size": 10, "line": {"color": colour, "width": 2},
                    "symbol": ["circle" if r.get("significant") else "circle-open" for r in part]},
            error_x={"type": "data", "symmetric": False, "array": up, "arrayminus": down,
                     "color": colour},
            hovertext=hover, hoverinfo="text",
        )
    ]  # fmt: skip
    seeds = [(d, _label(r)) for r in part for d in _seed_points(r)]
    if seeds:  # each seed's own difference beside the pooled interval
        traces.append(
            go.Scatter(
                x=[float(d["diff"]) for d, _ in seeds], y=[y for _, y in seeds], mode="markers",
                name=f"{name}: each seed", legendgroup=name, showlegend=False,
                marker={"color": colour, "size": 7, "symbol": "x-thin",
                        "line": {"color": colour, "width": 2}},
                hovertext=[f"seed {d['seed']}: {d['diff']:+.3g} {UNITS.get(unit, unit)}"
                           for d, _ in seeds],
                hoverinfo="text",
            )
        )  # fmt: skip
    return traces


def forest_figure(rows: Sequence, title: str | None = None) -> go.Figure:
    """The verdict rows of ``lab.evidence.verdicts.compare_arms`` (objects or their dicts) as a forest
    plot; an empty figure with a message when there is nothing to draw."""
    rows = [r for r in (_row_dict(x) for x in rows or []) if r is not None]
    if not rows:
        return empty_figure("No paired differences yet")
    units = list(dict.fromkeys(r["unit"] for r in rows))
    comparisons = list(dict.fromkeys((r["arm_a"], r["arm_b"]) for r in rows))
    palette = plotly.colors.qualitative.Plotly
    colour = {c: palette[i % len(palette)] for i, c in enumerate(comparisons)}
    per_unit = {u: [r for r in rows if r["unit"] == u] for u in units}
    fig = make_subplots(
        rows=len(units),
        cols=1,
        row_heights=[len(per_unit[u]) for u in units],
        vertical_spacing=0.12 if len(units) > 1 else 0.0,
        subplot_titles=[f"difference in {UNITS.get(u, u)}" for u in units],
    )
    shown = set()
    for i, unit in enumerate(units, start=1):
        mine = per_unit[unit]
        for comp in comparisons:
            part = [r for r in mine if (r["arm_a"], r["arm_b"]) == comp]
            if not part:
                continue
            name = _name(comp)
            for trace in _row_traces(part, name, colour[comp], unit, name not in shown):
                fig.add_trace(trace, row=i, col=1)
            shown.add(name)
        fig.add_vline(x=0, line={"color": "#444", "dash": "dash", "width": 1}, row=i, col=1)
        fig.update_yaxes(  # rows in the given order (metric by metric), top to bottom
            categoryorder="array", categoryarray=[_label(r) for r in mine],
            autorange="reversed", automargin=True, row=i, col=1,
        )  # fmt: skip
    conf = rows[0].get("stats", {}).get("confidence") or 0.95
    fig.update_layout(
        title=title or f"Paired differences (arm − other arm) with {conf:.0%} intervals",
        height=max(320, 120 + 34 * len(rows) + 60 * len(units)),
        hoverlabel={"align": "left"},
        **LAYOUT,
    )
    return fig


def stability_figures(series: Mapping) -> dict[str, go.Figure]:
    """``{metric label: figure}`` of ``lab.evidence.stability.over_training``: per metric, each
    comparison's difference "in these runs" and its 95% interval (a band) over the eval steps,
    a zero line; a comparison whose sign changed during training is named in the legend."""
    from lab.evidence.stability import sign_change  # the flag the verdicts carry

    by_metric: dict[str, list] = {}
    for (_metric, arm_a, arm_b), points in (series or {}).items():
        pts = [p for p in points if _finite(p.get("diff"))]
        if pts:
            by_metric.setdefault(pts[0]["label"], []).append(((arm_a, arm_b), pts))
    palette = plotly.colors.qualitative.Plotly
    out = {}
    for label, comps in by_metric.items():
        fig = go.Figure()
        for i, (comp, pts) in enumerate(comps):
            colour, name = palette[i % len(palette)], _name(comp)
            if sign_change(pts):
                name += " (sign changed)"
            steps = [p["step"] for p in pts]
            lo = [p["ci_low"] if _finite(p.get("ci_low")) else p["diff"] for p in pts]
            hi = [p["ci_high"] if _finite(p.get("ci_high")) else p["diff"] for p in pts]
            fig.add_trace(go.Scatter(
                x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", fillcolor=colour,
                opacity=0.2, line={"width": 0}, hoverinfo="skip", showlegend=False,
                legendgroup=name,
            ))  # fmt: skip
            fig.add_trace(go.Scatter(
                x=steps, y=[p["diff"] for p in pts], mode="lines+markers", name=name,
                legendgroup=name, line={"color": colour},
                hovertext=[f"step {p['step']}: {p['diff']:+.3g} [{lo_:+.3g}, {hi_:+.3g}]"
                           for p, lo_, hi_ in zip(pts, lo, hi)], hoverinfo="text",
            ))  # fmt: skip
        unit = comps[0][1][0]["unit"]
        fig.add_hline(y=0, line={"color": "#444", "dash": "dash", "width": 1})
        fig.update_layout(
            title=f"{label}: difference over training (in these runs, 95% interval)",
            xaxis_title="step", yaxis_title=UNITS.get(unit, unit), height=300, **LAYOUT,
        )  # fmt: skip
        out[label] = fig
    return out
