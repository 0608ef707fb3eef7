"""Numbers -> plotly figures. Imports neither torch nor gradio.

Every builder works from the run's events and saved analysis arrays alone (no model) and
returns a figure for any input: with nothing to draw yet it returns ``empty_figure(message)``.
Arms have fixed colours from plotly's D3 sequence (base grey, lora blue, pissa orange, balora
green) in every figure.

- ``common``    colours, the empty figure
- ``training``  loss decomposition (raw and weighted), eval metrics, drift from the base model
- ``spectra``   singular value spectra, intruder dimensions, joint t-SNE panels
- ``bias``      bias scores with confidence intervals, Pareto plots
- ``evidence``  paired differences between arms (forest plot)
- ``run``       a run directory -> all its figures: the builder of the app's tabs and the report
- ``tables``    rows -> an HTML table
"""

from lab.plots.bias import (
    MIN_N,
    bias_figure,
    bias_rows,
    pareto_figure,
    pareto_front,
    reliable,
    score_scale,
)
from lab.plots.common import (
    ARM_COLORS,
    ARM_ORDER,
    LOSS_TERMS,
    arm_color,
    describe,
    empty_figure,
)
from lab.plots.spectra import adapter_modules, intruders_figure, spectra_figure, tsne_figure
from lab.plots.training import drift_figure, loss_figure, metric_figure, metric_keys

__all__ = [
    "MIN_N",
    "reliable",
    "score_scale",
    "ARM_COLORS",
    "ARM_ORDER",
    "LOSS_TERMS",
    "adapter_modules",
    "arm_color",
    "bias_figure",
    "bias_rows",
    "describe",
    "drift_figure",
    "empty_figure",
    "intruders_figure",
    "loss_figure",
    "metric_figure",
    "metric_keys",
    "pareto_figure",
    "pareto_front",
    "spectra_figure",
    "tsne_figure",
]
