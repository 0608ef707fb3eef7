"""Forest plot of verdict rows: each paired difference (arm a - arm b) with its confidence
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

from lab.evidence.verdicts import arm_display, sample_size, seed_diffs, verdict_text
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
            ys = [_label(r) for r in part]
            xs = [float(r["diff"]) for r in part]
            up = [
                float(r["ci_high"]) - x if _finite(r.get("ci_high")) else 0.0
                for r, x in zip(part, xs)
            ]
            down = [
                x - float(r["ci_low"]) if _finite(r.get("ci_low")) else 0.0
                for r, x in zip(part, xs)
            ]
            hover = [
                f"{verdict_text(r)}<br>p = {r['p']:.3g}, Holm p = {r['p_holm']:.3g}, "
                f"n = {r['n']}, seeds = {r['n_seeds']}"
                + (f", MDD = {r['mdd']:.3g}" if _finite(r.get("mdd")) else "")
                for r in part
            ]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in shown,
                    marker={
                        "color": colour[comp],
                        "size": 10,
                        "symbol": ["circle" if r.get("significant") else "circle-open" for r in part],
                        "line": {"color": colour[comp], "width": 2},
                    },
                    error_x={"type": "data", "symmetric": False, "array": up, "arrayminus": down,
                             "color": colour[comp]},
                    hovertext=hover,
                    hoverinfo="text",
                ),
                row=i,
                col=1,
            )  # fmt: skip
            shown.add(name)
            seeds = [(d, _label(r)) for r in part for d in _seed_points(r)]
            if seeds:  # each seed's own difference beside the pooled interval
                fig.add_trace(
                    go.Scatter(
                        x=[float(d["diff"]) for d, _ in seeds],
                        y=[y for _, y in seeds],
                        mode="markers",
                        name=f"{name}: each seed",
                        legendgroup=name,
                        showlegend=False,
                        marker={"color": colour[comp], "size": 7, "symbol": "x-thin",
                                "line": {"color": colour[comp], "width": 2}},
                        hovertext=[f"seed {d['seed']}: {d['diff']:+.3g} {UNITS.get(unit, unit)}"
                                   for d, _ in seeds],
                        hoverinfo="text",
                    ),
                    row=i,
                    col=1,
                )  # fmt: skip
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
