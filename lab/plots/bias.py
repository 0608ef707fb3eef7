"""Bias scores with confidence intervals and the Pareto plot of task metric against bias or drift."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.common import (
    LAYOUT,
    SUBPLOT_TITLE_SIZE,
    arm_color,
    arm_key,
    by_arm,
    empty_figure,
    number,
    of_kind,
)


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


MIN_N = 5  # a score over fewer items gets no interval (a bootstrap of 1-4 items is not one)


def score_scale(score: str) -> tuple[str, float]:
    """(panel, the value that means "no bias") of a bias score, from its name: preferences
    are shares with 0.5 neutral; log-odds, correlations, bias scores and rates have 0."""
    name = score.lower()
    if "corr" in name:
        return "correlation (0 = none)", 0.0
    if any(k in name for k in ("logodds", "likelihood_diff", "llr", "gap")):
        return "log-odds, nats (0 = none)", 0.0
    if any(k in name for k in ("stereo_pref", "pct_stereotype", "occupation_rate")):
        return "preference share (0.5 = none)", 0.5
    if name.split("/")[-1].startswith(("s_dis", "s_amb")) or "/s_dis" in name or "/s_amb" in name:
        return "bias score, −1…1 (0 = none)", 0.0
    return "rate (0 = none)", 0.0


def reliable(row: Mapping) -> bool:
    """A score measured on at least ``MIN_N`` items (an unknown n counts as enough)."""
    n = row.get("n")
    return not isinstance(n, (int, float)) or n >= MIN_N


def bias_figure(rows: list[dict]) -> go.Figure:
    """Bias scores per arm as points with their 95% intervals, one panel per scale, each with
    a dotted line at its "no bias" value; scores over fewer than ``MIN_N`` items are left out."""
    rows = [
        r
        for r in rows or []
        if isinstance(r, Mapping)
        and number(r.get("value")) is not None
        and "arm" in r
        and "score" in r
        and reliable(r)
    ]
    if not rows:
        return empty_figure("No bias scores yet")
    panels = list(dict.fromkeys(score_scale(str(r["score"])) for r in rows))
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        subplot_titles=[p for p, _ in panels],
        vertical_spacing=0.32 / max(1, len(panels)),
    )
    shown: set[str] = set()
    for k, (panel, neutral) in enumerate(panels, start=1):
        mine_rows = [r for r in rows if score_scale(str(r["score"]))[0] == panel]
        scores = list(dict.fromkeys(str(r["score"]) for r in mine_rows))
        for arm in sorted({str(r["arm"]) for r in mine_rows}, key=arm_key):
            mine = {str(r["score"]): r for r in mine_rows if str(r["arm"]) == arm}
            xs = [x for x in scores if x in mine]
            ys = [float(mine[x]["value"]) for x in xs]
            lo = [number(mine[x].get("ci_low")) for x in xs]
            hi = [number(mine[x].get("ci_high")) for x in xs]
            error = {
                "type": "data",
                "symmetric": False,
                "array": [0 if h is None else h - y for h, y in zip(hi, ys)],
                "arrayminus": [0 if v is None else y - v for v, y in zip(lo, ys)],
            }
            hover = [
                f"{arm} · {x}<br>{y:.3f} [{_fmt(a)}, {_fmt(b)}] n={mine[x].get('n')}"
                for x, y, a, b in zip(xs, ys, lo, hi)
            ]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=arm,
                    legendgroup=arm,
                    showlegend=arm not in shown,
                    offsetgroup=arm,
                    marker={"color": arm_color(arm), "size": 9},
                    error_y=error,
                    hovertext=hover,
                    hoverinfo="text",
                ),
                row=k,
                col=1,
            )
            shown.add(arm)
        fig.add_hline(y=neutral, line_dash="dot", line_color="#555", row=k, col=1)
    fig.update_annotations(font_size=SUBPLOT_TITLE_SIZE)
    fig.update_layout(
        title="Bias scores with 95% confidence intervals",
        scattermode="group",
        height=260 + 220 * len(panels),
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
        mine = _merge_coinciding([p for p in pts if str(p.get("arm", "run")) == arm], x, y)
        fig.add_trace(
            go.Scatter(
                x=[p[x] for p in mine],
                y=[p[y] for p in mine],
                mode="markers+text",  # every point carries its label, not only on hover
                name=arm,
                marker={"size": 10, "color": arm_color(arm)},
                text=[str(p.get("label", "")) for p in mine],
                textposition="top center",
                textfont={"size": 10},
                hovertemplate=f"%{{text}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra>{arm}</extra>",
            )
        )
    idx = pareto_front([float(p[x]) for p in pts], [float(p[y]) for p in pts], x_better, y_better)
    if idx:  # drawn even when one point dominates all the others
        fig.add_trace(
            go.Scatter(
                x=[pts[i][x] for i in idx],
                y=[pts[i][y] for i in idx],
                mode="lines+markers",
                name="Pareto front",
                line={"color": "#333", "dash": "dot"},
                marker={"symbol": "circle-open", "size": 16, "color": "#333"},
            )
        )
    names = {"bias": "bias (distance from none)", "drift": "drift KL(base‖arm)"}
    x_name, y_name = names.get(x, x.replace("_", " ")), names.get(y, y.replace("_", " "))
    fig.update_layout(
        title=f"{y_name} against {x_name}",
        xaxis_title=f"{x_name} ({x_better}er is better)",
        yaxis_title=f"{y_name} ({y_better}er is better)",
        **LAYOUT,
    )
    return fig


def _merge_coinciding(points: list[dict], x: str, y: str) -> list[dict]:
    """Points at the same place (to 4 digits) become one, labelled with all their labels, so
    that none hides another."""
    out: dict[tuple, dict] = {}
    for p in points:
        key = (round(float(p[x]), 4), round(float(p[y]), 4))
        if key in out:
            out[key] = {**out[key], "label": f"{out[key].get('label', '')} = {p.get('label', '')}"}
        else:
            out[key] = dict(p)
    return list(out.values())
