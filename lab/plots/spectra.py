"""Analysis figures: singular value spectra, intruder dimensions, the joint t-SNE panels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.common import (
    LABEL_COLORS,
    LABEL_SYMBOLS,
    LAYOUT,
    SUBPLOT_TITLE_SIZE,
    arm_color,
    arm_key,
    arm_style,
    empty_figure,
    number,
)


def _get(snap, name: str):
    return snap.get(name) if isinstance(snap, Mapping) else getattr(snap, name, None)


def _positive(values) -> tuple[list[int], list[float]]:
    v = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    idx = [i + 1 for i in range(len(v)) if np.isfinite(v[i]) and v[i] > 0]
    return idx, [float(v[i - 1]) for i in idx]


def _mean_spectrum(spectra: Mapping[str, Sequence[float]]) -> np.ndarray:
    rows = [
        np.sort(np.asarray(s, dtype=np.float64).reshape(-1))[::-1]
        for s in spectra.values()
        if len(s)
    ]
    if not rows:
        return np.zeros(0)
    width = max(len(r) for r in rows)
    padded = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return np.nanmean(padded, axis=0)


def adapter_modules(snaps: Mapping[str, object]) -> list[str]:
    """Module names with an adapter spectrum in any of ``snaps`` (for a module selector)."""
    names: set[str] = set()
    for snap in snaps.values():
        names.update((_get(snap, "adapter_spectra") or {}).keys())
    return sorted(names)


def spectra_figure(snaps: Mapping[str, object], module: str | None = None) -> go.Figure:
    """Left: normalized singular values of the probe logits per arm (log y). Right: singular
    values of each arm's adapter update, averaged over modules, or of ``module`` alone."""
    if not snaps:
        return empty_figure("No analysis snapshot yet")
    # short panel titles (two side by side fit a phone); the module goes under the axis
    where = module.removeprefix("base_model.model.") if module else "mean over modules"
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["output logits", "adapter update ΔW"],
        horizontal_spacing=0.1,
    )
    zero_arms = []
    for arm in sorted(snaps, key=arm_key):
        snap = snaps[arm]
        x, y = _positive(_get(snap, "output_spectrum"))
        if x:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=arm,
                    legendgroup=arm,
                    **arm_style(arm),
                ),
                row=1,
                col=1,
            )
        spectra = _get(snap, "adapter_spectra") or {}
        if module is not None:
            spectra = {module: spectra[module]} if module in spectra else {}
        if not spectra:
            continue
        x, y = _positive(_mean_spectrum(spectra))
        if x:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=f"{arm} update",
                    legendgroup=arm,
                    showlegend=False,
                    **arm_style(arm),
                ),
                row=1,
                col=2,
            )
        else:
            zero_arms.append(arm)
    if not fig.data:
        return empty_figure("The snapshots hold no spectra to draw")
    if zero_arms:
        fig.add_annotation(
            text=f"zero update: {', '.join(zero_arms)}",
            xref="x2 domain",
            yref="y2 domain",
            x=0.5,
            y=0.05,
            showarrow=False,
            font={"size": 11, "color": "#555"},
        )
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="index i", tickformat="d")
    fig.update_xaxes(title_text=f"index i ({where})", row=1, col=2)
    fig.update_yaxes(title_text="s_i / s_1", row=1, col=1)
    fig.update_annotations(font_size=SUBPLOT_TITLE_SIZE)
    fig.update_layout(title="Singular value spectra", **LAYOUT)
    return fig


def intruders_figure(snaps: Mapping[str, object]) -> go.Figure:
    """Intruder dimensions per adapted module (in network order) per arm."""
    data = {arm: _get(s, "intruders") or {} for arm, s in snaps.items()}
    data = {arm: d for arm, d in data.items() if d}
    if not data:
        return empty_figure("No intruder dimensions measured")
    fig = go.Figure()
    for arm in sorted(data, key=arm_key):
        names = list(data[arm])
        fig.add_trace(
            go.Bar(
                x=[n.removeprefix("base_model.model.") for n in names],
                y=[data[arm][n] for n in names],
                name=arm,
                marker_color=arm_color(arm),
            )
        )
    fig.update_layout(
        title="Intruder dimensions per module (top-10 singular vectors)",
        barmode="group",
        yaxis_title="count",
        xaxis={"showticklabels": len(fig.data[0].x) <= 40},
        **LAYOUT,
    )
    return fig


TSNE_MAX_COLS = 4  # panels per row: four stacked titles still fit side by side at 420 px
TSNE_ROW_PX = 300  # the height each further row of panels adds


def tsne_figure(
    embedding: Mapping | None,
    labels: Sequence[int] | np.ndarray | None,
    label_names: Sequence[str] | None = None,
) -> go.Figure:
    """One panel per arm on shared axes, points coloured by label; titles carry the silhouette
    score and the effective rank of the arm's features."""
    coords = (embedding or {}).get("coords") or {}
    coords = {
        arm: np.asarray(c, dtype=np.float64)
        for arm, c in coords.items()
        if np.asarray(c).ndim == 2 and len(c)
    }
    if not coords:
        return empty_figure("No joint embedding yet")
    n = len(next(iter(coords.values())))
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != n:
        return empty_figure(f"{n} points per arm but {len(labels)} labels")
    arms = sorted(coords, key=arm_key)
    sil = (embedding or {}).get("silhouette") or {}
    eff = (embedding or {}).get("eff_rank") or {}

    def title(arm: str) -> str:
        bits = []
        if number(sil.get(arm)) is not None:
            bits.append(f"silhouette {sil[arm]:.2f}")
        if number(eff.get(arm)) is not None:
            bits.append(f"eff. rank {eff[arm]:.1f}")
        return f"<b>{arm}</b>" + "".join(f"<br>{b}" for b in bits)  # stacked: fits 420 px

    cols = min(len(arms), TSNE_MAX_COLS)
    rows = -(-len(arms) // cols)  # several seeds: the panels wrap onto more rows
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[title(a) for a in arms],
        shared_yaxes=True,
        horizontal_spacing=0.03,
        vertical_spacing=0.3 / rows if rows > 1 else 0.0,
    )
    groups = [v.item() for v in np.unique(labels)]
    for k, arm in enumerate(arms):
        c = coords[arm]
        for j, g in enumerate(groups):
            pick = labels == g
            name = (
                str(label_names[int(g)])
                if label_names is not None and 0 <= int(g) < len(label_names)
                else f"label {g}"
            )
            fig.add_trace(
                go.Scatter(
                    x=c[pick, 0],
                    y=c[pick, 1],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=k == 0,
                    marker={
                        "size": 6,
                        "color": LABEL_COLORS[j % len(LABEL_COLORS)],
                        "symbol": LABEL_SYMBOLS[j % len(LABEL_SYMBOLS)],
                        "opacity": 0.8,
                    },
                ),
                row=k // cols + 1,
                col=k % cols + 1,
            )
    fig.update_annotations(font_size=11)  # the stacked panel titles
    fig.update_xaxes(matches="x")  # one coordinate system for every panel
    fig.update_yaxes(matches="y")
    method = "joint t-SNE" if (embedding or {}).get("method", "tsne") == "tsne" else "joint PCA"
    fig.update_layout(
        title=f"Hidden states of the probe texts ({method})",
        height=440 + TSNE_ROW_PX * (rows - 1),
        **LAYOUT,
    )
    return fig
