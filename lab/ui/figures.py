"""A run on disk -> the figures and tables the tabs show (through ``lab.plots``, no model).

``upto_step`` cuts a run at a step, which is how the classroom replay redraws the past.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from lab import plots, runs

LABELS = {
    "loss": "Loss and each regularizer term",
    "metric": "Task metric at eval points",
    "drift": "Drift from the base model (KL on held-out texts)",
    "spectra": "Singular value spectra",
    "tsne": "t-SNE of representations",
    "bias": "Bias scores with 95% CIs",
}
ORDER = ("loss", "metric", "drift", "spectra", "tsne", "bias")
PLACEHOLDER = "appears when a run is open"


class Panel(dict):
    """The plots of a run laid out the same way in every tab, each with a short text summary
    under it (for screen readers): ``{key: gr.Plot}`` plus ``alt[key]``."""

    def __init__(self, keys: tuple[str, ...]):
        super().__init__()
        self.keys_in_order = keys
        self.alt: dict[str, gr.Markdown] = {}

    def outputs(self) -> list:
        """The components a handler fills, in the order of :func:`panel_values`."""
        return [c for k in self.keys_in_order for c in (self[k], self.alt[k])]


def plot_panel(keys: tuple[str, ...] = ORDER, prefix: str = "") -> Panel:
    """The loss panels full width, metric and drift side by side (stacked on a phone), then
    spectra, t-SNE and bias full width; a text summary under every plot."""
    out = Panel(tuple(k for k in ORDER if k in keys))

    def plot(k: str) -> None:
        # a figure with a message from the start, never Gradio's empty placeholder box; at
        # least 320 px wide, so side-by-side plots stack on a phone instead of shrinking
        with gr.Column(min_width=320):
            out[k] = gr.Plot(
                plots.empty_figure(PLACEHOLDER), label=LABELS[k], elem_id=f"{prefix}fig-{k}"
            )
            out.alt[k] = gr.Markdown(
                f"{LABELS[k]}: {PLACEHOLDER}.",
                elem_id=f"{prefix}alt-{k}",
                elem_classes=["plot-alt"],
            )

    if "loss" in keys:
        plot("loss")
    with gr.Row():
        for k in ("metric", "drift"):
            if k in keys:
                plot(k)
    for k in ("spectra", "tsne", "bias"):
        if k in keys:
            plot(k)
    return out


def panel_values(figs: dict[str, Any], keys: tuple[str, ...]) -> list:
    """[figure, its text summary, ...] for :meth:`Panel.outputs` (a missing figure is skipped)."""
    out: list = []
    for k in ORDER:
        if k not in keys:
            continue
        fig = figs.get(k)
        if fig is None or not hasattr(fig, "layout"):
            out += [gr.skip(), gr.skip()]
        else:
            out += [fig, f"{LABELS[k]}. {plots.describe(fig)}"]
    return out


def panel_skip(keys: tuple[str, ...]) -> list:
    return [gr.skip(), gr.skip()] * sum(1 for k in ORDER if k in keys)


# The headline bias score of a task, and how far it is from "no bias".
HEADLINE = {"nlg": ("stereo_pref", 0.5), "nlu": ("flip_rate", 0.0)}


def cut(run: runs.Run, upto_step: int | None) -> runs.Run:
    if upto_step is None:
        return run
    events = [e for e in run.events if int(e.get("step", 0)) <= upto_step]
    return runs.Run(path=run.path, config=run.config, events=events, summary=run.summary)


RUN_FIGURES = ("loss", "metric", "drift", "spectra", "tsne")  # what the Train tab follows
ALL_FIGURES = (*RUN_FIGURES, "bias")  # a finished run (Classroom, Runs)


def run_figures(
    run: runs.Run,
    *,
    keys: tuple[str, ...] = RUN_FIGURES,
    upto_step: int | None = None,
    weighted: bool = False,
) -> dict[str, Any]:
    """The figures named in ``keys`` (loss, metric, drift, spectra, tsne, bias) from the run's
    files.

    ``weighted`` draws the regularizer terms as added to the loss (lambda x raw).
    """
    from lab import analysis  # torch and scikit-learn: loaded on first use, not at app start

    run = cut(run, upto_step)
    out: dict[str, Any] = {}
    if "loss" in keys:
        out["loss"] = plots.loss_figure(run.events, weighted=weighted)
    if "metric" in keys:
        out["metric"] = plots.metric_figure(run.events)
    if "drift" in keys:
        out["drift"] = plots.drift_figure(run.events)
    if "bias" in keys:
        out["bias"] = plots.bias_figure(plots.bias_rows(run.events))
    if "spectra" not in keys and "tsne" not in keys:
        return out
    steps = [s for s in analysis.analysis_steps(run.path) if upto_step is None or s <= upto_step]
    if "spectra" in keys:
        out["spectra"] = spectra_figure(run.path, steps)
    if "tsne" in keys:
        out["tsne"] = tsne_figure(run.path, [s for s in steps if s > 0])
    return out


def spectra_figure(run_dir: Path, steps: list[int]) -> Any:
    """Spectra of the latest analysed step, with the base model's (measured at step 0)."""
    from lab import analysis

    if not steps:
        return plots.empty_figure("spectra appear at the first eval point")
    return plots.spectra_figure(analysis.load_snapshots_with_base(run_dir, steps[-1]))


