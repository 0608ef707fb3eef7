"""Every figure of a run as HTML, drawn from the run directory alone (no model is loaded).

``render_run(run_dir, out_dir)`` writes one HTML file per figure (plotly.js written once beside
them) plus ``report.html``; ``html_report(run_dir)`` returns that one self-contained page:
figures with plotly.js inlined once, the summary table, the bias table with confidence
intervals, the most drifted probe texts, the resolved config, where the run was made (its
summary's provenance: code, device, CPU, the library versions it ran with) and the packages
that drew the page. The figures are those of the app's tabs, drawn by the one builder
(:mod:`lab.plots.run`); the tables by :func:`lab.plots.tables.html_table`.
"""

from __future__ import annotations

import html
import platform
from importlib import metadata
from pathlib import Path

import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from lab import plots
from lab.evidence import sentences, verdicts
from lab.plots import run as run_plots
from lab.plots.evidence import stability_figures
from lab.plots.run import RunData
from lab.plots.tables import dict_rows, html_table
from lab.runs import provenance
from lab.runs import store as runs

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "numpy",
    "scikit-learn",
    "plotly",
    "gradio",
)


def run_figures(run_dir: str | Path) -> dict[str, go.Figure]:
    """{name: figure} for every figure of the run (:data:`lab.plots.run.FIGURES`)."""
    return _figures(RunData(run_dir))


def _figures(data: RunData) -> dict[str, go.Figure]:
    return run_plots.run_figures(data, run_plots.FIGURES, compute_embedding=True)


def render_run(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.html`` per figure (plotly.min.js once, beside them) and ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    data = RunData(run_dir)
    figs = _figures(data)
    for name, fig in figs.items():
        path = out / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="directory", full_html=True)
        paths.append(path)
    report = out / "report.html"
    runs.atomic_write_text(report, _page(data, figs))
    paths.append(report)
    return paths


def _table(rows: list[dict], columns: list[str]) -> str:
    return html_table(columns, dict_rows(rows, columns), missing="", empty="none")


def _summary_rows(summary: dict | None) -> tuple[list[dict], list[str]]:
    arms = (summary or {}).get("arms") or {}
    rows, cols = [], ["arm"]
    for arm, vals in arms.items():
        flat = {k: v for k, v in (vals or {}).items() if not isinstance(v, (dict, list))}
        rows.append({"arm": arm, **flat})
        cols += [k for k in flat if k not in cols]
    return rows, cols


def _versions() -> list[dict]:
    rows = [{"package": "python", "version": platform.python_version()}]
    for name in PACKAGES:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return rows


def _drift_rows(probes: dict, snaps: dict) -> list[dict]:
    from lab.analysis import top_drifted

    if not probes:
        return []
    rows = []
    for arm, snap in snaps.items():
        if snap.drift_per_text is None or len(snap.drift_per_text) != len(probes["texts"]):
            continue
        for text, kl in top_drifted(snap, probes["texts"], n=5):
            rows.append({"arm": arm, "KL(base || arm)": kl, "probe text": text})
    return rows


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:12px;font-size:12px;overflow:auto}
.none{color:#777}
"""


def html_report(run_dir: str | Path, figures: dict[str, go.Figure] | None = None) -> str:
    """One self-contained HTML page for the run (plotly.js inlined once; works offline).

    ``figures``: the run's figures when already drawn (``run_figures``), else drawn here.
    """
    data = RunData(run_dir)
    return _page(data, figures if figures is not None else _figures(data))


def _benchmarks_html(events: list[dict]) -> list[str]:
    """For each published benchmark scored in the run: its name, its known limitation and the
    exact scoring convention used (so a number is never read without them)."""
    from lab.bias.benchmarks import BENCHMARKS

    scored = {
        str(score).split("/", 1)[0]
        for e in events
        if e.get("kind") == "eval" and isinstance(e.get("bias"), dict)
        for score in e["bias"]
    }
    parts = []
    for kind, b in BENCHMARKS.items():
        if kind in scored:
            parts.append(
                f"<h3>{html.escape(b['title'])}</h3><p><b>Known limitation:</b> "
                f"{html.escape(b['limitation'])}</p><p><b>Scoring convention:</b> "
                f"{html.escape(b['convention'])}</p>"
            )
    return ["<h2>Published benchmarks in this run</h2>", *parts] if parts else []


def _verdicts_html(run_dir: Path, summary: dict) -> str:
    """One sentence per metric and comparison (difference, CI, p, n), from the item records."""
    ev = verdicts.run_evidence(run_dir)
    if ev is None:
        return "<p>This run has no per-item records, so no paired differences.</p>"
    if not ev["versus_arm"] and not ev["versus_base"]:
        return "<p>No comparable items in this run.</p>"
    rates = sentences.learning_rates_text(summary)
    parts = [f"<p><i>{html.escape(rates)}</i></p>"] if rates else []
    for title, short, lines in sentences.evidence_sections(ev):
        if title:
            parts.append(f"<h3>{html.escape(title)}</h3>")
        parts += [
            f"<p>{'<b>In short:</b> ' if i == 0 else ''}{html.escape(x)}</p>"
            for i, x in enumerate(short)
        ]
        parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    series = {k: v for k, v in (ev.get("over_training") or {}).items() if len(v) > 1}
    figs = stability_figures(series)
    if figs:  # each comparison at every eval point: did its sign hold during training?
        parts.append("<h3>Over training</h3>")
        parts += [
            f.to_html(full_html=False, include_plotlyjs=False, default_height="300px")
            for f in figs.values()
        ]
    return "".join(parts)


def _page(data: RunData, figs: dict[str, go.Figure]) -> str:
    run, step = data.run, data.step
    summary = run.summary or {}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>BA-LoRA Lab run {html.escape(run.run_id)}</title><style>{_CSS}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>Run {html.escape(run.run_id)}</h1>",
        f"<p>status: <b>{html.escape(str(summary.get('status', 'unknown')))}</b>"
        + (f" · error: {html.escape(str(summary['error']))}" if summary.get("error") else "")
        + f" · steps: {html.escape(str(summary.get('steps_done', '?')))} / {html.escape(str(summary.get('steps_total', '?')))}"
        + (f" · analysis at step {step}" if step is not None else "")
        + "</p>",
        "<h2>What changed</h2>",
        _verdicts_html(run.path, summary),
        "<h2>Summary</h2>",
        _table(*_summary_rows(summary)),
        "<h2>Bias scores (95% confidence intervals)</h2>",
        _table(plots.bias_rows(run.events), ["arm", "score", "value", "ci_low", "ci_high", "n"]),
        *_benchmarks_html(run.events),
        "<h2>Figures</h2>",
    ]
    for name, fig in figs.items():
        parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, default_height="480px"))
    parts += [
        "<h2>Most drifted probe texts</h2>",
        _table(_drift_rows(data.probes, data.snaps), ["arm", "KL(base || arm)", "probe text"]),
        "<h2>Config</h2>",
        f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>",
        "<h2>Where the run was made</h2>",
        _table(provenance.describe(summary), ["what", "value"]),
        "<h2>Packages that drew this report</h2>",
        _table(_versions(), ["package", "version"]),
        "</body></html>",
    ]
    return "\n".join(parts)
