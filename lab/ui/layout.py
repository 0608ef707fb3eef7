"""The Blocks of the app: one tab per module, the cross-tab wiring, and the API endpoints.

``build_app()`` creates widgets only (no model is loaded, no run is read beyond the listing).
The documented API endpoints (``start``, ``status``, ``stop``, ``resume``, ``generate``) are
plain functions of this module, so the HTTP API and the tests call the same code.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from lab.jobs import chunks, hosting
from lab.ui import bias, classroom, common, compare, runs, setup, train, tune, zerogpu

TITLE = "BA-LoRA Lab"
INTRO = (
    "# BA-LoRA Lab\n"
    "Fine-tune **LoRA**, **PiSSA** and **BA-LoRA** side by side on the same batches and see what "
    "each does to what the model inherited: its drift from the original, the spread of its "
    "predictions, its bias scores. Start with the **Classroom** example, then try **Setup**."
)


# ---- API endpoints (documented, used by gradio_client) -----------------------------------------
# Every endpoint takes the caller's owner token: in public mode a run answers only to the token
# that started it (or the admin token); in local mode the token is accepted and not needed.


@common.guarded
def api_start(
    preset: str, overrides: list[str] | str | None = None, owner_token: str = ""
) -> dict[str, str]:
    """Validate a preset plus ``key=value`` overrides and queue a training job.

    Returns ``{"run_id", "owner_token"}``: keep the token, it is what lets this caller read,
    stop and download the run later (a new one is made when none is given). Bad input raises
    with the library's message naming the field or the limit.
    """
    if isinstance(overrides, str):
        overrides = [o for o in overrides.replace(",\n", "\n").splitlines() if o.strip()]
    token = common.ensure_owner(owner_token)
    job = common.manager().submit(preset, overrides or [], owner=token)
    return {"run_id": job.run_id, "owner_token": token}


@common.guarded
def api_status(run_id: str, owner_token: str = "") -> dict[str, Any]:
    """The status of a run as JSON: state, queue position, per-arm steps and losses, error."""
    mgr = common.manager()
    hosting.check_access(mgr.hosting, mgr.runs_root, run_id, owner_token, "read")
    return common.public_status(mgr.status(run_id))


@common.guarded
def api_stop(run_id: str, owner_token: str = "") -> dict[str, Any]:
    """Stop a running job at its next step (or take a waiting one out of the queue)."""
    mgr = common.manager()
    hosting.check_access(mgr.hosting, mgr.runs_root, run_id, owner_token, "stop")
    mgr.stop(run_id)
    return common.public_status(mgr.status(run_id))


@common.guarded
def api_generate(
    run_id: str, prompt: str, max_new_tokens: int = 40, seed: int = 0, owner_token: str = ""
) -> list[dict]:
    """Generations of the base model and every arm of a run for one prompt (greedy, same seed).

    Each item: arm, text, tokens, loglik (under the base model) and loglik_mean.
    """
    _, rows = compare.compare(run_id, prompt, None, max_new_tokens, seed, False, owner_token)
    return rows


@common.guarded
def api_resume(run_id: str, total_steps: int | None = None, owner_token: str = "") -> dict:
    """Continue a stopped, crashed or paused run from its last checkpoint (optionally to a new
    total of steps); returns its status. Runs that cannot continue raise saying why."""
    runs.resume_run(run_id, total_steps, owner_token)
    return common.public_status(common.manager().status(run_id))


def mode_banner() -> str:
    h = common.hosting()
    if not h.public:
        return (
            "🏠 **Local mode**: one trusted user on this machine; every run in the runs folder "
            "is yours."
        )
    lim = h.limits
    return (
        "🌐 **Public mode**: your runs are private to this browser (other visitors cannot see, "
        f"stop or download them). Limits: {lim.steps} steps, batch {lim.batch_size}, "
        f"{lim.jobs_per_owner} jobs at a time, uploads up to {lim.upload_bytes // 1_000_000} MB."
    )


# ---- layout -------------------------------------------------------------------------------------


def build_app() -> gr.Blocks:
    """The page: each tab's ``build`` takes what it uses from the rest of the page (the owner
    token, the Setup tab, its own tab) and returns what the rest of the page uses of it; the
    events that cross tabs are wired here."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(mode_banner(), elem_id="mode-banner")
        job_banner = gr.Markdown(visible=False, elem_id="job-banner")
        # the visitor's owner token, signed by the server, kept in the browser across reloads
        # (BrowserState's own key is public by Gradio's design: see common.browser_key)
        owner = gr.BrowserState("", storage_key="balora_owner", secret=common.browser_key())
        if common.zerogpu():
            gr.Markdown(zerogpu.note(chunks.settings()), elem_id="zerogpu-note")
        with gr.Tabs() as tabs:
            with gr.Tab("Classroom", id="classroom"):
                classroom_tab = classroom.build()
            with gr.Tab("Setup", id="setup"):
                setup_tab = setup.build(owner)
            with gr.Tab("Train", id="train"):
                train_tab = train.build(owner)
            with gr.Tab("Compare", id="compare") as compare_page:
                compare_tab = compare.build(owner)
            with gr.Tab("Bias", id="bias") as bias_page:
                bias_tab = bias.build(owner)
            with gr.Tab("Tune", id="tune") as tune_page:
                tune_tab = tune.build(owner, setup_tab, tune_page)
            with gr.Tab("Runs", id="runs") as runs_page:
                runs_tab = runs.build(owner)
        private = {"api_visibility": "private"}
        # Start (Setup) and Resume (Runs) hand the run to the Train tab and open it
        setup_tab.start_btn.click(
            train.on_start,
            [owner, setup_tab.estimate, setup_tab.preset] + setup_tab.form,
            [setup_tab.msg, train_tab.followed, tabs] + setup_tab.form,
            show_progress="hidden",  # the message line says what happens, not Gradio's timer
            **private,
        )
        runs_tab.resume_btn.click(
            runs.on_resume,
            [runs_tab.pick, runs_tab.resume_steps, owner],
            [runs_tab.msg, train_tab.followed, tabs],
            **private,
        )
        # a sweep point opens in the Runs tab
        tune_tab.open_btn.click(
            tune.on_open_run, [tune_tab.run, owner], [runs_tab.pick, tabs], **private
        ).then(runs.on_open, [runs_tab.pick, owner], runs_tab.open_outputs, **private)
        # lists of runs refresh when their tab is opened (a run may have finished meanwhile)
        compare_page.select(compare.on_refresh, owner, compare_tab.run, **private)
        bias_page.select(bias.on_refresh, owner, bias_tab.run, **private)
        runs_page.select(runs.on_refresh, owner, runs_tab.listing, **private)
        # the owner token first (a new visitor gets one), then everything that depends on it
        owned = demo.load(common.guarded(common.page_owner), owner, owner, **private)
        owned.then(
            train.on_load,
            [train_tab.followed, owner],
            [train_tab.followed, job_banner, tabs],
            **private,
        )
        owned.then(compare.on_page_load, owner, [compare_tab.run, compare_tab.pair], **private)
        owned.then(runs.on_refresh, owner, runs_tab.listing, **private)
        owned.then(bias.on_refresh, owner, bias_tab.run, **private).then(
            bias.on_show, [bias_tab.run, owner], bias_tab.shown, **private
        )
        owned.then(tune.on_refresh, owner, tune_tab.pick, **private)
        owned.then(bias.on_refresh_targets, owner, bias_tab.target, **private)
        dataset = setup_tab.fields["data.name"]
        demo.load(setup.on_page_load, dataset, dataset, **private)
        demo.load(classroom.on_open, None, classroom_tab.outputs, **private)
        gr.api(api_start, api_name="start")
        gr.api(api_status, api_name="status")
        gr.api(api_stop, api_name="stop")
        gr.api(api_resume, api_name="resume")
        gr.api(api_generate, api_name="generate")
    return demo
