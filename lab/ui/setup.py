"""Setup tab: preset, model, data and knobs, each explained; check, time and start a run.

The form logic (values -> overrides -> config) is in :mod:`lab.ui.form`. Every check (config,
model, dataset) runs before a worker starts, and nothing is written to the runs directory when
one fails.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from lab import hosting, jobs
from lab.config import TEACHER_CHOICES, ConfigError, check_value, list_presets, load_preset
from lab.ui import common
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
    columns_text,
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
    role_error,
    slider_range,
)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")

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
    return "\n>\n".join(f"> {_escape(p)}" for p in note.split("\n\n")) if note else ""


def _escape(text: str) -> str:
    """Plain text for a Markdown widget: markup characters and HTML shown as typed."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


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


def store_upload(path: str, owner: str | None) -> Path:
    """Copy a checked upload into the visitor's own folder (named by the server from the owner
    token, never from request data) under a sanitised name; returns where it now lies."""
    h = common.hosting()
    dest_dir = hosting.upload_dir(common.runs_root(), owner)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if len(list(dest_dir.iterdir())) >= h.limits.uploads_per_owner:
        raise ValueError(
            f"you have uploaded {h.limits.uploads_per_owner} files, the limit on this app"
        )
    src = Path(path)
    stem = _SAFE_NAME.sub("-", src.stem)[:60].strip(".-") or "data"
    dest = dest_dir / f"{stem}{src.suffix.lower()}"
    if not hosting.inside(dest, dest_dir):
        raise ValueError("the upload's name is not usable")
    shutil.copyfile(src, dest)
    return dest


MAP_HIDDEN = {"__type__": "update", "visible": False}
MAP_SHOWN = {"__type__": "update", "visible": True}


@common.guarded
def on_upload(path: str | None, task: str, owner: str | None = None):
    """Check an uploaded file; when it is usable, copy it to this visitor's folder and select
    it; when its columns are not the task's, show them for the user to map.
    -> (message, dataset, data.columns field, mapping box, first role, second role, pending)."""
    skip = gr.skip()
    if not path:
        return "", skip, skip, skip, skip, skip, skip
    from lab.datasets.uploads import file_columns, guess_mapping, needs_mapping, validate_upload

    lim = common.hosting().limits
    if not common.is_upload(path):
        msg = common.err(role_error("the upload was not received as a file"))
        return msg, skip, skip, MAP_HIDDEN, skip, skip, None
    name = Path(path).name
    try:
        columns = file_columns(path, max_bytes=lim.upload_bytes, max_rows=lim.upload_rows)
        if needs_mapping(columns, task):
            pending = {"path": path, "columns": columns}
            first, second = mapping_dropdowns(columns, task, guess_mapping(columns, task))
            roles = " and ".join(f"**{ROLE_LABELS[r]}**" for r in _roles(task))
            msg = (
                f"🧭 {_escape(name)} has the columns {', '.join(f'`{c}`' for c in columns)}, not "
                f"the ones task {task} needs. Choose its {roles} below, then **Use these columns**."
            )
            return msg, skip, skip, MAP_SHOWN, first, second, pending
        rows, warnings = validate_upload(
            path,
            task=task,
            max_bytes=lim.upload_bytes,
            max_rows=lim.upload_rows,
            max_classes=lim.classes,
        )
        dest = store_upload(path, owner)
    except USER_ERRORS as e:
        return common.err(role_error(str(e))), skip, skip, MAP_HIDDEN, skip, skip, None
    note = "".join(f"\n\n⚠️ {w}" for w in warnings)
    msg = common.ok(f"{name}: {len(rows)} usable rows; selected as the dataset") + note
    return msg, _select(dest), "", MAP_HIDDEN, skip, skip, None


def _roles(task: str) -> tuple[str, str]:
    from lab.datasets.uploads import ROLES

    if (bad := check_value("task", task)) is not None:
        raise ValueError(f"task: {bad}")
    return ROLES[task]


def _select(dest: Path):
    return gr.Dropdown(choices=dataset_choices() + [str(dest)], value=str(dest))


def _role_info(role: str) -> str:
    return f"The file's column that holds the {role}."


def mapping_dropdowns(columns: list[str], task: str, guess: dict[str, str | None]):
    """The two role dropdowns for ``task`` over the file's ``columns`` (guesses preselected)."""
    return [
        gr.Dropdown(
            choices=columns,
            value=guess.get(role),
            label=ROLE_LABELS[role],
            info=_role_info(role),
        )
        for role in _roles(task)
    ]


