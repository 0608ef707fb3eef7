"""Bias tab: every bias score of a run per arm, with its 95% confidence interval, as a table
and a chart (read from the run's eval events; no model is loaded); and published benchmark files
(CrowS-Pairs, BBQ, WinoGender) uploaded, checked in the page, and scored on a model or a run's
arms. An upload is read once from the temporary path gradio gives and held in memory (in the
page's state); ``check_benchmark`` is a plain function of that path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from lab import plots
from lab.bias.benchmarks import BENCHMARKS, score_target
from lab.bias.formats import LOADERS
from lab.datasets.encoding import DataError
from lab.runs import store as runs
from lab.ui import common, figures

HEADERS = ["arm", "score", "value", "CI low", "CI high", "n"]
EXPLAIN = (
    "**stereo_pref**: share of stereotype sentence pairs where the model prefers the "
    "stereotypical one (0.5 = no preference). **pronoun_abs_logodds**: how strongly it picks "
    "he or she for an occupation (0 = no preference). **pronoun_corr**: correlation of that "
    "preference with the share of women in the job. **flip_rate**: share of test inputs whose "
    "prediction changes when a group word is swapped (0 = never). The lines at the top compare "
    "the arms item by item (a paired difference, its interval, p and n); a score over fewer "
    f"than {plots.MIN_N} items is listed without an interval and left out of the chart."
)


def bias_view(run_id: str, owner: str | None = None):
    """-> (table rows, figure, verdict Markdown) of a run (``example`` is the shipped run)."""
    path = common.resolve_run(run_id, owner)
    run = runs.load_run(path)
    scored = plots.bias_rows(run.events)
    for r in scored:  # 1-4 items: no interval worth the name
        if not plots.reliable(r):
            r["ci_low"] = r["ci_high"] = None
    rows = [common.rounded(r) for r in figures.bias_table(scored)]
    if not rows:
        raise ValueError(
            f"run {run_id} has no bias scores yet (they come at eval points; "
            "train.bias_eval must be on)"
        )
    verdict_md, _ = figures.evidence(path, bias_only=True)
    return rows, plots.bias_figure(scored), verdict_md


@common.guarded
def on_show(run_id: str, owner: str | None = None):
    """-> [table, figure, message, verdicts]."""
    try:
        rows, fig, verdict_md = bias_view(run_id, owner)
    except common.USER_ERRORS as e:
        return [], gr.skip(), common.err(e), ""
    return rows, fig, common.ok(f"{len(rows)} scores"), verdict_md


@common.guarded
def on_refresh(owner: str | None = None):
    choices = [("example (classroom run)", "example")] + common.run_choices(owner=owner)
    return gr.Dropdown(choices=choices)


UPLOADS = {  # kind -> (label, accepted file types)
    "crows_pairs": ("CrowS-Pairs CSV", [".csv"]),
    "bbq": ("BBQ JSONL", [".jsonl", ".json"]),
    "winogender": ("WinoGender templates (TSV/CSV)", [".tsv", ".csv", ".txt"]),
    "winogender_stats": ("Occupation statistics CSV", [".csv"]),
}
BENCH_HELP = "\n".join(
    f"- **{b['title']}** — {b['format']}. *Limitation:* {b['limitation']}"
    for b in BENCHMARKS.values()
)


def benchmark_note(kind: str, n: int) -> str:
    """The benchmark's name, item count, known limitation and exact scoring convention."""
    if kind == "winogender_stats":
        return f"**Occupation statistics**: {n} occupations (used for `winogender/corr`)."
    b = BENCHMARKS[kind]
    return (
        f"**{b['title']}**: {n} items.\n\n*Known limitation:* {b['limitation']}\n\n"
        f"*Scoring:* {b['convention']}"
    )


def check_benchmark(kind: str, path: str | None) -> tuple[str, list[dict] | None]:
    """Validate an uploaded benchmark file: -> (message for the page, loaded items or None).

    The file is read from ``path`` once; the items are returned to be held in memory."""
    if kind not in LOADERS:
        return common.err(f"unknown benchmark kind {kind!r}"), None
    if not path:
        return "", None
    if not common.is_upload(path):
        return common.err("the upload was not received as a file"), None
    size = Path(path).stat().st_size
    if size > common.hosting().limits.upload_bytes:
        return common.err(f"the file is {size} bytes, over this app's upload limit"), None
    try:
        items = LOADERS[kind](path)
    except DataError as e:
        return common.err(e), None
    return common.ok(benchmark_note(kind, len(items))), items


def _store(kind: str, path: str | None, sets: dict | None):
    msg, items = check_benchmark(kind, path)
    sets = {k: v for k, v in (sets or {}).items() if k != kind}
    if items is not None:
        sets[kind] = items
    return msg, sets


def _uploader(kind: str):
    """The upload handler of one benchmark kind: (path, sets) -> (message, sets)."""

    def on_upload(path, sets):
        return _store(kind, path, sets)

    on_upload.__name__ = f"on_upload_{kind}"
    return common.guarded(on_upload)


on_upload_crows_pairs = _uploader("crows_pairs")
on_upload_bbq = _uploader("bbq")
on_upload_winogender = _uploader("winogender")
on_upload_winogender_stats = _uploader("winogender_stats")


ON_UPLOAD = {
    "crows_pairs": on_upload_crows_pairs,
    "bbq": on_upload_bbq,
    "winogender": on_upload_winogender,
    "winogender_stats": on_upload_winogender_stats,
}


