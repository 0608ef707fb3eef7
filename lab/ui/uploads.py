"""Uploads on the Setup tab: a dataset file (checked row by row, its columns mapped to the
task's roles when they are not the expected ones) and published bias benchmark files.

Every upload is checked before it is kept, then copied into the visitor's own folder under a
name the server chooses; the handlers return the widget updates, nothing else.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import gradio as gr

from lab.config import check_value
from lab.jobs import hosting
from lab.ui import common
from lab.ui.form import ROLE_LABELS, USER_ERRORS, columns_text, dataset_choices, role_error

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


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


def keep_upload(path: str, task: str, owner: str | None, columns: dict[str, str] | None = None):
    """Check every row of a dataset upload (its ``columns`` mapped to the task's roles, when
    given) within this app's limits, then keep it in the visitor's folder.
    -> (usable rows, warnings, where it now lies)."""
    from lab.datasets.uploads import validate_upload

    lim = common.hosting().limits
    rows, warnings = validate_upload(
        path,
        task=task,
        columns=columns,
        max_bytes=lim.upload_bytes,
        max_rows=lim.upload_rows,
        max_classes=lim.classes,
    )
    return rows, warnings, store_upload(path, owner)


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
    from lab.datasets.uploads import file_columns, guess_mapping, needs_mapping

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
            roles = " and ".join(f"**{ROLE_LABELS[r]}**" for r in task_roles(task))
            shown = common.escape_markdown(name)
            msg = (
                f"🧭 {shown} has the columns {', '.join(f'`{c}`' for c in columns)}, not "
                f"the ones task {task} needs. Choose its {roles} below, then **Use these columns**."
            )
            return msg, skip, skip, MAP_SHOWN, first, second, pending
        rows, warnings, dest = keep_upload(path, task, owner)
    except USER_ERRORS as e:
        return common.err(role_error(str(e))), skip, skip, MAP_HIDDEN, skip, skip, None
    note = "".join(f"\n\n⚠️ {w}" for w in warnings)
    msg = common.ok(f"{name}: {len(rows)} usable rows; selected as the dataset") + note
    return msg, _select(dest), "", MAP_HIDDEN, skip, skip, None


def task_roles(task: str) -> tuple[str, str]:
    from lab.datasets.uploads import ROLES

    if (bad := check_value("task", task)) is not None:
        raise ValueError(f"task: {bad}")
    return ROLES[task]


def _select(dest: Path):
    """The dataset dropdown with the kept upload selected, by its name (``upload:<file>``): the
    server path stays on the server (the job manager resolves the name for this visitor)."""
    ref = hosting.upload_ref(dest)
    return gr.Dropdown(choices=dataset_choices() + [ref], value=ref)


def role_info(role: str) -> str:
    return f"The file's column that holds the {role}."


def mapping_dropdowns(columns: list[str], task: str, guess: dict[str, str | None]):
    """The two role dropdowns for ``task`` over the file's ``columns`` (guesses preselected)."""
    return [
        gr.Dropdown(
            choices=columns,
            value=guess.get(role),
            label=ROLE_LABELS[role],
            info=role_info(role),
        )
        for role in task_roles(task)
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
    from lab.datasets.uploads import check_mapping

    skip = gr.skip()
    if not isinstance(pending, dict) or not common.is_upload(pending.get("path")):
        return common.err(role_error("upload a file first")), skip, skip, skip, skip
    path = pending["path"]
    try:
        roles = task_roles(task)
        mapping = check_mapping(dict(zip(roles, (first, second))), pending["columns"], task)
        rows, warnings, dest = keep_upload(path, task, owner, mapping)
    except USER_ERRORS as e:
        return common.err(role_error(str(e))), skip, skip, skip, skip
    text = columns_text(mapping)
    uses = ", ".join(f"`{c}` as the {r}" for r, c in mapping.items())
    note = "".join(f"\n\n⚠️ {w}" for w in warnings)
    name = common.escape_markdown(Path(path).name)
    msg = common.ok(f"{name}: {len(rows)} usable rows with {uses}; selected as the dataset")
    mapped = {**(mapped if isinstance(mapped, dict) else {}), hosting.upload_ref(dest): text}
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
        note = f"\n\nIt will be scored at every eval point of the run (`bias.{kind}`)."
        return msg + note, hosting.upload_ref(dest)

    on_upload.__name__ = f"on_bench_upload_{kind}"
    return common.guarded(on_upload)


BENCH_KINDS = ("crows_pairs", "bbq", "winogender", "winogender_stats")
ON_BENCH_UPLOAD = {kind: _bench_uploader(kind) for kind in BENCH_KINDS}
