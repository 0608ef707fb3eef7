"""Shared pieces of the figure builders: fixed arm colours, number filtering, the empty figure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from lab.arms import ARM_ORDER, arm_key, kind_of, unseeded  # noqa: F401  (re-exported for the figure modules)

# Arm colours: the Okabe-Ito palette (Okabe & Ito 2008), chosen to stay apart under the common
# colour-vision deficiencies (tests/plots/test_palette.py simulates deuteranopia and protanopia
# with colorspacious): base dark grey, lora blue, pissa orange, balora bluish green.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#e69f00",
    "sky_blue": "#56b4e9",
    "bluish_green": "#009e73",
    "yellow": "#f0e442",
    "blue": "#0072b2",
    "vermillion": "#d55e00",
    "reddish_purple": "#cc79a7",
}
ARM_COLORS = {
    "base": "#555555",
    "lora": OKABE_ITO["blue"],
    "pissa": OKABE_ITO["orange"],
    "balora": OKABE_ITO["bluish_green"],
}
# Other arms take the Okabe-Ito colours the plain arms leave free.
_EXTRA = [OKABE_ITO[k] for k in ("vermillion", "reddish_purple", "sky_blue", "black")]
# Regularized grid arms (balora@L1,L2,L3): greens of the balora family, light to dark.
_GRID = ["#7fd8b8", "#33b38a", "#009e73", "#007a59", "#00573f"]
# Colour is never the only cue: each arm kind has a marker, and the seeds of one arm share its
# hue and differ in dash (a one-seed run: each kind its own dash).
ARM_SYMBOLS = {"base": "x", "lora": "circle", "pissa": "square", "balora": "diamond"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
# Classes (t-SNE) take a palette disjoint from the arm colours above, plus a symbol each, so a
# class is never read as an arm: plotly's Dark2 without its orange, green and grey.
LABEL_COLORS = [plotly.colors.qualitative.Dark2[i] for i in (2, 3, 5, 6, 0)]
LABEL_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "x"]
LOSS_TERMS = ("loss", "task_loss", "consistency", "diversity", "svd")
TERM_TITLES = {  # short: three panels side by side must fit a 420 px phone
    "loss": "total loss",
    "task_loss": "task loss",
    "consistency": "consistency",
    "diversity": "diversity",
    "svd": "svd",
}
TERM_UNITS = {  # y-axis titles of the loss panels: what the term is, and its unit
    "loss": "nats",
    "task_loss": "nats",
    "consistency": "T²·KL(teacher‖arm), nats",
    "diversity": "−entropy, nats (NLU: Σ cov²)",
    "svd": "−top-k share of spectrum",
}
# The legend lies under the plot, so a phone's width goes to the data, not to the legend.
LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 50, "r": 20, "t": 60, "b": 40},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
}
SUBPLOT_TITLE_SIZE = 12  # panel titles of multi-panel figures


def arm_color(arm: str) -> str:
    """A fixed colour per arm: the plain arms by name, ``balora@...`` grid arms from the
    balora family (the same arm name always gets the same colour), anything else by hash.
    Every seed of an arm (``lora#s0``, ``lora#s1``) takes the arm's colour."""
    arm = unseeded(arm)[0]
    if arm in ARM_COLORS:
        return ARM_COLORS[arm]
    if kind_of(arm) == "balora":  # a balora@L1,L2,L3 grid arm
        return _GRID[sum(map(ord, arm)) % len(_GRID)]
    return _EXTRA[sum(map(ord, arm)) % len(_EXTRA)]


def arm_style(arm: str) -> dict:
    """Colour, dash and marker of an arm's traces: ``line={"color", "dash"}`` and
    ``marker={"symbol", "color"}`` for a plotly Scatter."""
    plain, seed = unseeded(arm)
    kind = "base" if plain == "base" else kind_of(plain)
    order = ("lora", "pissa", "balora")
    shift = order.index(kind) if kind in order else len(order)
    dash = DASHES[(shift + (seed or 0)) % len(DASHES)] if plain != "base" else "longdash"
    color = arm_color(arm)
    return {
        "line": {"color": color, "dash": dash},
        "marker": {"symbol": ARM_SYMBOLS.get(kind, "circle"), "color": color},
    }


def number(x) -> float | None:
    """A finite float, or None for anything else (missing, null, NaN, text)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def empty_figure(message: str) -> go.Figure:
    """A blank figure that says ``message`` in the middle."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 15}
    )
    fig.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, **LAYOUT)
    return fig


def of_kind(events: Iterable[dict] | None, kind: str) -> list[dict]:
    return [
        e
        for e in (events or [])
        if isinstance(e, Mapping)
        and e.get("kind") == kind
        and "arm" in e
        and number(e.get("step")) is not None
    ]


def by_arm(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in sorted(events, key=lambda e: e["step"]):
        out.setdefault(str(e["arm"]), []).append(e)
    return dict(sorted(out.items(), key=lambda kv: arm_key(kv[0])))


def describe(fig: go.Figure, max_traces: int = 8) -> str:
    """A short text alternative of a figure for screen readers: its title, then per trace its
    name, how many points, and where it ends (or the message of an empty figure)."""
    title = fig.layout.title.text or ""
    parts = []
    for trace in list(fig.data)[:max_traces]:
        ys = [v for v in (trace.y if trace.y is not None else []) if number(v) is not None]
        xs = list(trace.x) if trace.x is not None else []
        name = trace.name or "series"
        if not ys:
            continue
        if trace.type == "bar":
            parts.append(f"{name}: {len(ys)} bars from {min(ys):.3g} to {max(ys):.3g}")
        else:
            end = f" at {xs[len(ys) - 1]}" if len(xs) >= len(ys) else ""
            parts.append(f"{name}: {len(ys)} points, last {ys[-1]:.3g}{end}")
    if len(fig.data) > max_traces:
        parts.append(f"and {len(fig.data) - max_traces} more series")
    if not parts:
        notes = [a.text for a in fig.layout.annotations if a.text]
        parts = notes[:1] or ["no data yet"]
    return (f"{title}: " if title else "") + "; ".join(parts) + "."