@common.guarded
def on_mapping_task(task: str, pending: dict | None):
    """The task changed while a mapping is open: the dropdowns ask for the new task's roles."""
    if not isinstance(pending, dict):
        return gr.skip(), gr.skip()
    from lab.datasets.uploads import guess_mapping

    columns = pending["columns"]
    return tuple(mapping_dropdowns(columns, task, guess_mapping(columns, task)))


@common.guarded
def on_map(
    pending: dict | None, task: str, first: str | None, second: str | None, owner=None, mapped=None
):
    """Apply the user's column mapping to the pending upload: check it, copy the file, select
    it and put the mapping in the ``data.columns`` field.
    -> (message, dataset, data.columns field, mapping box, mappings by dataset)."""
    from lab.datasets.uploads import check_mapping, validate_upload

    skip = gr.skip()
    if not isinstance(pending, dict) or not common.is_upload(pending.get("path")):
        return common.err(role_error("upload a file first")), skip, skip, skip, skip
    path, lim = pending["path"], common.hosting().limits
    try:
        roles = _roles(task)
        mapping = check_mapping(dict(zip(roles, (first, second))), pending["columns"], task)
        rows, warnings = validate_upload(
            path,
            task=task,
            columns=mapping,
            max_bytes=lim.upload_bytes,
            max_rows=lim.upload_rows,
            max_classes=lim.classes,
        )
        dest = store_upload(path, owner)
    except USER_ERRORS as e:
        return common.err(role_error(str(e))), skip, skip, skip, skip
    text = columns_text(mapping)
    uses = ", ".join(f"`{c}` as the {r}" for r, c in mapping.items())
    note = "".join(f"\n\n⚠️ {w}" for w in warnings)
    msg = common.ok(
        f"{_escape(Path(path).name)}: {len(rows)} usable rows with {uses}; selected as the dataset"
    )
    mapped = {**(mapped if isinstance(mapped, dict) else {}), str(dest): text}
    return msg + note, _select(dest), text, MAP_HIDDEN, mapped


@common.guarded
def on_dataset_input(name: str | None, mapped: dict | None) -> str:
    """A dataset picked by hand: its own column mapping (an upload mapped earlier), else none."""
    return (mapped or {}).get(str(name), "") if isinstance(mapped, dict) else ""


def _bench_uploader(kind: str):
    """The Setup tab's upload of one benchmark file: checked like the Bias tab's, copied into
    the visitor's own folder, and its path put in the hidden ``bias.<kind>`` field.
    -> (message, the field's new value)."""

    def on_upload(path, owner=None):
        from lab.ui import bias as bias_tab

        msg, items = bias_tab.check_benchmark(kind, path)
        if items is None:
            return msg, gr.skip()
        try:
            dest = store_upload(path, owner)
        except USER_ERRORS as e:
            return common.err(e), gr.skip()
        return msg + f"\n\nIt will be scored at every eval point of the run (`bias.{kind}`).", str(
            dest
        )

    on_upload.__name__ = f"on_bench_upload_{kind}"
    return common.guarded(on_upload)


BENCH_KINDS = ("crows_pairs", "bbq", "winogender", "winogender_stats")
ON_BENCH_UPLOAD = {kind: _bench_uploader(kind) for kind in BENCH_KINDS}


@common.guarded
def on_page_load(current: str | None):
    """Fill the dataset list once the page is up (listing imports the data stack)."""
    choices = dataset_choices()
    if current and current not in choices:
        choices.append(current)
    return gr.Dropdown(choices=choices)


# ---- widgets ----------------------------------------------------------------------------------


