"""Bias scores with confidence intervals and the Pareto plot of task metric against bias or drift."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from lab.plots.common import LAYOUT, arm_color, arm_key, by_arm, empty_figure, number, of_kind


def bias_rows(events: list[dict], step: int | None = None) -> list[dict]:
    """{arm, score, value, ci_low, ci_high, n} from the ``bias`` dict of the eval events of
    ``step`` (the latest eval of each arm by default; the base model's wherever it was measured)."""
    rows = []
    for arm, evs in by_arm(of_kind(events, "eval")).items():
        evs = [e for e in evs if isinstance(e.get("bias"), Mapping)]
        if step is not None and arm != "base":
            evs = [e for e in evs if e["step"] == step]
        if not evs:
            continue
        for score, v in evs[-1]["bias"].items():
            if isinstance(v, Mapping) and number(v.get("value")) is not None:
                rows.append(
                    {
                        "arm": arm,
                        "score": str(score),
                        "value": float(v["value"]),
                        "ci_low": number(v.get("ci_low")),
                        "ci_high": number(v.get("ci_high")),
                        "n": v.get("n"),
                    }
                )
    return rows


def bias_figure(rows: list[dict]) -> go.Figure:
    """Bias scores per arm as grouped bars with their confidence intervals as error bars."""
    rows = [
        r
        for r in rows or []
        if isinstance(r, Mapping)
        and number(r.get("value")) is not None
        and "arm" in r
        and "score" in r
    ]
    if not rows:
        return empty_figure("No bias scores yet")
    scores = list(dict.fromkeys(str(r["score"]) for r in rows))
    fig = go.Figure()
    for arm in sorted({str(r["arm"]) for r in rows}, key=arm_key):
        mine = {str(r["score"]): r for r in rows if str(r["arm"]) == arm}
        xs = [s for s in scores if s in mine]
        with_ci = [
            s
            for s in xs
            if number(mine[s].get("ci_low")) is not None
            and number(mine[s].get("ci_high")) is not None
        ]
        without = [s for s in xs if s not in with_ci]
        for part, shown in ((with_ci, True), (without, not with_ci)):
            if not part:
                continue
            ys = [float(mine[s]["value"]) for s in part]
            error = None
            if part is with_ci:  # asymmetric bars from the interval; none for rows without one
                up = [float(mine[s]["ci_high"]) - y for s, y in zip(part, ys)]
                down = [y - float(mine[s]["ci_low"]) for s, y in zip(part, ys)]
                error = {"type": "data", "symmetric": False, "array": up, "arrayminus": down}
            hover = [
                f"{arm} · {s}<br>{y:.3f} [{_fmt(mine[s].get('ci_low'))}, {_fmt(mine[s].get('ci_high'))}] n={mine[s].get('n')}"
                for s, y in zip(part, ys)
            ]
            fig.add_trace(
                go.Bar(
                    x=part,
                    y=ys,
                    name=arm,
                    legendgroup=arm,
                    showlegend=shown,
                    offsetgroup=arm,  # both parts of one arm share its slot in each group
                    marker_color=arm_color(arm),
                    error_y=error,
                    hovertext=hover,
                    hoverinfo="text",
                )
            )
    fig.update_layout(
        title="Bias scores with 95% confidence intervals",
        barmode="group",
        yaxis_title="score",
        **LAYOUT,
    )
    return fig


def _fmt(x) -> str:
    v = number(x)
    return "–" if v is None else f"{v:.3f}"


def pareto_front(
    xs: Sequence[float], ys: Sequence[float], x_better: str = "low", y_better: str = "high"
) -> list[int]:
    """Indices of the points no other point beats on both axes, ordered by x."""
    sx = 1 if x_better == "low" else -1
    sy = 1 if y_better == "low" else -1
    pts = [(sx * x, sy * y, i) for i, (x, y) in enumerate(zip(xs, ys))]
    front, best = [], math.inf
    for _x, y, i in sorted(pts):
        if y < best:
            front.append(i)
            best = y
    return sorted(front, key=lambda i: xs[i])


def pareto_figure(
    points: list[dict],
    x: str = "bias",
    y: str = "task_metric",
    *,
    x_better: str = "low",
    y_better: str = "high",
) -> go.Figure:
    """Points {arm, x, y, [label]} per arm, and the Pareto front (better on both axes)."""
    pts = [
        p
        for p in points or []
        if isinstance(p, Mapping) and number(p.get(x)) is not None and number(p.get(y)) is not None
    ]
    if not pts:
        return empty_figure(f"No runs with both '{x}' and '{y}' yet")
    fig = go.Figure()
    for arm in sorted({str(p.get("arm", "run")) for p in pts}, key=arm_key):
        mine = [p for p in pts if str(p.get("arm", "run")) == arm]
        fig.add_trace(
            go.Scatter(
                x=[p[x] for p in mine],
                y=[p[y] for p in mine],
                mode="markers",
                name=arm,
                marker={"size": 10, "color": arm_color(arm)},
                text=[str(p.get("label", "")) for p in mine],
                hovertemplate=f"%{{text}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra>{arm}</extra>",
            )
        )
    idx = pareto_front([float(p[x]) for p in pts], [float(p[y]) for p in pts], x_better, y_better)
    if len(idx) > 1:
        fig.add_trace(
            go.Scatter(
                x=[pts[i][x] for i in idx],
                y=[pts[i][y] for i in idx],
                mode="lines",
                name="Pareto front",
                line={"color": "#333", "dash": "dot"},
            )
        )
    fig.update_layout(
        title=f"{y} against {x}",
        xaxis_title=f"{x} ({x_better}er is better)",
        yaxis_title=f"{y} ({y_better}er is better)",
        **LAYOUT,
    )
    return fig
