"""Classroom tab: the shipped finished run, with real plots before anything is trained, and a
replay that steps through it (every figure drawn from the events up to the chosen step).
:func:`build` returns a :class:`ClassroomTab`: what the layout fills when the page opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from lab import plots
from lab.runs import store as runs
from lab.ui import common, figures

FIGURES = figures.ALL_FIGURES
REPLAY_TICK_S = 0.8  # seconds between two replayed steps
INTRO = (
    "A finished run of the **classroom-cpu** preset (SmolLM2-135M on the sentiment set, LoRA vs "
    "PiSSA vs BA-LoRA, 2 CPU cores), shipped with the app. Press **Replay** to watch it train "
    "again step by step, or drag the slider. When it ships with its adapters (`make example`), "
    "the **Compare** tab generates from it at once, with no training."
)


def example_run() -> runs.Run:
    if not (common.EXAMPLE_RUN / "config.yaml").exists():
        raise FileNotFoundError(f"the example run is missing from {common.EXAMPLE_RUN}")
    return runs.load_run(common.EXAMPLE_RUN)


def max_step(run: runs.Run) -> int:
    return max((int(e["step"]) for e in run.events if e.get("kind") == "train"), default=0)


def view(run: runs.Run, upto: int | None = None) -> dict:
    """Figures of the example run using the events up to ``upto`` (all when None)."""
    return figures.run_figures(run, keys=FIGURES, upto_step=upto)


@common.guarded
def on_open():
    """The full example run, opening on what changed. -> [message, verdicts, forest plot,
    summary, slider, *figures]."""
    try:
        run = example_run()
        figs = view(run)
    except FileNotFoundError as e:
        return [common.err(e), "", gr.skip(), "", gr.skip(), *figures.panel_skip(FIGURES)]
    verdict_md, forest = figures.evidence(run.path)
    last = max_step(run)
    slider = gr.Slider(minimum=0, maximum=last, value=last, step=1)
    summary = figures.summary_markdown(run)
    return ["", verdict_md, forest, summary, slider, *figures.panel_values(figs, FIGURES)]


@common.guarded
def on_step(step: float):
    """Redraw every figure for the step chosen by dragging or typing (then Enter)."""
    run = example_run()
    step = max(0, min(max_step(run), int(float(step or 0))))
    figs = view(run, step)
    return figures.panel_values(figs, FIGURES)


@common.guarded
def on_play(step: float):
    """Start the replay from the beginning (or from the slider when it is mid-way).
    -> (timer, slider, playing)."""
    run = example_run()
    start = 0 if int(step) >= max_step(run) else int(step)
    return gr.Timer(active=True), start, True


@common.guarded
def on_pause():
    """-> (timer, playing). A tick already under way sees ``playing`` False and changes nothing."""
    return gr.Timer(active=False), False


@common.guarded
def on_tick(step: float, playing: bool):
    """Advance the replay while it is playing. -> [timer, slider, *figures].

    A tick never switches the timer on (only Replay does), so a tick that was already queued
    when Pause was pressed cannot restart the replay; at the last step it switches it off."""
    if not playing:
        return [gr.Timer(active=False), gr.skip(), *figures.panel_skip(FIGURES)]
    run = example_run()
    last = max_step(run)
    nxt = min(last, int(step) + max(1, last // 20))
    figs = view(run, nxt)
    timer = gr.Timer(active=False) if nxt >= last else gr.skip()
    return [timer, nxt, *figures.panel_values(figs, FIGURES)]


@dataclass(frozen=True)
class ClassroomTab:
    """The widgets :func:`on_open` fills, in its order: message, verdicts, forest plot,
    summary, replay slider, then the figure panel."""

    outputs: list


def build() -> ClassroomTab:
    """Create the Classroom tab's widgets and wire the replay (it needs nothing from the rest
    of the page)."""
    gr.Markdown(figures.WHAT_BALORA_IS, elem_id="cls-what")
    msg = gr.Markdown()
    with gr.Row():
        verdicts = gr.Markdown(elem_id="cls-verdicts")
        forest = gr.Plot(
            plots.empty_figure("the paired differences appear here"),
            label="Differences between the arms (95% CIs)",
            elem_id="cls-forest",
        )
    gr.Markdown(INTRO)
    summary = gr.Markdown(elem_id="cls-summary")
    with gr.Row():
        step = gr.Slider(
            0,
            1,
            value=1,
            step=1,
            label="Replay up to step",
            info="Every figure shows the run as it was at this step.",
            elem_id="cls-step",
        )
        play = gr.Button("▶ Replay", scale=0, elem_id="cls-play")
        pause = gr.Button("⏸ Pause", scale=0, elem_id="cls-pause")
    panel = figures.plot_panel(FIGURES, prefix="cls-")
    timer = gr.Timer(REPLAY_TICK_S, active=False)
    playing = gr.State(False)
    figs = panel.outputs()
    private = {"api_visibility": "private"}
    step.release(on_step, step, figs, **private)
    # typing a step in the slider's box (then Enter or leaving it) redraws too
    step.input(on_step, step, figs, trigger_mode="always_last", **private)
    play.click(on_play, step, [timer, step, playing], **private)
    pause.click(on_pause, None, [timer, playing], **private)
    timer.tick(
        on_tick,
        [step, playing],
        [timer, step] + figs,
        show_progress="hidden",
        **private,
    )
    return ClassroomTab([msg, verdicts, forest, summary, step, *figs])
