"""The Blocks of the app: one tab per module, the cross-tab wiring, and the API endpoints.

``build_app()`` creates widgets only (no model is loaded, no run is read beyond the listing).
The documented API endpoints (``start``, ``status``, ``stop``, ``generate``) are plain
functions of this module, so the HTTP API and the tests call the same code.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from lab import jobs
from lab.config import ConfigError
from lab.ui import bias, classroom, common, compare, runs, setup, train, tune

TITLE = "BA-LoRA Lab"
INTRO = (
    "# BA-LoRA Lab\n"
    "Fine-tune **LoRA**, **PiSSA** and **BA-LoRA** side by side on the same batches and see what "
    "each does to what the model inherited: its drift from the original, the spread of its "
    "predictions, its bias scores. Start with the **Classroom** example, then try **Setup**."
)
ZEROGPU_NOTE = (
    "⚠️ **ZeroGPU is not supported yet.** This Space runs on ZeroGPU, where a GPU is lent to one "
    "call at a time; training runs in a long-lived worker process, so it would run on the CPU "
    "here. Use a Space with a dedicated GPU, or run `python app.py` locally."
)


# ---- API endpoints (documented, used by gradio_client) -----------------------------------------


def api_start(preset: str, overrides: list[str] | str | None = None) -> str:
    """Validate a preset plus ``key=value`` overrides and queue a training job.

    Returns the run id. Bad input raises with the library's message naming the field.
    """
    if isinstance(overrides, str):
        overrides = [o for o in overrides.replace(",\n", "\n").splitlines() if o.strip()]
    try:
        job = common.manager().submit(preset, list(overrides or []))
    except (ConfigError, ValueError) as e:
        raise gr.Error(str(e)) from None
    return job.run_id


def api_status(run_id: str) -> dict[str, Any]:
    """The status of a run as JSON: state, queue position, per-arm steps and losses, error."""
    try:
        return common.manager().status(run_id)
    except jobs.JobError as e:
        raise gr.Error(str(e)) from None


def api_stop(run_id: str) -> dict[str, Any]:
    """Stop a running job at its next step (or take a waiting one out of the queue)."""
    try:
        common.manager().stop(run_id)
    except jobs.JobError as e:
        raise gr.Error(str(e)) from None
    return common.manager().status(run_id)


def api_generate(run_id: str, prompt: str, max_new_tokens: int = 40, seed: int = 0) -> list[dict]:
    """Generations of the base model and every arm of a run for one prompt (greedy, same seed).

    Each item: arm, text, tokens, loglik (under the base model) and loglik_mean.
    """
    try:
        _, rows = compare.compare(run_id, prompt, None, max_new_tokens, seed, False)
    except (ValueError, FileNotFoundError) as e:
        raise gr.Error(str(e)) from None
    return rows


# ---- layout -------------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    ui = SimpleNamespace()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        if common.zerogpu():
            gr.Markdown(ZEROGPU_NOTE, elem_id="zerogpu-note")
        with gr.Tabs() as ui.tabs:
            with gr.Tab("Classroom", id="classroom"):
                classroom.build(ui)
            with gr.Tab("Setup", id="setup"):
                setup.build(ui)
            with gr.Tab("Train", id="train"):
                train.build(ui)
            with gr.Tab("Compare", id="compare") as ui.tab_compare:
                compare.build(ui)
            with gr.Tab("Bias", id="bias") as ui.tab_bias:
                bias.build(ui)
            with gr.Tab("Tune", id="tune"):
                tune.build(ui)
            with gr.Tab("Runs", id="runs") as ui.tab_runs:
                runs.build(ui)
        ui.start_btn.click(
            train.on_start,
            [ui.preset] + ui.form,
            [ui.setup_msg, ui.followed, ui.tabs],
            api_visibility="private",
        )
        tune.wire(ui)
        # lists of runs refresh when their tab is opened (a run may have finished meanwhile)
        private = {"api_visibility": "private"}
        ui.tab_compare.select(compare.on_refresh, None, ui.cmp_run, **private)
        ui.tab_bias.select(bias.on_refresh, None, ui.bias_run, **private)
        ui.tab_runs.select(
            runs.on_refresh, None, [ui.runs_list, ui.runs_pick, ui.runs_other], **private
        )
        demo.load(train.on_load, ui.followed, ui.followed, api_visibility="private")
        demo.load(setup.on_page_load, ui.dataset, ui.dataset, api_visibility="private")
        demo.load(compare.on_page_load, None, [ui.cmp_run, ui.cmp_pair], api_visibility="private")
        demo.load(
            runs.on_refresh,
            None,
            [ui.runs_list, ui.runs_pick, ui.runs_other],
            api_visibility="private",
        )
        demo.load(bias.on_refresh, None, ui.bias_run, api_visibility="private").then(
            bias.on_show,
            ui.bias_run,
            [ui.bias_table, ui.bias_fig, ui.bias_msg],
            api_visibility="private",
        )
        demo.load(tune.on_refresh, None, ui.tune_pick, api_visibility="private")
        demo.load(classroom.on_open, None, classroom.outputs(ui), api_visibility="private")
        gr.api(api_start, api_name="start")
        gr.api(api_status, api_name="status")
        gr.api(api_stop, api_name="stop")
        gr.api(api_generate, api_name="generate")
    return demo