def build(ui) -> None:
    """Create the Setup tab's widgets and wire them. The form's widgets are kept by config path
    in ``ui.fields`` (``ui.form``: the same widgets in ``FIELDS`` order, for the handlers); the
    namespace shared by the tabs holds no other name for them."""
    preset = default_preset()
    v = preset_values(preset)
    f: dict[str, Any] = {}  # config path -> its widget: the form is matched to fields by name
    with gr.Row():
        ui.preset = gr.Dropdown(
            list_presets(),
            value=preset,
            label="Preset",
            info="A ready-made experiment; picking one fills every field below.",
            elem_id="preset",
        )
    ui.preset_note = gr.Markdown(note_markdown(preset_note(preset)), elem_id="preset-note")
    gr.Markdown(
        "Change any field below, then **Start** (queues the run; one trains at a time and the "
        "Train tab follows it), **Check** (validates every field, writes nothing) or "
        "**Measure** (times a few real steps of this exact setup and extrapolates)."
    )
    with gr.Row():
        # Start first: the shortest keyboard path from the tab to the main action
        ui.start_btn = gr.Button("Start training", variant="primary", elem_id="start-btn")
        ui.check_btn = gr.Button("Check settings", elem_id="check-btn")
        ui.estimate_btn = gr.Button("Measure time per step", elem_id="estimate-btn")
    ui.setup_msg = gr.Markdown(elem_id="setup-msg")
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
        ui.upload = gr.UploadButton(
            f"{UPLOAD_LABEL} (.jsonl or .csv: prompt + response, or text + label)",
            file_types=[".jsonl", ".csv"],
            file_count="single",
            type="filepath",
            elem_id="upload-btn",
        )
    ui.upload_msg = gr.Markdown(elem_id="upload-msg")
    # shown when an upload's columns are not the task's: which column holds which role
    with gr.Column(visible=False, variant="panel", elem_id="map-box") as ui.map_box:
        with gr.Row():
            first, second = _roles(v["task"])
            ui.map_first = gr.Dropdown(
                [], label=ROLE_LABELS[first], info=_role_info(first), elem_id="map-first"
            )
            ui.map_second = gr.Dropdown(
                [], label=ROLE_LABELS[second], info=_role_info(second), elem_id="map-second"
            )
        ui.map_btn = gr.Button("Use these columns", elem_id="map-btn")
    ui.map_pending = gr.State(None)  # the upload waiting for its mapping: path and columns
    ui.mapped = gr.State({})  # dataset path -> its mapping, for a dataset picked again by hand
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
        with gr.Row():
            for kind in BENCH_KINDS:
                label = FIELD_LABELS[f"bias.{kind}"]
                f[f"bias.{kind}"] = gr.Textbox(v[f"bias.{kind}"], visible=False)
                btn = gr.UploadButton(
                    f"Upload {label}", file_count="single", type="filepath",
                    elem_id=f"setup-upload-{kind.replace('_', '-')}",
                )  # fmt: skip
                ui.bench_buttons = getattr(ui, "bench_buttons", {}) | {kind: btn}
        ui.bench_msg = gr.Markdown(elem_id="setup-bench-msg")
    ui.fields = f
    ui.form = ordered(f)  # the widgets in FIELDS order, each found by its field's name

    # our own status text in the message lines, never Gradio's timer over them
    private = {"api_visibility": "private", "show_progress": "hidden"}
    ui.preset.change(on_preset, ui.preset, ui.form + [ui.preset_note, ui.setup_msg], **private)
    f["task"].input(
        on_task,
        [ui.preset, f["task"], f["model.name"]],
        [*(f[k] for k in TASK_FIELDS), ui.setup_msg],  # by name, as on_task returns them
        **private,
    )
    f["task"].input(on_mapping_task, [f["task"], ui.map_pending], [ui.map_first, ui.map_second],
                  **private)  # fmt: skip
    ui.upload.upload(
        on_upload,
        [ui.upload, f["task"], ui.owner],
        [ui.upload_msg, f["data.name"], f["data.columns"], ui.map_box, ui.map_first, ui.map_second,
         ui.map_pending],
        **private,
    )  # fmt: skip
    ui.map_btn.click(
        on_map,
        [ui.map_pending, f["task"], ui.map_first, ui.map_second, ui.owner, ui.mapped],
        [ui.upload_msg, f["data.name"], f["data.columns"], ui.map_box, ui.mapped],
        **private,
    )
    f["data.name"].input(
        on_dataset_input, [f["data.name"], ui.mapped], f["data.columns"], **private
    )
    for kind, btn in ui.bench_buttons.items():
        btn.upload(
            ON_BENCH_UPLOAD[kind], [btn, ui.owner], [ui.bench_msg, f[f"bias.{kind}"]], **private
        )
    ui.check_btn.click(
        on_check, [ui.owner, ui.preset] + ui.form, [ui.setup_msg] + ui.form, **private
    )
    ui.estimate = gr.State(None)
    ui.estimate_btn.click(
        on_estimate,
        [ui.owner, ui.preset] + ui.form,
        [ui.setup_msg, ui.estimate],
        concurrency_limit=1,
        **private,
    )
