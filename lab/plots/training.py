"""Training curves: the loss decomposition, eval metrics and the drift from the base model."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.common import (
    LAYOUT,
    LOSS_TERMS,
    SUBPLOT_TITLE_SIZE,
    TERM_TITLES,
    TERM_UNITS,
    arm_style,
    by_arm,
    empty_figure,
    number,
    of_kind,
)


def loss_figure(events: list[dict], weighted: bool = False) -> go.Figure:
    """Total loss, task loss and the three regularizer terms per arm over steps.

    ``weighted``: the terms as added to the loss (lambda x raw) instead of raw. A term with no
    value for an arm is drawn as a note "inactive: reason" in its panel.
    """
    train = of_kind(events, "train")
    if not train:
        return empty_figure("No training steps yet")
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=[
            TERM_TITLES[t]
            + (" (weighted)" if weighted and t in ("consistency", "diversity", "svd") else "")
            for t in LOSS_TERMS
        ],
        horizontal_spacing=0.08,
        vertical_spacing=0.16,
    )
    shown: set[str] = set()
    arms = by_arm(train)
    for k, term in enumerate(LOSS_TERMS):
        row, col = divmod(k, 3)
        reasons: dict[str, str] = {}
        for arm, evs in arms.items():
            xs, ys = [], []
            for e in evs:
                raw = e.get(term)
                if weighted and term in ("consistency", "diversity", "svd"):
                    raw = (e.get("weighted") or {}).get(term)
                y = number(raw)
                if y is not None:
                    xs.append(e["step"])
                    ys.append(y)
                elif term in (e.get("inactive") or {}):
                    reasons[arm] = str(e["inactive"][term])
            if not xs:
                continue
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers" if len(xs) < 3 else "lines",
                    name=arm,
                    legendgroup=arm,
                    showlegend=arm not in shown,
                    **arm_style(arm),
                ),
                row=row + 1,
                col=col + 1,
            )
            shown.add(arm)
        if reasons:
            text = "<br>".join(f"{arm} inactive: {why}" for arm, why in reasons.items())
            axis = "" if k == 0 else str(k + 1)
            fig.add_annotation(
                text=text,
                xref=f"x{axis} domain",
                yref=f"y{axis} domain",
                x=0.5,
                y=0.5,
                showarrow=False,
                font={"size": 10, "color": "#555"},
            )
    for k, term in enumerate(LOSS_TERMS):
        row, col = divmod(k, 3)
        fig.update_yaxes(title_text=TERM_UNITS[term], row=row + 1, col=col + 1)
    fig.update_annotations(font_size=SUBPLOT_TITLE_SIZE)
    fig.update_layout(
        title="Loss and its terms" + (" (λ × term)" if weighted else " (as computed)"),
        height=600,
        **LAYOUT,
    )
    fig.update_layout(legend_y=-0.12)
    fig.update_xaxes(title_text="step", row=2)
    fig.update_xaxes(title_text="step", row=1, col=3)
    return fig


def metric_keys(events: list[dict]) -> list[str]:
    """The numeric keys of the eval events (task metrics, drift, spectra summaries), sorted."""
    keys: set[str] = set()
    for e in of_kind(events, "eval"):
        keys.update(
            k
            for k, v in e.items()
            if k not in ("arm", "step", "kind", "seconds") and number(v) is not None
        )
    return sorted(keys)


def _eval_series(
    events: list[dict], key: str, skip_base: bool = False
) -> dict[str, tuple[list, list]]:
    out = {}
    for arm, evs in by_arm(of_kind(events, "eval")).items():
        if skip_base and arm == "base":
            continue
        pts = [(e["step"], number(e.get(key))) for e in evs]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            out[arm] = ([x for x, _ in pts], [y for _, y in pts])
    return out


def metric_figure(events: list[dict], key: str = "task_metric") -> go.Figure:
    """``key`` of the eval events per arm over steps; the base model as a dashed line."""
    series = _eval_series(events, key)
    if not series:
        return empty_figure(f"No evaluation with '{key}' yet")
    steps = [x for xs, _ in series.values() for x in xs]
    lo, hi = min(steps), max(steps)
    fig = go.Figure()
    for arm, (xs, ys) in series.items():
        if arm == "base":
            xb = [lo, hi] if len(xs) == 1 else xs
            yb = [ys[0], ys[0]] if len(xs) == 1 else ys
            fig.add_trace(
                go.Scatter(
                    x=xb,
                    y=yb,
                    mode="lines",
                    name="base",
                    **arm_style("base"),
                )
            )
        else:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=arm, **arm_style(arm)))
    if set(series) <= {"base"}:
        fig.add_annotation(
            text="the arms appear at the first eval point after step 0",
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            showarrow=False,
            font={"size": 13, "color": "#555"},
        )
    title = METRIC_TITLES.get(key, key.replace("_", " "))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title=title, **LAYOUT)
    return fig


METRIC_TITLES = {"task_metric": "Task metric on the test split"}


def drift_figure(events: list[dict]) -> go.Figure:
    """KL(base || arm) per token on the held-out probe texts at each eval point, per arm."""
    series = _eval_series(events, "kl_to_base", skip_base=True)
    if not series:
        return empty_figure(
            "No drift measured yet (it appears at the first eval point after step 0)"
        )
    fig = go.Figure()
    for arm, (xs, ys) in series.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=arm, **arm_style(arm)))
    fig.update_layout(
        title="Drift from the base (held-out texts)",
        xaxis_title="step",
        yaxis_title="KL(base‖arm) per token, nats",
        **LAYOUT,
    )
    return fig
