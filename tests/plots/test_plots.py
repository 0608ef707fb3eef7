"""Figures from events and snapshot arrays alone, and the HTML rendering of a run directory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lab import plots
from lab.analysis import Snapshot, save_snapshot
from lab.runs import store as runs

ARMS = ("lora", "pissa", "balora")


def train_events(steps=4):
    out = []
    for step in range(1, steps + 1):
        for arm in ARMS:
            reg = arm == "balora"
            terms = {t: (0.1 * step if reg else None) for t in ("consistency", "diversity", "svd")}
            ev = {
                "arm": arm,
                "step": step,
                "kind": "train",
                "loss": 2.0 / step,
                "task_loss": 1.9 / step,
                **terms,
            }
            ev["weighted"] = {t: (None if v is None else 0.01 * v) for t, v in terms.items()}
            ev["inactive"] = {} if reg else {t: "weight is 0 for this arm" for t in terms}
            ev["lambdas"] = {"lambda1": 0.025, "lambda2": 0.005, "lambda3": 0.005}
            out.append(ev)
    return out


def bias(value):
    return {
        "stereo_pref": {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.04, "n": 150},
        "pronoun_corr": {"value": value / 2, "ci_low": None, "ci_high": None, "n": 60},
    }


def eval_events():
    out = [
        {
            "arm": "base",
            "step": 0,
            "kind": "eval",
            "task_metric": 0.5,
            "kl_to_base": 0.0,
            "bias": bias(0.6),
        }
    ]
    for step in (0, 4):
        for k, arm in enumerate(ARMS):
            out.append(
                {
                    "arm": arm,
                    "step": step,
                    "kind": "eval",
                    "task_metric": 0.5 + 0.1 * k * step / 4,
                    "kl_to_base": 0.01 * step * (k + 1),
                    "bias": bias(0.6 - 0.02 * k),
                }
            )
    return out


def snapshots():
    rng = np.random.default_rng(0)
    out = {}
    for arm in ("base", *ARMS):
        out[arm] = Snapshot(
            arm=arm,
            step=4,
            features=rng.normal(size=(12, 8)).astype(np.float32),
            labels=np.arange(12) % 3,
            output_spectrum=np.array([1.0, 0.3, 0.1, 0.02], np.float32),
            adapter_spectra={}
            if arm == "base"
            else {"m.q": np.array([0.5, 0.2], np.float32), "m.v": np.array([0.4, 0.0], np.float32)},
            drift_per_text=None if arm == "base" else rng.random(12).astype(np.float32),
            intruders={} if arm == "base" else {"m.q": 1, "m.v": 0},
        )
    return out


def names(fig):
    return [t.name for t in fig.data]


def is_empty(fig):
    return len(fig.data) == 0 and len(fig.layout.annotations) == 1


def test_plots_imports_neither_torch_nor_gradio():
    code = (
        "import sys, lab.plots; print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loss_figure_traces_and_inactive_terms():
    fig = plots.loss_figure(train_events())
    # total + task loss for 3 arms, the three regularizer terms for balora only
    assert len(fig.data) == 3 * 2 + 3
    assert names(fig).count("balora") == 5 and names(fig).count("lora") == 2
    assert sum(t.showlegend is not False for t in fig.data) == 3  # one legend entry per arm
    notes = [a.text for a in fig.layout.annotations if "inactive" in (a.text or "")]
    assert len(notes) == 3 and all("lora inactive: weight is 0" in n for n in notes)
    weighted = plots.loss_figure(train_events(), weighted=True)
    svd = [t for t in weighted.data if t.name == "balora"][-1]
    assert list(svd.y) == pytest.approx([0.001 * s for s in range(1, 5)])


def test_metric_drift_figures():
    events = train_events() + eval_events()
    fig = plots.metric_figure(events)
    assert names(fig) == ["base", "lora", "pissa", "balora"]
    assert fig.data[0].line.dash == "longdash" and list(fig.data[0].x) == [
        0,
        4,
    ]  # base across the run
    drift = plots.drift_figure(events)
    assert names(drift) == list(ARMS)  # no line for the base model
    assert list(drift.data[2].y) == pytest.approx([0.0, 0.12])
    assert "kl_to_base" in plots.metric_keys(events) and "task_metric" in plots.metric_keys(events)


def test_spectra_intruders_and_tsne_figures():
    snaps = snapshots()
    fig = plots.spectra_figure(snaps)
    assert names(fig) == [
        "base",
        "lora",
        "lora update",
        "pissa",
        "pissa update",
        "balora",
        "balora update",
    ]
    assert fig.layout.yaxis.type == "log"
    update = [t for t in fig.data if t.name == "lora update"][0]
    assert list(update.y) == pytest.approx([0.45, 0.1])  # mean over modules, zeros dropped
    one = plots.spectra_figure(
        {
            k: {"output_spectrum": v.output_spectrum, "adapter_spectra": v.adapter_spectra}
            for k, v in snaps.items()
        },
        module="m.q",
    )
    assert list([t for t in one.data if t.name == "pissa update"][0].y) == pytest.approx([0.5, 0.2])
    assert plots.adapter_modules(snaps) == ["m.q", "m.v"]
    intr = plots.intruders_figure(snaps)
    assert names(intr) == list(ARMS) and list(intr.data[0].y) == [1, 0]
    emb = {
        "coords": {arm: np.random.default_rng(1).normal(size=(12, 2)) for arm in snaps},
        "silhouette": {arm: 0.25 for arm in snaps},
        "eff_rank": {arm: 5.0 for arm in snaps},
    }
    tsne = plots.tsne_figure(emb, np.arange(12) % 3, ["neg", "neu", "pos"])
    assert len(tsne.data) == 4 * 3  # one trace per (arm, label)
    assert names(tsne)[:3] == ["neg", "neu", "pos"]
    assert sum(t.showlegend is not False for t in tsne.data) == 3
    assert tsne.layout.xaxis2.matches == "x" and tsne.layout.yaxis4.matches == "y"  # shared axes
    titles = [a.text for a in tsne.layout.annotations]
    assert titles[0].startswith("<b>base</b>") and "silhouette 0.25" in titles[0]


def test_bias_and_pareto_figures():
    rows = plots.bias_rows(eval_events())
    assert {r["arm"] for r in rows} == {"base", *ARMS} and len(rows) == 8
    fig = plots.bias_figure(rows)
    # one panel per scale: the preference (stereo_pref) and the correlation (pronoun_corr)
    assert names(fig) == ["base", "lora", "pissa", "balora"] * 2
    assert sum(t.showlegend is not False for t in fig.data) == 4  # one legend entry per arm
    with_ci, without = fig.data[1], fig.data[5]
    assert list(with_ci.x) == ["stereo_pref"] and list(without.x) == ["pronoun_corr"]
    assert with_ci.offsetgroup == without.offsetgroup == "lora"
    assert with_ci.error_y.array[0] == pytest.approx(0.04) and with_ci.error_y.arrayminus[
        0
    ] == pytest.approx(0.05)
    assert list(without.error_y.array) == [0]  # no interval, no error bar
    neutral = {shape.y0 for shape in fig.layout.shapes}
    assert neutral == {0.5, 0.0}  # each panel centred on its "no bias" value
    tiny = plots.bias_figure(
        [{"arm": "lora", "score": "stereo_pref/age", "value": 1.0, "ci_low": 1.0,
          "ci_high": 1.0, "n": 2}]
    )  # fmt: skip
    assert len(tiny.data) == 0  # a subgroup of 2 items gets no point and no interval
    negative = plots.bias_figure(
        [{"arm": "lora", "score": "corr", "value": -0.8, "ci_low": -0.9, "ci_high": 0.0}]
    )
    assert negative.data[0].error_y.array[0] == pytest.approx(0.8)  # an upper bound of 0 is kept
    points = [
        {"arm": "lora", "bias": 0.6, "task_metric": 0.7},
        {"arm": "pissa", "bias": 0.5, "task_metric": 0.6},
        {"arm": "balora", "bias": 0.55, "task_metric": 0.8},
        {"arm": "balora", "bias": 0.7, "task_metric": 0.65},
    ]
    fig = plots.pareto_figure(points)
    assert names(fig) == ["lora", "pissa", "balora", "Pareto front"]
    assert list(fig.data[-1].x) == [0.5, 0.55]  # lora and the last balora point are dominated
    assert plots.pareto_front([1, 2, 3], [1, 2, 3]) == [0, 1, 2]


@pytest.mark.parametrize(
    "build",
    [
        lambda: plots.loss_figure([]),
        lambda: plots.loss_figure([{"arm": "lora", "kind": "train"}, "junk", None]),
        lambda: plots.metric_figure(train_events()),
        lambda: plots.metric_figure(
            [{"arm": "lora", "step": 0, "kind": "eval", "task_metric": float("nan")}]
        ),
        lambda: plots.drift_figure([{"arm": "base", "step": 0, "kind": "eval", "kl_to_base": 0.0}]),
        lambda: plots.spectra_figure({}),
        lambda: plots.intruders_figure({"base": {"intruders": {}}}),
        lambda: plots.tsne_figure(None, None),
        lambda: plots.tsne_figure({"coords": {"base": np.zeros((3, 2))}}, [0, 1]),
        lambda: plots.bias_figure([]),
        lambda: plots.pareto_figure([{"arm": "lora", "bias": None, "task_metric": 1.0}]),
    ],
)
def test_figures_without_data_say_so(build):
    assert is_empty(build())


def test_figures_with_a_single_step():
    events = [e for e in train_events(1)] + [e for e in eval_events() if e["step"] == 0]
    assert len(plots.loss_figure(events).data) == 9
    assert len(plots.metric_figure(events).data) == 4
    assert len(plots.drift_figure(events).data) == 3


def make_run(root):
    run = root / "run-1"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"name": "t", "task": "nlg", "arms": list(ARMS), "train": {"seed": 0}})
    )
    with open(run / "events.jsonl", "w") as f:
        for ev in train_events() + eval_events():
            f.write(json.dumps(ev) + "\n")
    arms = {arm: {"status": "done", "task_metric": 0.6, "kl_to_base": 0.02} for arm in ARMS}
    runs.write_json(
        run / "summary.json",
        {"status": "done", "error": None, "steps_done": 4, "steps_total": 4, "arms": arms,
         "started": "2026-01-02 03:04:05", "finished": "2026-01-02 03:14:05",
         "provenance": {"git": {"commit": "ab" * 20, "dirty": True}, "device": "cpu",
                        "dtype": "float32", "load_in_4bit": False, "cores": 2,
                        "torch_threads": 2, "processes": 1,
                        "cpu": {"model": "Example <CPU>", "native_bf16": []},
                        "versions": {"torch": "9.9.9-of-the-run", "peft": None}}},
    )  # fmt: skip
    snaps = snapshots()
    for arm, snap in snaps.items():
        snap.step = 0 if arm == "base" else 4
        save_snapshot(run, snap)
    texts = [f"probe <text> {i}" for i in range(12)]
    runs.atomic_write_text(
        run / "analysis" / "probe_texts.json",
        json.dumps({"texts": texts, "labels": list(range(12)), "label_names": ["a", "b", "c"]}),
    )
    return run


def test_render_run_writes_every_figure(tmp_path):
    from lab.plots.report import html_report, render_run

    run = make_run(tmp_path)
    paths = render_run(run, tmp_path / "out")
    got = {p.name for p in paths}
    expected = {
        f"{n}.html"
        for n in (
            "loss",
            "loss_weighted",
            "task_metric",
            "drift",
            "spectra",
            "intruders",
            "tsne",
            "bias",
            "pareto",
        )
    }
    assert expected | {"report.html"} == got
    assert all(p.stat().st_size > 500 for p in paths)
    assert (tmp_path / "out" / "plotly.min.js").exists()  # written once, beside the files
    tsne = (tmp_path / "out" / "tsne.html").read_text()
    assert "silhouette" in tsne and "No joint embedding" not in tsne
    page = html_report(run)
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js inlined once
    assert "stereo_pref" in page and "probe &lt;text&gt;" in page and "plotly" in page
    assert page.count("Plotly.newPlot") == len(expected)
    # where the run was made: its own summary's provenance, not the versions drawing the page
    made = page[page.index("Where the run was made") : page.index("Packages that drew")]
    for text in ("abababababab with uncommitted changes", "cpu, float32",
                 "Example &lt;CPU&gt; (native bf16: none)", "2, 2, 1", "2026-01-02 03:14:05",
                 "9.9.9-of-the-run", "not installed"):  # fmt: skip
        assert text in made, text
    assert "9.9.9-of-the-run" not in page[page.index("Packages that drew") :]


def test_render_run_of_a_run_without_analysis(tmp_path):
    from lab.plots.report import render_run

    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.yaml").write_text("name: fresh\n")
    paths = render_run(run, tmp_path / "out")
    assert len(paths) == 10
    assert "No training steps yet" in (tmp_path / "out" / "loss.html").read_text()


def test_tsne_classes_never_wear_an_arm_colour():
    import numpy as np

    from lab.plots.common import ARM_COLORS
    from lab.plots.spectra import tsne_figure

    rng = np.random.default_rng(0)
    emb = {"coords": {a: rng.normal(size=(12, 2)).tolist() for a in ("lora", "pissa", "balora")}}
    fig = tsne_figure(emb, np.arange(12) % 4, ["a", "b", "c", "d"])
    colours = {t.marker.color for t in fig.data}
    assert len(colours) == 4 and not colours & set(ARM_COLORS.values())


def test_pareto_points_that_coincide_share_one_labelled_marker_and_the_front_is_drawn():
    points = [
        {"arm": "balora", "label": "λ=(0, 0, 0)", "bias": 0.2, "task_metric": 0.9},
        {"arm": "balora", "label": "λ=(0.1, 0, 0)", "bias": 0.2, "task_metric": 0.9},
        {"arm": "lora", "label": "LoRA", "bias": 0.3, "task_metric": 0.8},
    ]
    fig = plots.pareto_figure(points)
    balora = next(t for t in fig.data if t.name == "balora")
    assert list(balora.text) == ["λ=(0, 0, 0) = λ=(0.1, 0, 0)"] and "text" in balora.mode
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [0.2]  # one point dominates the rest: the front is still drawn


def test_report_names_each_scored_benchmark_its_limitation_and_convention(tmp_path):
    import json

    from lab.config import dump_yaml, load_preset
    from lab.plots.report import html_report

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(load_preset("tiny-test")))
    ev = {
        "arm": "base", "step": 0, "kind": "eval",
        "bias": {"crows_pairs/pct_stereotype": {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": 40}},
    }  # fmt: skip
    (run / "events.jsonl").write_text(json.dumps(ev) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "done", "arms": {}}))
    page = html_report(run)
    assert "CrowS-Pairs (Nangia et al., 2020)" in page and "Blodgett" in page
    assert "Scoring convention:" in page and "BBQ (Parrish" not in page


def test_the_app_and_the_report_draw_a_run_with_one_builder(tmp_path):
    from lab.plots import report
    from lab.plots import run as run_plots
    from lab.ui import figures

    run = make_run(tmp_path)
    page_figs = report.run_figures(run)
    ui_figs = figures.run_figures(runs.load_run(run), keys=("loss", "metric", "drift", "spectra"))
    weighted = figures.run_figures(runs.load_run(run), keys=("loss",), weighted=True)
    for ui_key, report_key in (("loss", "loss"), ("metric", "task_metric"), ("drift", "drift"),
                               ("spectra", "spectra")):  # fmt: skip
        assert ui_figs[ui_key].to_json() == page_figs[report_key].to_json(), ui_key
    assert weighted["loss"].to_json() == page_figs["loss_weighted"].to_json()
    assert weighted["loss"].to_json() != ui_figs["loss"].to_json()  # the flag reaches the builder
    # the report's Pareto plot is drawn from the points the Tune tab uses, one per trained arm
    points = run_plots.pareto_points(run)
    assert sorted(p["arm"] for p in points) == sorted(ARMS)
    pareto = page_figs["pareto"]
    assert {t.name for t in pareto.data} >= set(ARMS)
    assert "drift" in pareto.layout.xaxis.title.text
    with pytest.raises(KeyError, match="unknown figure"):
        run_plots.run_figures(run, ("losses",))


def test_a_cut_run_draws_only_its_past(tmp_path):
    from lab.plots import run as run_plots

    run = make_run(tmp_path)
    early = run_plots.run_figures(run, ("loss",), upto_step=2)["loss"]
    full = run_plots.run_figures(run, ("loss",))["loss"]
    assert max(max(t.x) for t in early.data if t.x) == 2
    assert max(max(t.x) for t in full.data if t.x) == 4


def test_html_table_escapes_cells_and_marks_missing_values():
    from lab.plots.tables import html_table

    out = html_table(["arm", "<score>"], [["lora", 0.123456], ["pissa <b>", None]])
    assert "<th>&lt;score&gt;</th>" in out and "<td>0.1235</td>" in out
    assert "<td>pissa &lt;b&gt;</td>" in out and "<td>–</td>" in out
    assert "<td></td>" in html_table(["a"], [[None]], missing="")
    assert html_table(["a"], [], empty="none") == "<p class='none'>none</p>"
    assert "<tbody></tbody>" in html_table(["a"], [])
    assert "<td>{k: 1}</td>" in html_table(["a"], [[{"k": 1}]])


def test_plain_arm_colours_are_okabe_ito_and_seeds_keep_them():
    from lab.plots.common import OKABE_ITO

    assert {plots.ARM_COLORS[a] for a in ("lora", "pissa", "balora")} <= set(OKABE_ITO.values())
    assert plots.arm_color("lora#s1") == plots.ARM_COLORS["lora"] == OKABE_ITO["blue"]


def test_tsne_panels_of_many_seeded_arms_wrap_onto_rows():
    arms = ["base"] + [f"{a}#s{s}" for s in (0, 1) for a in ("lora", "pissa", "balora")]
    rng = np.random.default_rng(0)
    emb = {"coords": {a: rng.normal(size=(6, 2)).tolist() for a in arms}}
    fig = plots.tsne_figure(emb, np.arange(6) % 2, ["neg", "pos"])
    layout = fig.to_plotly_json()["layout"]
    x_domains = {tuple(v["domain"]) for k, v in layout.items() if k.startswith("xaxis")}
    y_domains = {tuple(v["domain"]) for k, v in layout.items() if k.startswith("yaxis")}
    assert len(x_domains) == 4 and len(y_domains) == 2  # 7 panels: 4 columns, 2 rows
    one_row = plots.tsne_figure({"coords": {a: emb["coords"][a] for a in arms[:4]}}, None)
    assert fig.layout.height > one_row.layout.height
