"""Setup tab: preset, model, data and knobs, each explained; check, time and start a run.

The form logic (values -> overrides -> config) is in :mod:`lab.ui.form`, the upload handlers
(dataset, column mapping, benchmark files) in :mod:`lab.ui.uploads`. Every check (config,
model, dataset) runs before a worker starts, and nothing is written to the runs directory when
one fails. :func:`build` returns a :class:`SetupTab`, the part of the tab other tabs use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from lab import jobs
from lab.config import TEACHER_CHOICES, ConfigError, list_presets, load_preset
from lab.jobs import hosting
from lab.ui import common, uploads
from lab.ui.form import (
    ARM_CHOICES,
    EMBEDDED_MODELS,
    FIELD_LABELS,
    FIELDS,
    ROLE_LABELS,
    UPLOAD_LABEL,
    USER_ERRORS,
    check_form,
    choices,
    config_value,
    dataset_choices,
    default_preset,
    describe,
    form_overrides,
    form_values,
    highlight,
    name_the_field,
    ordered,
    preset_note,
    preset_values,
    slider_range,
)

# ---- handlers ---------------------------------------------------------------------------------


@common.guarded
def on_preset(preset: str):
    """Fill every field from the preset. -> [*fields, the preset's own note, message]."""
    try:
        vals = preset_values(preset)
        note = preset_note(preset)
    except USER_ERRORS as e:
        return [gr.skip()] * (len(FIELDS) + 1) + [common.err(e)]
    return [vals[f] for f in FIELDS] + [
        note_markdown(note),
        common.ok(f"loaded preset **{preset}**"),
    ]


def note_markdown(note: str) -> str:
    """The preset's comment block under the picker (plain text, shown as a quote)."""
    return (
        "\n>\n".join(f"> {common.escape_markdown(p)}" for p in note.split("\n\n")) if note else ""
    )


TASK_FIELDS = ["model.name", "reg.lambda1", "reg.lambda2", "reg.lambda3", "reg.svd_k"]


@common.guarded
def on_task(preset: str, task: str, model: str):
    """Switching the task loads its default weights (the paper's NLG or NLU values) and, when
    the chosen model cannot do the task, an embedded model that can."""
    from lab.models import model_tasks

    try:
        preset = hosting.check_preset(common.hosting(), preset)
        cfg = load_preset(preset, [f"task={task}"]).to_dict()
    except USER_ERRORS as e:
        return [gr.skip()] * len(TASK_FIELDS) + [common.err(e)]
    if task not in (model_tasks(model) or (task,)):
        model = next(name for name in EMBEDDED_MODELS if task in model_tasks(name))
    values = [model] + [config_value(cfg, f) for f in TASK_FIELDS[1:]]
    return values + [common.ok(f"task **{task}**: its default regularizer weights are loaded")]


@common.guarded
def on_check(owner: str | None, preset: str, *vals):
    """-> [message, *one update per form field (the bad one outlined)]."""
    try:
        cfg, overrides, warnings = check_form(preset, form_values(vals), owner)
    except USER_ERRORS as e:
        return [common.err(name_the_field(str(e))), *highlight(str(e))]
    note = "".join(f"\n\n⚠️ {w}" for w in warnings)
    return [common.ok("valid: " + describe(cfg, overrides)) + note, *highlight(None)]


def on_start(
    owner: str | None, preset: str, *vals, estimate: dict | None = None
) -> tuple[str, str | None]:
    """Validate, then queue the job (with the estimate measured for this exact setup, when
    there is one). -> (message, run id or None)."""
    try:
        if not preset:
            raise ConfigError("preset: pick a preset first")
        overrides = form_overrides(preset, form_values(vals))
        same = (
            isinstance(estimate, dict)
            and estimate.get("preset") == preset
            and estimate.get("overrides") == overrides
        )
        # validates (hosting rules and limits too) before writing anything
        job = common.manager().submit(
            preset, overrides, owner=owner, estimate_s=estimate["total_s"] if same else None
        )
    except USER_ERRORS as e:
        return common.err(name_the_field(str(e))), None
    cfg = load_preset(preset, job.overrides)
    pos = common.manager().queue_position(job.run_id)
    where = "started" if pos == 0 else f"waiting in the queue at position {pos}"
    return common.ok(f"run **{job.run_id}** {where}: {describe(cfg, overrides)}"), job.run_id


@common.guarded
def on_estimate(owner: str | None, preset: str, *vals):
    """Time a short run of this exact config (evaluation included) and extrapolate to the full
    run: start-up + steps + eval points. Yields (message, the estimate kept for Start): our own
    status line while the timing run works, then the estimate."""
    try:
        cfg, overrides, _ = check_form(preset, form_values(vals), owner)
        yield "⏳ measuring: starting a short run of this exact setup…", gr.skip()
        measured: dict[str, Any] = {}
        for measured in jobs.checks.measure_progress(preset, overrides):
            if "per_arm_s" not in measured:
                line = jobs.checks.progress_line(
                    measured["done"], measured["total"], measured["elapsed_s"]
                )
                yield f"⏳ measuring: {line}", gr.skip()
    except USER_ERRORS as e:
        yield common.err(name_the_field(str(e))), None
        return
    yield (
        estimate_message(cfg, measured),
        {
            "preset": preset,
            "overrides": overrides,
            "total_s": jobs.estimate_run(cfg, measured)["total_s"],
        },
    )


def estimate_message(cfg, measured: dict[str, Any]) -> str:
    """What the measured estimate says, part by part."""
    est = jobs.estimate_run(cfg, measured)
    busy = common.manager().attach()
    note = ""
    if busy is not None and busy.state == jobs.RUNNING:
        note = "\n\n⚠️ a training job was running while this was measured: the times are inflated."
    arms = ", ".join(f"{a} {s:.2f}s" for a, s in measured["per_arm_s"].items())
    dur = jobs.checks.duration
    return (
        f"⏱️ this run should take about **{dur(est['total_s'])}**: start-up and loading "
        f"{dur(est['startup_s'])}, {cfg.train.steps} steps {dur(est['train_s'])} "
        f"({arms} per step), evaluation {dur(est['eval_s'])} "
        f"({jobs.checks.eval_points(cfg.train.steps, cfg.train.eval_every)} eval points, each "
        "with the joint t-SNE and a checkpoint). "
        f"Measured over {measured['steps']} real steps with this exact setup; Start records "
        f"the estimate in the run summary beside the time it really took.{note}"
    )


@common.guarded
def on_page_load(current: str | None):
    """Fill the dataset list once the page is up (listing imports the data stack)."""
    choices = dataset_choices()
    if current and current not in choices:
        choices.append(current)
    return gr.Dropdown(choices=choices)


# ---- widgets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupTab:
    """What the rest of the page uses of the Setup tab: the preset picker, the form's widgets
    by config path (``fields``) and in ``FIELDS`` order (``form``, for the handlers), the Start
    button, the message line under it and the estimate measured for Start."""

    preset: gr.Dropdown
    fields: dict[str, Any]
    form: list
    start_btn: gr.Button
    msg: gr.Markdown
    estimate: gr.State


def build(owner: gr.State) -> SetupTab:
    """Create the Setup tab's widgets and wire its own events; ``owner`` is the visitor's token.
    Start is wired by the layout (it opens the Train tab)."""
    preset = default_preset()
    v = preset_values(preset)
    f: dict[str, Any] = {}  # config path -> its widget: the form is matched to fields by name
    with gr.Row():
        preset_dd = gr.Dropdown(
            list_presets(),
            value=preset,
            label="Preset",
            info="A ready-made experiment; picking one fills every field below.",
            elem_id="preset",
        )
    preset_note_md = gr.Markdown(note_markdown(preset_note(preset)), elem_id="preset-note")
    gr.Markdown(
        "Change any field below, then **Start** (queues the run; one trains at a time and the "
        "Train tab follows it), **Check** (validates every field, writes nothing) or "
        "**Measure** (times a few real steps of this exact setup and extrapolates)."
    )
    with gr.Row():
        # Start first: the shortest keyboard path from the tab to the main action
        start_btn = gr.Button("Start training", variant="primary", elem_id="start-btn")
        check_btn = gr.Button("Check settings", elem_id="check-btn")
        estimate_btn = gr.Button("Measure time per step", elem_id="estimate-btn")
    msg = gr.Markdown(elem_id="setup-msg")
    with gr.Row():
        f["task"] = gr.Radio(
            list(choices("task")),
            value=v["task"],
            label="Task type",
            info="nlg: the model writes an answer (causal LM). nlu: it picks a class (classifier head).",
        )
        f["model.name"] = gr.Dropdown(
            EMBEDDED_MODELS,
            value=v["model.name"],
            label="Base model",
            info="Embedded models work offline; tiny-* are random toy models for quick tries.",
        )
        f["model.custom"] = gr.Textbox(
            value=v["model.custom"],
            label="…or a hub id / local folder",
            placeholder="org/model-name or /path/to/model",
            info="When filled, this is used instead of the dropdown (a hub id needs a network).",
        )
    with gr.Row():
        f["data.name"] = gr.Dropdown(
            [v["data.name"]],  # the full list is filled in on page load (see on_page_load)
            value=v["data.name"],
            allow_custom_value=True,
            label="Dataset",
            elem_id="dataset",
            info="A shipped dataset, or your own file uploaded on the right.",
        )
        upload = gr.UploadButton(
            f"{UPLOAD_LABEL} (.jsonl or .csv: prompt + response, or text + label)",
            file_types=[".jsonl", ".csv"],
            file_count="single",
            type="filepath",
            elem_id="upload-btn",
        )
    upload_msg = gr.Markdown(elem_id="upload-msg")
    # shown when an upload's columns are not the task's: which column holds which role
    with gr.Column(visible=False, variant="panel", elem_id="map-box") as map_box:
        with gr.Row():
            first, second = uploads.task_roles(v["task"])
            map_first = gr.Dropdown(
                [], label=ROLE_LABELS[first], info=uploads.role_info(first), elem_id="map-first"
            )
            map_second = gr.Dropdown(
                [], label=ROLE_LABELS[second], info=uploads.role_info(second), elem_id="map-second"
            )
        map_btn = gr.Button("Use these columns", elem_id="map-btn")
    map_pending = gr.State(None)  # the upload waiting for its mapping: path and columns
    mapped = gr.State({})  # dataset path -> its mapping, for a dataset picked again by hand
    f["data.columns"] = gr.Textbox(v["data.columns"], visible=False)
    with gr.Row():
        f["data.label_noise"] = gr.Slider(
            **slider_range("data.label_noise"),
            value=v["data.label_noise"],
            label="Label noise",
            info="Fraction of training labels flipped on purpose: does the method resist noisy data?",
        )
        f["data.minority_fraction"] = gr.Slider(
            **slider_range("data.minority_fraction"),
            value=v["data.minority_fraction"],
            label="Minority share",
            info="0 keeps the classes as they are; 0.1 makes one class only 10% of training data.",
        )
    f["arms"] = gr.CheckboxGroup(
        ARM_CHOICES,
        value=v["arms"],
        label="Arms",
        info="Trained on the same batches from the same seed. BA-LoRA = PiSSA init + the 3 regularizers.",
    )
    with gr.Accordion("BA-LoRA regularizers", open=True):
        with gr.Row():
            f["reg.lambda1"] = gr.Slider(
                **slider_range("reg.lambda1"),
                value=v["reg.lambda1"],
                label="λ1 consistency",
                info="Pulls the model's outputs toward the original model's (limits forgetting).",
            )
            f["reg.lambda2"] = gr.Slider(
                **slider_range("reg.lambda2"),
                value=v["reg.lambda2"],
                label="λ2 diversity",
                info="Rewards spread-out predictions (fights collapse onto a few answers).",
            )
            f["reg.lambda3"] = gr.Slider(
                **slider_range("reg.lambda3"),
                value=v["reg.lambda3"],
                label="λ3 SVD",
                info="Rewards outputs dominated by a few strong directions (keeps what generalises).",
            )
        with gr.Row():
            f["reg.temperature"] = gr.Slider(
                **slider_range("reg.temperature"),
                value=v["reg.temperature"],
                label="T (temperature)",
                info="Softens both models' outputs before comparing them in the consistency term.",
            )
            f["reg.top_k"] = gr.Slider(
                **slider_range("reg.top_k"),
                value=v["reg.top_k"],
                label="top-K",
                info="The diversity term looks at the K most likely next tokens (NLG).",
            )
            f["reg.svd_k"] = gr.Slider(
                **slider_range("reg.svd_k"),
                value=v["reg.svd_k"],
                label="SVD k",
                info="How many top singular values the SVD term rewards.",
            )
            f["reg.teacher_dtype"] = gr.Dropdown(
                [(f"{key}: {TEACHER_CHOICES[key]}", key) for key in choices("reg.teacher_dtype")],
                value=v["reg.teacher_dtype"],
                label="Teacher precision",
                info="model (default): the exact pre-trained outputs. The bf16 choices are "
                "opt-in speed settings; the run summary records which one was used.",
            )
    with gr.Row():
        f["train.steps"] = gr.Number(
            value=v["train.steps"],
            precision=0,
            label="Steps",
            info="Optimizer steps per arm; each step sees one batch.",
        )
        f["train.batch_size"] = gr.Slider(
            **slider_range("train.batch_size"),
            value=v["train.batch_size"],
            label="Batch size",
            info="Examples per step; larger is steadier but slower.",
        )
        f["train.lr"] = gr.Number(
            value=v["train.lr"],
            label="Learning rate",
            info="Step size of the adapter updates (around 1e-4 to 1e-3 for LoRA).",
        )
        f["lora.rank"] = gr.Slider(
            **slider_range("lora.rank"),
            value=v["lora.rank"],
            label="Rank",
            info="Width of the low-rank update: more capacity, more parameters.",
        )
        f["train.eval_every"] = gr.Number(
            value=v["train.eval_every"],
            precision=0,
            label="Evaluate every",
            info="Steps between evaluations (metrics, drift, spectra, t-SNE); 0 = start and end only.",
        )
    with gr.Accordion("Published bias benchmarks (optional): scored at every eval point",
                      open=False):  # fmt: skip
        gr.Markdown(
            "Upload the files you have, in their published formats (CrowS-Pairs CSV, BBQ "
            "JSONL, WinoGender templates and occupation statistics); each is checked here, and "
            "the run scores it the way lm-evaluation-harness does. The **Bias** tab explains "
            "each benchmark's limitation and scoring convention."
        )
        bench_buttons = {}
        with gr.Row():
            for kind in uploads.BENCH_KINDS:
                label = FIELD_LABELS[f"bias.{kind}"]
                f[f"bias.{kind}"] = gr.Textbox(v[f"bias.{kind}"], visible=False)
                btn = gr.UploadButton(
                    f"Upload {label}", file_count="single", type="filepath",
                    elem_id=f"setup-upload-{kind.replace('_', '-')}",
                )  # fmt: skip
                bench_buttons[kind] = btn
        bench_msg = gr.Markdown(elem_id="setup-bench-msg")
    form = ordered(f)  # the widgets in FIELDS order, each found by its field's name

    # our own status text in the message lines, never Gradio's timer over them
    private = {"api_visibility": "private", "show_progress": "hidden"}
    preset_dd.change(on_preset, preset_dd, form + [preset_note_md, msg], **private)
    f["task"].input(
        on_task,
        [preset_dd, f["task"], f["model.name"]],
        [*(f[k] for k in TASK_FIELDS), msg],  # by name, as on_task returns them
        **private,
    )
    f["task"].input(uploads.on_mapping_task, [f["task"], map_pending], [map_first, map_second],
                  **private)  # fmt: skip
    upload.upload(
        uploads.on_upload,
        [upload, f["task"], owner],
        [upload_msg, f["data.name"], f["data.columns"], map_box, map_first, map_second,
         map_pending],
        **private,
    )  # fmt: skip
    map_btn.click(
        uploads.on_map,
        [map_pending, f["task"], map_first, map_second, owner, mapped],
        [upload_msg, f["data.name"], f["data.columns"], map_box, mapped],
        **private,
    )
    f["data.name"].input(
        uploads.on_dataset_input, [f["data.name"], mapped], f["data.columns"], **private
    )
    for kind, btn in bench_buttons.items():
        btn.upload(
            uploads.ON_BENCH_UPLOAD[kind], [btn, owner], [bench_msg, f[f"bias.{kind}"]], **private
        )
    check_btn.click(on_check, [owner, preset_dd] + form, [msg] + form, **private)
    estimate = gr.State(None)
    estimate_btn.click(
        on_estimate,
        [owner, preset_dd] + form,
        [msg, estimate],
        concurrency_limit=1,
        **private,
    )
    return SetupTab(preset_dd, f, form, start_btn, msg, estimate)