RUN_TARGET = "run:"  # a target value naming a run by its id (never a server path)


def target_choices(owner: str | None = None) -> list[tuple[str, str]]:
    """The offline causal LMs, then the runs this visitor may see (their base model and arms
    are scored)."""
    from lab.models import list_models

    models = [
        (f"model: {r['name']}", r["name"])
        for r in list_models()
        if "nlg" in r["tasks"] and r["installed"]
    ]
    return models + [
        (f"run: {label}", RUN_TARGET + rid) for label, rid in common.run_choices(owner=owner)
    ]


def score_uploads(target: str, sets: dict | None, owner: str | None = None):
    """-> (table rows, figure) of the uploaded benchmarks scored on a model or a run's arms,
    at most the hosting mode's ``bias_items`` items per benchmark."""
    if not target or target not in {v for _, v in target_choices(owner)}:
        raise DataError("choose a model or a run from the list")
    if target.startswith(RUN_TARGET):
        target = str(common.resolve_run(target[len(RUN_TARGET) :], owner))
    limit = common.hosting().limits.bias_items
    res = score_target(target, {}, sets=sets or {}, max_items=limit)
    scored = [
        {"arm": arm, "score": name, **s}
        for arm, scores in res["arms"].items()
        for name, s in scores.items()
    ]
    rows = [common.rounded(r) for r in figures.bias_table(scored)]
    headline = [r for r in scored if r["score"].count("/") == 1]
    return rows, plots.bias_figure(headline)


@common.guarded
def on_refresh_targets(owner: str | None = None):
    return gr.Dropdown(choices=target_choices(owner))


@common.guarded
def on_score(target: str, sets: dict | None, owner: str | None = None):
    try:
        rows, fig = score_uploads(target, sets, owner)
    except common.USER_ERRORS as e:
        return [], gr.skip(), common.err(e)
    return rows, fig, common.ok(f"{len(rows)} scores")


@dataclass(frozen=True)
class BiasTab:
    """What the layout fills of the Bias tab when the page loads: the run picker, the outputs
    of :func:`on_show` in its order, and the benchmark target picker."""

    run: gr.Dropdown
    shown: list
    target: gr.Dropdown


def build(owner: gr.State) -> BiasTab:
    """Create the Bias tab's widgets and wire them; ``owner`` is the visitor's token."""
    gr.Markdown(EXPLAIN)
    with gr.Row():
        run = gr.Dropdown(
            [("example (classroom run)", "example")],  # the visitor's runs come on page load
            value="example",
            label="Run",
            info="Scores from the latest evaluation of each arm (and the untouched base model).",
            allow_custom_value=True,
        )
        refresh = gr.Button("↻ Refresh", scale=0)
        btn = gr.Button("Show", variant="primary", scale=0)
    msg = gr.Markdown()
    verdicts = gr.Markdown(elem_id="bias-verdicts")
    fig = gr.Plot(plots.empty_figure("pick a run"), label=figures.LABELS["bias"])
    table = gr.Dataframe(headers=HEADERS, interactive=False, label="Bias scores")
    shown = [table, fig, msg, verdicts]  # on_show's order
    private = {"api_visibility": "private"}
    refresh.click(on_refresh, owner, run, **private)
    btn.click(on_show, [run, owner], shown, **private)
    target = build_benchmarks(owner, refresh)
    return BiasTab(run, shown, target)


def build_benchmarks(owner: gr.State, refresh: gr.Button) -> gr.Dropdown:
    """Uploads of published benchmark files, checked in the page, scored on demand; the tab's
    ``refresh`` button refreshes the target list too. -> the target picker."""
    private = {"api_visibility": "private"}
    with gr.Accordion("Published benchmarks: CrowS-Pairs, BBQ, WinoGender", open=False):
        gr.Markdown(
            "Upload the files you have, in their published formats; each is checked here and "
            "scored the way lm-evaluation-harness scores it (a run scores them at every eval "
            "point with the `bias.*` config keys).\n\n" + BENCH_HELP
        )
        sets = gr.State({})
        buttons = {}
        with gr.Row():
            for kind, (label, types) in UPLOADS.items():
                buttons[kind] = gr.UploadButton(
                    f"Upload {label}", file_types=types, type="filepath", file_count="single",
                    elem_id=f"bias-upload-{kind.replace('_', '-')}",
                )  # fmt: skip
        upload_msg = gr.Markdown(elem_id="bias-upload-msg")
        with gr.Row():
            target = gr.Dropdown(
                target_choices()[:0], label="Score on", allow_custom_value=False,
                info="A model (the untouched weights) or a run (its base model and every arm).",
            )  # fmt: skip
            score_btn = gr.Button("Score", variant="primary", scale=0)
        bench_msg = gr.Markdown()
        bench_fig = gr.Plot(
            plots.empty_figure("scores appear here"), label="Benchmark scores with 95% CIs"
        )
        bench_table = gr.Dataframe(headers=HEADERS, interactive=False, label="Benchmark scores")
    for kind, widget in buttons.items():
        fn = ON_UPLOAD[kind]
        widget.upload(fn, [widget, sets], [upload_msg, sets], **private)
    refresh.click(on_refresh_targets, owner, target, **private)
    score_btn.click(
        on_score, [target, sets, owner],
        [bench_table, bench_fig, bench_msg],
        concurrency_limit=1, **private,
    )  # fmt: skip
    return target