def tsne_figure(run_dir: Path, steps: list[int]) -> Any:
    """The joint t-SNE of the latest eval point that has one."""
    from lab import analysis

    for step in reversed(steps):
        emb = analysis.load_embedding(run_dir, step)
        if emb is not None:
            probes = analysis.load_probe_texts(run_dir) or {}
            labels = probes.get("labels")
            return plots.tsne_figure(emb, labels, probes.get("label_names"))
    return plots.empty_figure("t-SNE appears at the first eval point after step 0")


def pareto_figures(points: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Task metric against bias and against drift, one :func:`pareto_point` per finished run."""
    points = [p for p in points if p]
    if not points:
        empty = plots.empty_figure("points appear as the sweep's runs finish")
        return empty, empty
    return (
        plots.pareto_figure(points, x="bias", y="task_metric"),
        plots.pareto_figure(points, x="drift", y="task_metric"),
    )


def last_evals(run: runs.Run) -> dict[str, dict]:
    """The latest eval event of each arm (``base`` included)."""
    out: dict[str, dict] = {}
    for e in run.events:
        if e.get("kind") == "eval":
            out[e["arm"]] = e
    return out


BIAS_KEYS = ("arm", "score", "value", "ci_low", "ci_high", "n")


def bias_table(scored: list[dict]) -> list[list[Any]]:
    """[arm, score, value, ci_low, ci_high, n] rows of :func:`lab.plots.bias_rows`."""
    return [[r[k] for k in BIAS_KEYS] for r in scored]


def summary_markdown(run: runs.Run) -> str:
    s = run.summary or {}
    cfg = run.config or {}
    head = (
        f"**{run.path.name}** · {s.get('status', 'unknown')} · model "
        f"`{(cfg.get('model') or {}).get('name')}` · data `{Path(str((cfg.get('data') or {}).get('name'))).name}` · "
        f"{s.get('steps_done', '?')}/{s.get('steps_total', '?')} steps"
    )
    rows = []
    for arm, ev in last_evals(run).items():
        kl = ev.get("kl_to_base")
        rows.append(
            f"| {arm} | {_num(ev.get('task_metric'))} | {_num(kl)} | {_num(headline_bias(ev, cfg))} |"
        )
    if not rows:
        return head
    table = (
        "| arm | task metric | drift: KL(base‖arm) on held-out texts | bias (distance from none) |"
        "\n|---|---|---|---|\n"
    )
    err = f"\n\n**Error:** {s['error']}" if s.get("error") else ""
    return head + "\n\n" + table + "\n".join(rows) + err


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.4g}"


def headline_bias(ev: dict, config: dict) -> float | None:
    """|score - neutral| of the task's headline bias score (0 = no bias), or None."""
    name, neutral = HEADLINE.get(config.get("task", "nlg"), HEADLINE["nlg"])
    s = (ev.get("bias") or {}).get(name)
    return None if s is None else abs(float(s["value"]) - neutral)


def pareto_points(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every trained arm of a run as a point: its task metric, bias and drift, labelled with
    its lambdas (``balora@L1,L2,L3``) or its name."""
    from lab import arms as arm_specs

    run = runs.load_run(run_dir)
    reg = (run.config or {}).get("reg") or {}
    out = []
    for arm, ev in sorted(last_evals(run).items(), key=lambda kv: arm_specs.order_key(kv[0])):
        if arm == "base":
            continue
        _, lambdas = arm_specs.split(arm)
        if lambdas is None and arm == "balora":
            lambdas = (reg.get("lambda1"), reg.get("lambda2"), reg.get("lambda3"))
        label = f"λ=({', '.join(str(x) for x in lambdas)})" if lambdas else ARM_LABELS.get(arm, arm)
        out.append(
            {
                "run_id": run.path.name,
                "arm": arm_specs.kind_of(arm) or arm,
                "label": label,
                "task_metric": ev.get("task_metric"),
                "bias": headline_bias(ev, run.config or {}),
                "drift": ev.get("kl_to_base"),
            }
        )
    return out


ARM_LABELS = {"lora": "LoRA", "pissa": "PiSSA", "balora": "BA-LoRA"}


def pareto_point(run_dir: str | Path) -> dict[str, Any]:
    """One run of a sweep as a point: its regularized arm's metric, bias and drift."""
    run = runs.load_run(run_dir)
    evs = last_evals(run)
    arm = next((a for a in ("balora", "pissa", "lora") if a in evs), None)
    if arm is None:
        return {}
    ev = evs[arm]
    reg = (run.config or {}).get("reg") or {}
    label = (
        "LoRA"
        if arm == "lora"
        else f"λ=({reg.get('lambda1')}, {reg.get('lambda2')}, {reg.get('lambda3')})"
    )
    return {
        "run_id": run.path.name,
        "arm": arm,
        "label": label,
        "task_metric": ev.get("task_metric"),
        "bias": headline_bias(ev, run.config or {}),
        "drift": ev.get("kl_to_base"),
    }


# ---- evidence: paired differences between arms, read from the per-item records --------------

WHAT_BALORA_IS = (
    "**BA-LoRA = PiSSA initialisation + three regularizers** (consistency with the original "
    "model, diversity of outputs, an SVD term on the output). LoRA and PiSSA are trained on the "
    "same batches from the same seed, so the differences below are paired item by item."
)


def evidence(run_dir: str | Path, *, bias_only: bool = False) -> tuple[str, Any]:
    """-> (Markdown with one verdict line per metric and comparison, forest plot).

    Arm-against-arm lines come first; arm-against-base lines (bias) follow. A run without
    per-item records says so instead."""
    from lab import verdicts
    from lab.plots.evidence import forest_figure

    ev = verdicts.run_evidence(run_dir, bias_only=bias_only)
    if ev is None:
        msg = (
            "*This run has no per-item records, so no paired differences: runs made with this "
            "version of the lab keep them (`items/` in the run directory).*"
        )
        return msg, plots.empty_figure("no per-item records in this run")
    if not ev["versus_arm"] and not ev["versus_base"]:
        return "*No comparable items in this run (one arm only?).*", forest_figure([])
    lines = ["**What changed** (differences with 95% CIs, Holm-adjusted p, and n):", ""]
    lines += [f"- {verdicts.verdict_text(r)}" for r in ev["versus_arm"]]
    if ev["versus_base"]:
        lines += ["", "**Against the untouched base model** (bias):", ""]
        lines += [f"- {verdicts.verdict_text(r)}" for r in ev["versus_base"]]
    return "\n".join(lines), forest_figure(ev["versus_arm"] or ev["versus_base"])
