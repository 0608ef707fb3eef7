"""The UI handlers called directly: widgets -> overrides -> validated config, and bad input.

Bad input (a malformed upload, steps 0, a negative lambda, an unknown hub id without network)
must come back as a specific message, with nothing written under the runs directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pytest

from lab import jobs
from lab.config import ConfigError
from lab.runs import store as runs
from lab.ui import common, compare, setup, train, tune, uploads
from lab.ui import form as form_logic
from lab.ui import runs as runs_tab


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("BALORA_RUNS_DIR", str(path))
    return path


def as_keys(msg: str) -> str:
    """``**Steps** (train.steps): ...`` as ``train.steps: ...`` (the library's own wording)."""
    import re

    return re.sub(r"\*\*[^*]+\*\* \(([\w.]+)\)", r"\1", msg)


def form(preset: str = "tiny-test", **changes) -> tuple:
    values = form_logic.preset_values(preset)
    for key, value in changes.items():
        values[key.replace("__", ".")] = value
    return tuple(values[f] for f in form_logic.FIELDS)


def nothing_written(path: Path) -> bool:
    return not path.exists() or not any(p for p in path.iterdir() if p.name != "_uploads")


def test_preset_fills_every_field_and_round_trips_without_overrides():
    vals = setup.on_preset("tiny-test")
    assert len(vals) == len(form_logic.FIELDS) + 2 and "tiny-test" in vals[-1]
    assert "random 2-layer Llama" in vals[-2]  # the preset's own note under the picker
    values = dict(zip(form_logic.FIELDS, vals[:-2]))
    assert values["model.name"] == "tiny-llama" and values["train.steps"] == 8
    assert form_logic.form_overrides("tiny-test", values) == []


def test_changed_widgets_become_overrides_that_the_config_accepts():
    values = dict(
        zip(form_logic.FIELDS, form(train__steps=12, reg__lambda1=0.1, arms=["lora", "balora"]))
    )
    overrides = form_logic.form_overrides("tiny-test", values)
    assert sorted(overrides) == sorted(
        ["train.steps=12", "reg.lambda1=0.1", 'arms=["lora", "balora"]']
    )
    cfg, _, _ = form_logic.check_form("tiny-test", values)
    assert cfg.train.steps == 12 and cfg.reg.lambda1 == 0.1 and cfg.arms == ["lora", "balora"]


def test_custom_model_text_wins_over_the_dropdown():
    values = dict(zip(form_logic.FIELDS, form(model__custom="  some-org/some-model ")))
    assert 'model.name="some-org/some-model"' in form_logic.form_overrides("tiny-test", values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train__steps": 0}, "train.steps: must be at least 1"),
        ({"reg__lambda2": -0.01}, "reg.lambda2: must be in [0, 100]"),
        ({"arms": []}, "arms: at least one arm is needed"),
        ({"model__name": "tiny-bert"}, "supports task nlu, not nlg"),
        ({"train__lr": 0}, "train.lr: must be in (0, 10]"),
    ],
)
def test_bad_settings_show_the_field_and_write_nothing(runs_dir, changes, message):
    msg, *_ = setup.on_check(None, "tiny-test", *form(**changes))
    assert msg.startswith("❌") and message in as_keys(msg)
    msg, run_id = setup.on_start(None, "tiny-test", *form(**changes))
    assert run_id is None and message in as_keys(msg)
    assert nothing_written(runs_dir)


def test_unknown_hub_model_without_network(runs_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg, run_id = setup.on_start(
        None, "tiny-test", *form(model__custom="nobody-xyz/no-such-model-123")
    )
    assert run_id is None
    assert "nobody-xyz/no-such-model-123" in msg and "not in the local Hugging Face cache" in msg
    assert nothing_written(runs_dir)


def test_malformed_upload_is_refused_and_not_copied(runs_dir, tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "hi", "response": "there"}\n{"prompt": "oops"\n', encoding="utf-8")
    msg, update, *_ = uploads.on_upload(str(bad), "nlg")
    assert msg.startswith("❌") and "mine.jsonl line 2: not valid JSON" in msg
    assert "**Upload your own data**" in msg  # the visible field the error is about
    assert not (runs_dir / "_uploads").exists()
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"text,label\n\x00\x01\x02")
    msg, *_ = uploads.on_upload(str(binary), "nlu")
    assert "binary" in msg


def test_good_upload_is_copied_per_owner_and_selected(runs_dir, tmp_path):
    from lab.jobs import hosting

    good = tmp_path / "pairs.jsonl"
    good.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(6)),
        encoding="utf-8",
    )
    token = hosting.new_token()
    msg, update, columns, box, *_ = uploads.on_upload(str(good), "nlg", token)
    assert columns == "" and box["visible"] is False  # its own columns: no mapping needed
    dest = hosting.upload_dir(runs_dir, token) / "pairs.jsonl"
    assert dest.parent.name == hosting.digest(token)[:32]  # named by the server
    assert msg.startswith("✅") and "6 usable rows" in msg
    assert dest.read_text() == good.read_text()
    # the page sees the upload's name, never its server path; the manager resolves the name
    assert update.value == "upload:pairs.jsonl" and str(runs_dir) not in str(update.choices)
    values = dict(zip(form_logic.FIELDS, form(data__name=update.value)))
    cfg, _, _ = form_logic.check_form("tiny-test", values, token)
    assert cfg.data.name == str(dest)
    with pytest.raises(ConfigError, match="you have no upload named 'pairs.jsonl'"):
        form_logic.check_form("tiny-test", values, hosting.new_token())  # another visitor


def test_start_queues_a_job_and_train_tab_follows_it(runs_dir, monkeypatch):
    submitted = []

    class FakeManager:
        def submit(self, preset, overrides, owner=None, estimate_s=None):
            submitted.append((preset, overrides))
            return jobs.Job(
                run_id="r1", run_dir=runs_dir / "r1", preset=preset, overrides=overrides
            )

        def queue_position(self, run_id):
            return 2

    monkeypatch.setattr(common, "manager", lambda: FakeManager())
    msg, followed, tabs, *_ = train.on_start(None, None, "tiny-test", *form(train__steps=5))
    assert submitted == [("tiny-test", ["train.steps=5"])]
    assert followed == "r1" and "waiting in the queue at position 2" in msg


def test_tune_plans_the_grid_as_the_arms_of_one_job():
    plans = tune.plan_sweep("tiny-test", [], "0, 0.1", "0.005", "0", 4, True, "tune-ab12")
    assert len(plans) == 1 and "train.steps=4" in plans[0]
    arms = json.loads(plans[0][-1].removeprefix("arms="))
    assert arms == ["lora", "pissa", "balora@0,0.005,0", "balora@0.1,0.005,0"]
    with pytest.raises(ConfigError, match="the weights must be finite and 0 or more"):
        tune.plan_sweep("tiny-test", [], "-0.1, 0.1", "0", "0", 4, False, "tune-x")
    with pytest.raises(ConfigError, match="λ2 values: .abc. is not a number"):
        tune.plan_sweep("tiny-test", [], "0", "abc", "0", 4, False, "tune-x")
    with pytest.raises(ConfigError, match="keep it to 12"):
        tune.plan_sweep("tiny-test", [], "0 1 2 3", "0 1 2 3", "0", 4, False, "tune-x")


def test_status_and_progress_render_from_a_status_dict():
    st = {
        "run_id": "r9",
        "state": "queued",
        "queue_position": 3,
        "error": None,
        "steps": 10,
        "arms": {"lora": {"step": 4, "loss": 1.25, "evals": 1}},
    }
    assert "position **3**" in train.status_markdown(st)
    html = train.progress_html(st)
    assert "4 / 10" in html and "1.2500" in html


def test_resolve_run_refuses_paths_outside_the_runs_root(runs_dir):
    with pytest.raises(ValueError, match="not a run id"):
        common.resolve_run("../../etc")
    with pytest.raises(ValueError, match="no run selected"):
        common.resolve_run("")
    _, msg = compare.on_compare("", "hi", "", 8, 0, False)
    assert "no run selected" in msg


def test_config_diff_lists_changed_keys(runs_dir):
    from lab.config import dump_yaml, load_preset

    for rid, steps in (("a", 3), ("b", 7)):
        (runs_dir / rid).mkdir(parents=True)
        cfg = load_preset("tiny-test", [f"train.steps={steps}"])
        (runs_dir / rid / "config.yaml").write_text(dump_yaml(cfg))
    rows, diff = runs_tab.config_diff("a", "b")
    assert rows == [["train.steps", 3, 7]]  # no provenance in either: nothing else claimed
    assert "-  steps: 3" in diff and "+  steps: 7" in diff
    # where the runs were made differently shows after the settings; the times never do
    for rid, cpu, torch_v, started in (
        ("a", "CPU A", "2.13.0", "t1"),
        ("b", "CPU B", "2.13.0", "t2"),
    ):
        prov = {"device": "cpu", "dtype": "float32", "cores": 2, "torch_threads": 2,
                "processes": 1, "cpu": {"model": cpu, "native_bf16": []},
                "versions": {"torch": torch_v, "peft": "0.21.2" if rid == "a" else "0.22.0"}}  # fmt: skip
        runs.write_json(runs_dir / rid / "summary.json", {"provenance": prov, "started": started})
    rows, _ = runs_tab.config_diff("a", "b")
    assert rows == [
        ["train.steps", 3, 7],
        ["made on: CPU", "CPU A (native bf16: none)", "CPU B (native bf16: none)"],
        ["made on: peft", "0.21.2", "0.22.0"],
    ]


# ---- tabs that read a finished run from disk (a run directory written by hand, no model) -------


def fake_run(root: Path, run_id: str, steps: int = 3, lambda1: float = 0.025) -> Path:
    from lab.config import dump_yaml, load_preset

    path = root / run_id
    (path / "adapters").mkdir(parents=True)
    cfg = load_preset("tiny-test", [f"train.steps={steps}", f"reg.lambda1={lambda1}"])
    (path / "config.yaml").write_text(dump_yaml(cfg))
    bias = {"stereo_pref": {"value": 0.6, "ci_low": 0.4, "ci_high": 0.8, "n": 12}}
    events = [
        {
            "arm": "base",
            "step": 0,
            "kind": "eval",
            "task_metric": 0.5,
            "kl_to_base": 0.0,
            "bias": bias,
        }
    ]
    for step in range(1, steps + 1):
        for arm in cfg.arms:
            events.append(
                {
                    "arm": arm,
                    "step": step,
                    "kind": "train",
                    "loss": 3.0 / step,
                    "task_loss": 3.0 / step,
                }
            )
    for i, arm in enumerate(cfg.arms):
        b = {"stereo_pref": {"value": 0.55 - 0.02 * i, "ci_low": 0.3, "ci_high": 0.7, "n": 12}}
        events.append(
            {
                "arm": arm,
                "step": steps,
                "kind": "eval",
                "task_metric": 0.6 + 0.1 * i,
                "kl_to_base": 0.01 * (i + 1),
                "bias": b,
            }
        )
        (path / "adapters" / arm).mkdir()
        (path / "adapters" / arm / "adapter_config.json").write_text("{}")
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = {
        "name": cfg.name,
        "status": "done",
        "error": None,
        "steps_done": steps,
        "steps_total": steps,
        "arms": {a: {"status": "done"} for a in cfg.arms},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_reopen_redraws_every_figure_from_disk(runs_dir):
    fake_run(runs_dir, "20260101-000000-tiny-test-aaaa")
    out = runs_tab.on_open("20260101-000000-tiny-test-aaaa")
    msg, summary, config = out[:3]
    figs = dict(zip(runs_tab.FIGURES, out[3::2]))
    alts = dict(zip(runs_tab.FIGURES, out[4::2]))
    assert alts["loss"].startswith("Loss and each regularizer term. Loss and its terms")
    assert "lora:" in alts["loss"] and "points, last" in alts["loss"]
    assert msg.startswith("✅") and "| balora | 0.8 |" in summary and "tiny-llama" in config
    assert {t.name for t in figs["loss"].data} == {"lora", "pissa", "balora"}
    assert max(len(t.x) for t in figs["metric"].data) >= 1
    assert len(figs["bias"].data) == 4  # base + 3 arms
    assert runs_tab.runs_table()[0][:2] == ["20260101-000000-tiny-test-aaaa", "done"]


def test_bias_tab_table_has_a_ci_per_arm(runs_dir):
    from lab.ui import bias

    fake_run(runs_dir, "r-bias")
    rows, fig, msg, verdicts = bias.on_show("r-bias")
    assert "no per-item records" in verdicts  # a fake run without items says so
    assert [r[0] for r in rows] == ["base", "lora", "pissa", "balora"]
    assert all(r[3] <= r[2] <= r[4] for r in rows)  # ci_low <= value <= ci_high
    _, _, msg, _ = bias.on_show("r-missing")
    assert "unknown run 'r-missing'" in msg


def test_adapters_zip_holds_every_arm(runs_dir, tmp_path):
    import zipfile

    fake_run(runs_dir, "r-zip")
    update, msg = runs_tab.on_zip("r-zip")
    assert update["visible"] is True
    names = zipfile.ZipFile(update["value"]).namelist()
    assert {f"{a}/adapter_config.json" for a in ("lora", "pissa", "balora")} <= set(names)
    assert not any(p.suffix == ".zip" for p in (runs_dir / "r-zip").rglob("*"))  # built elsewhere
    (runs_dir / "r-empty").mkdir()
    (runs_dir / "r-empty" / "config.yaml").write_text("task: nlg\n")
    path, msg = runs_tab.on_zip("r-empty")
    assert path is None and "no saved adapters" in msg


def test_classroom_replay_cuts_the_run_at_a_step(runs_dir, monkeypatch):
    from lab.ui import classroom

    monkeypatch.setattr(common, "EXAMPLE_RUN", fake_run(runs_dir, "example-copy", steps=6))
    out = classroom.on_open()
    assert out[0] == "" and out[4].maximum == 6
    assert "no per-item records" in out[1]  # a run made without items says so
    figs = dict(zip(classroom.FIGURES, classroom.on_step(2)[::2]))
    assert max(max(t.x) for t in figs["loss"].data) == 2
    timer, nxt, *_ = classroom.on_tick(5, True)
    assert nxt == 6 and timer.active is False
    timer, nxt, *_ = classroom.on_tick(1, True)  # mid-way: never switches the timer back on
    assert nxt == 2 and not isinstance(timer, gr.Timer)
    timer, nxt, *figs = classroom.on_tick(2, False)  # a tick after Pause changes nothing
    assert timer.active is False and nxt == gr.skip() and all(f == gr.skip() for f in figs)
    figs = dict(zip(classroom.FIGURES, classroom.on_step("4")[::2]))  # a typed step
    assert max(max(t.x) for t in figs["loss"].data) == 4
    monkeypatch.setattr(common, "EXAMPLE_RUN", runs_dir / "nothing")
    assert "example run is missing" in classroom.on_open()[0]


def test_tune_collects_a_sweep_and_draws_both_pareto_plots(runs_dir):
    fake_run(runs_dir, "20260101-000001-tune-ab12-0001", lambda1=0.0)
    fake_run(runs_dir, "20260101-000002-tune-ab12-0002", lambda1=0.1)
    fake_run(runs_dir, "20260101-000003-other-0003")
    assert tune.list_sweeps() == ["tune-ab12"]
    ids = tune.sweep_run_ids("tune-ab12")
    assert ids == ["20260101-000001-tune-ab12-0001", "20260101-000002-tune-ab12-0002"]
    table, by_bias, by_drift, pick, seen = tune.on_tick("tune-ab12", None)
    assert [r[1] for r in table] == ["done"] * 6  # one row per arm of each run
    assert {r[2] for r in table} == {
        "LoRA",
        "PiSSA",
        "λ=(0.0, 0.005, 0.005)",
        "λ=(0.1, 0.005, 0.005)",
    }
    labels = " ".join(" ".join(t.text) for t in by_bias.data if t.name != "Pareto front")
    assert "λ=(0.0, 0.005, 0.005)" in labels and "λ=(0.1, 0.005, 0.005)" in labels
    assert "drift" in by_drift.layout.xaxis.title.text
    again = tune.on_tick("tune-ab12", seen)
    assert again[0] == table  # table refreshed, figures skipped when nothing changed


def test_html_report_is_built_outside_the_run(runs_dir):
    fake_run(runs_dir, "r-report")
    update, msg = runs_tab.on_report("r-report")
    path = update["value"]
    text = Path(path).read_text(encoding="utf-8")
    assert msg.startswith("✅") and "r-report" in text and "stereo_pref" in text
    assert not Path(path).is_relative_to(runs_dir)


@pytest.fixture
def adapter_run(runs_dir) -> str:
    """A run whose three arms are real tiny-llama adapters (saved the trainer's way)."""
    import torch

    from lab.engine.adapters import make_arm, save_adapter
    from lab.models import load_model

    path = fake_run(runs_dir, "r-gen")
    for i, arm in enumerate(("lora", "pissa", "balora")):
        bundle = load_model("tiny-llama", task="nlg", device="cpu", seed=0)
        model = make_arm(
            bundle.model, arm, task="nlg", rank=4, alpha=8.0, dropout=0.0,
            target_modules=["auto"], pissa_niter=0, seed=0,
        )  # fmt: skip
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B.default" in name:
                    p.add_(0.2 * (i + 1) * torch.randn_like(p))
        (path / "adapters" / arm / "adapter_config.json").unlink()
        save_adapter(model, path / "adapters" / arm)
    return "r-gen"


def test_compare_shows_base_and_every_arm_with_base_loglik(adapter_run):
    html, msg = compare.on_compare(adapter_run, "Tell me about nurses.", "", 6, 0, False)
    assert msg.startswith("✅") and "4 models" in msg
    assert html.count('class="gen-card"') == 4
    _, rows = compare.compare(adapter_run, "Tell me about nurses.", "", 6, 0, False)
    assert [r["arm"] for r in rows] == ["base", "lora", "pissa", "balora"]
    assert all(r["tokens"] == 6 and r["loglik"] < 0 for r in rows)
    again = compare.compare(adapter_run, "Tell me about nurses.", "", 6, 0, False)[1]
    assert [r["text"] for r in again] == [r["text"] for r in rows]  # same seed, same outputs


def test_compare_marks_arms_that_failed_instead_of_generating(adapter_run, runs_dir):
    path = runs_dir / adapter_run
    summary = json.loads((path / "summary.json").read_text())
    summary["arms"]["balora"] = {"status": "failed", "error": "non-finite consistency at step 3"}
    (path / "summary.json").write_text(json.dumps(summary))
    html, msg = compare.on_compare(adapter_run, "Tell me about nurses.", "", 4, 0, False)
    assert "3 models" in msg and html.count('class="gen-card"') == 3
    assert "gen-failed" in html and "non-finite consistency at step 3" in html
    assert "random toy model" in html  # the run's base is tiny-llama
    _, rows = compare.compare(adapter_run, "Tell me about nurses.", "", 4, 0, False)
    assert [r["arm"] for r in rows] == ["base", "lora", "pissa"]


def test_compare_pair_reports_the_group_difference(adapter_run):
    pair = compare.pairs()[0]
    html, rows = compare.compare(adapter_run, "", "0", 5, 0, False)
    assert pair[2] in html and pair[3] in html
    for r in rows:
        expected = r["a"]["loglik_mean"] - r["b"]["loglik_mean"]
        assert r["delta"] == pytest.approx(expected)
        assert "delta_ci" not in r  # the tokens of two outputs are not a sample
    assert "over tokens" not in html and "one pair: no interval" in html
    _, msg = compare.on_compare(adapter_run, "   ", "", 5, 0, False)
    assert "the prompt is empty" in msg


def test_train_tick_redraws_only_what_changed(runs_dir):
    import plotly.graph_objects as go

    path = fake_run(runs_dir, "r-tick")
    status, progress, queue, stop, *figs, seen = train.on_tick("r-tick", {})
    assert "**done**" in status and "3 / 3" in progress
    assert stop.interactive is False  # a finished run cannot be stopped
    assert all(isinstance(f, go.Figure) for f in figs[::2])
    assert all(isinstance(t, str) and t for t in figs[1::2])  # a text summary per plot
    _, _, _, _, *figs, seen2 = train.on_tick("r-tick", seen)
    assert not any(isinstance(f, go.Figure) for f in figs) and seen2 == seen
    with open(path / "events.jsonl", "a") as f:  # one more train step: only the loss redraws
        f.write(json.dumps({"arm": "lora", "step": 4, "kind": "train", "loss": 0.5}) + "\n")
    _, _, _, _, *figs, _ = train.on_tick("r-tick", seen)
    drawn = [k for k, f in zip(train.FIGURES, figs[::2]) if isinstance(f, go.Figure)]
    assert drawn == ["loss"]
    assert "No run yet" in train.on_tick(None, {})[0]
    assert "unknown run id 'gone'" in train.on_tick("gone", {})[0]
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    assert train.on_tick("r-tick", {})[3].interactive is True  # running: Stop is live


def test_switching_task_loads_its_weights_and_a_model_that_can_do_it():
    model, l1, l2, l3, svd_k, msg = setup.on_task("tiny-test", "nlu", "tiny-llama")
    assert model == "minilm-l6" and (l1, l2, l3, svd_k) == (0.15, 0.03, 0.03, 5)
    model, l1, *_ = setup.on_task("tiny-test", "nlg", "smollm2-135m")
    assert model == "smollm2-135m" and l1 == 0.025


def test_a_run_with_items_opens_on_its_verdicts_in_the_page_and_the_report(runs_dir):
    from lab.config import load_preset
    from lab.engine.trainer import run as train_run
    from lab.plots.report import html_report
    from lab.ui import figures

    out = runs_dir / "r-items"
    cfg = load_preset("tiny-test", ["train.steps=2", "train.analysis=false"])
    for _ in train_run(cfg, out):
        pass
    md, forest = figures.evidence(out)
    lines = [x for x in md.splitlines() if x.startswith("- ")]
    assert lines and all("n = " in x for x in lines)  # never a verdict without n
    assert any("BA-LoRA" in x and "LoRA on clean accuracy" in x for x in lines)
    assert len(forest.data) >= 1
    assert "*Learning rates: one fixed rate for every arm (0.002), not tuned" in md
    assert "**In short:** BA-LoRA against LoRA: " in md  # the count before the lines
    assert md.index("**In short:**") < md.index(lines[0])
    page = html_report(out)
    assert "What changed" in page and page.count("<li>") == len(lines)
    assert "<b>In short:</b> BA-LoRA against LoRA: " in page
    assert "Learning rates: one fixed rate for every arm (0.002)" in page
    opened = runs_tab.reopen("r-items")
    assert "What changed" in opened["summary"]
    # the Train tab says the same when the run it follows ends, worked out once
    status, *_, seen = train.on_tick("r-items", {})
    assert "**done**" in status and "What changed" in status
    assert all(x in status for x in lines)
    assert seen["verdicts_of"] == "r-items"
    seen["verdicts"] = "cached verdicts"  # a later tick reuses them instead of recomputing
    assert "cached verdicts" in train.on_tick("r-items", seen)[0]


def test_train_status_line_while_running_is_the_labs_own(runs_dir):
    path = fake_run(runs_dir, "r-live")
    train.on_tick("r-live", {})  # the app's manager exists before the run turns "running"
    summary = json.loads((path / "summary.json").read_text())
    summary.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
    (path / "summary.json").write_text(json.dumps(summary))
    status = train.on_tick("r-live", {})[0]
    assert "step 3/3" in status and "elapsed" in status
    assert "What changed" not in status  # verdicts only once the run is done


def test_errors_name_the_visible_field_and_outline_it(runs_dir):
    msg, *fields = setup.on_check(None, "tiny-test", *form(train__steps=0))
    assert "**Steps** (train.steps): must be at least 1" in msg
    outlined = [f for f, u in zip(form_logic.FIELDS, fields) if u["elem_classes"]]
    assert outlined == ["train.steps"]
    msg, _, _, *fields = train.on_start(None, None, "tiny-test", *form(reg__lambda2=-1.0))
    assert "**λ2 diversity** (reg.lambda2)" in msg
    assert [f for f, u in zip(form_logic.FIELDS, fields) if u["elem_classes"]] == ["reg.lambda2"]
    msg, *fields = setup.on_check(None, "tiny-test", *form())
    assert msg.startswith("✅") and not any(u["elem_classes"] for u in fields)


def test_config_diff_shows_its_table_outside_the_collapsed_config(runs_dir):
    fake_run(runs_dir, "r-a", lambda1=0.0)
    fake_run(runs_dir, "r-b", lambda1=0.1)
    table, diff = runs_tab.on_diff("r-a", "r-b")
    assert table["visible"] is True
    assert ["reg.lambda1", 0.0, 0.1] in table["value"]
    assert "-  lambda1: 0.0" in diff or "lambda1" in diff


def test_counterfactual_difference_over_pairs_carries_a_t_interval():
    from scipy import stats

    from lab.engine.completions import pairs_interval

    deltas = [0.4, 0.1, 0.3, -0.2, 0.5]
    low, high = pairs_interval(deltas)
    ref = stats.ttest_1samp(deltas, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ref.low, ref.high)) and low < 0.22 < high
    assert pairs_interval([0.3]) is None  # one pair: no interval
    assert pairs_interval([0.3, 0.3]) is None  # no spread


def test_compare_all_pairs_gives_each_model_a_mean_over_the_pairs(adapter_run):
    html, rows = compare.compare(adapter_run, "", compare.ALL_PAIRS, 4, 0, False)
    n_pairs = len(compare.pairs())
    assert [r["arm"] for r in rows][0] == "base" and len(rows) >= 2
    for r in rows:
        assert r["n"] == n_pairs and r["ci"] is not None
        assert r["ci"][0] <= r["mean"] <= r["ci"][1]
    assert "over the pairs" in html and f"n = {n_pairs} pairs" in html
    assert compare.pair_choices()[-1][1] == compare.ALL_PAIRS


def test_compare_names_the_arms_without_a_saved_adapter(adapter_run, runs_dir):
    import shutil

    from lab.runs import store

    path = runs_dir / adapter_run
    shutil.rmtree(path / "adapters" / "pissa")
    note = compare.missing_note(path, store.load_run(path))
    assert "pissa" in note and "ended before saving" in note
    example = compare.missing_note(common.EXAMPLE_RUN, store.load_run(common.EXAMPLE_RUN))
    assert "pissa#s0" in example and "size budget" in example


def test_tune_shows_what_it_inherits_and_names_its_own_boxes_first(runs_dir):
    text = tune.on_show_settings(None, "tiny-test", *form(train__steps=7, arms=["lora"]))
    assert "preset **tiny-test**" in text and "tiny-llama" in text and "arms lora" in text
    # a bad λ box is reported as such even when the Setup form has its own problem
    msg, _ = tune.on_sweep(None, "tiny-test", "abc", "0", "0", 4, True, *form(arms=[]))
    assert "λ1 values: 'abc' is not a number" in msg


def test_setup_uploads_a_benchmark_file_into_the_run_config(runs_dir, tmp_path, monkeypatch):
    import shutil

    from lab.jobs import hosting

    data = Path(__file__).resolve().parents[1] / "data" / "bias"
    sample = Path(shutil.copy(data / "crows_pairs_sample.csv", tmp_path))
    token = hosting.new_token()
    msg, path = uploads.ON_BENCH_UPLOAD["crows_pairs"](str(sample), token)
    assert msg.startswith("✅") and "CrowS-Pairs" in msg and "bias.crows_pairs" in msg
    assert path == "upload:crows_pairs_sample.csv"  # its name, not its server path
    kept = hosting.upload_dir(runs_dir, token) / "crows_pairs_sample.csv"
    assert kept.is_file()
    cfg, overrides, _ = form_logic.check_form("tiny-test", dict(zip(form_logic.FIELDS, form(
        bias__crows_pairs=path))), token)  # fmt: skip
    assert cfg.bias.crows_pairs == str(kept) and any(
        o.startswith("bias.crows_pairs=") for o in overrides
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("sent_more,sent_less\n")
    msg, update = uploads.ON_BENCH_UPLOAD["crows_pairs"](str(bad), token)
    assert msg.startswith("❌") and update == gr.skip()
    monkeypatch.setenv("BALORA_MODE", "public")  # another visitor may not name this file
    monkeypatch.setattr(jobs.manager, "_MANAGERS", {})  # a manager is made with its app's mode
    with pytest.raises(ConfigError, match="not allowed on this public app"):
        form_logic.check_form("tiny-test", dict(zip(form_logic.FIELDS, form(
            bias__crows_pairs=str(kept)))), hosting.new_token())  # fmt: skip
    with pytest.raises(ConfigError, match="no upload named"):
        form_logic.check_form("tiny-test", dict(zip(form_logic.FIELDS, form(
            bias__crows_pairs=path))), hosting.new_token())  # fmt: skip


# ---- Setup: a preset's note, column mapping of an upload, our own status line ------------------


def test_preset_note_is_the_comment_block_at_the_top_of_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "\n# Hypothesis: *noisy* labels\n# hurt LoRA more.\n#\n# Second paragraph.\n"
        "name: x\n# not this\n"
    )
    note = form_logic.preset_note(str(path))
    assert note == "Hypothesis: *noisy* labels hurt LoRA more.\n\nSecond paragraph."
    shown = setup.note_markdown(note)
    assert shown == "> Hypothesis: \\*noisy\\* labels hurt LoRA more.\n>\n> Second paragraph."
    assert "SmolLM2-135M on sentiment" in form_logic.preset_note("classroom-cpu")
    (tmp_path / "bare.yaml").write_text("name: bare\n")
    assert form_logic.preset_note(str(tmp_path / "bare.yaml")) == ""
    *_, note, msg = setup.on_preset("no-such-preset")
    assert note == gr.skip() and "unknown preset" in msg


def mapped_upload(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_an_upload_with_other_columns_is_mapped_in_the_page(runs_dir, tmp_path):
    from lab.jobs import hosting

    rows = "".join(f"q{i},a{i},{i}\n" for i in range(6))
    path = mapped_upload(tmp_path, "qa.csv", "question,answer,id\n" + rows)
    token = hosting.new_token()
    msg, dataset, columns, box, first, second, pending = uploads.on_upload(path, "nlg", token)
    assert msg.startswith("🧭") and "`question`, `answer`, `id`" in msg
    assert dataset == gr.skip() and columns == gr.skip()  # nothing selected yet
    assert box["visible"] is True and pending == {
        "path": path,
        "columns": ["question", "answer", "id"],
    }
    assert (first.label, first.value, second.label, second.value) == (
        "Prompt column", "question", "Response column", "answer"
    )  # fmt: skip
    assert first.choices == [("question", "question"), ("answer", "answer"), ("id", "id")]
    assert not (runs_dir / "_uploads").exists()  # not copied before it is mapped

    msg, *_ = uploads.on_map(pending, "nlg", "question", "question", token)
    assert "**Response column**: column 'question' is already chosen for the prompt" in msg
    msg, *_ = uploads.on_map(pending, "nlg", None, "answer", token)
    assert "**Prompt column**: no column chosen" in msg
    msg, *_ = uploads.on_map(None, "nlg", "question", "answer", token)
    assert "**Upload your own data**: upload a file first" in msg

    msg, dataset, columns, box, mapped = uploads.on_map(pending, "nlg", "question", "answer", token)
    dest = hosting.upload_dir(runs_dir, token) / "qa.csv"
    assert msg.startswith("✅") and "6 usable rows with `question` as the prompt" in msg
    assert dataset.value == "upload:qa.csv" and box["visible"] is False and dest.is_file()
    assert json.loads(columns) == {"prompt": "question", "response": "answer"}
    assert mapped == {"upload:qa.csv": columns}
    # the mapping reaches the run's config through the hidden data.columns field
    values = dict(zip(form_logic.FIELDS, form(data__name="upload:qa.csv", data__columns=columns)))
    cfg, overrides, _ = form_logic.check_form("tiny-test", values, token)
    assert cfg.data.columns == {"prompt": "question", "response": "answer"}
    assert 'data.columns={"prompt": "question", "response": "answer"}' in overrides
    # picked again by hand, the upload keeps its mapping; a shipped set has none
    assert uploads.on_dataset_input("upload:qa.csv", mapped) == columns
    assert uploads.on_dataset_input("sentiment", mapped) == ""
    # without the mapping the same file is refused, naming the missing column
    values["data.columns"] = ""
    with pytest.raises(ValueError, match="missing column 'prompt'"):
        form_logic.check_form("tiny-test", values, token)


def test_mapping_follows_the_task_and_checks_the_labels(runs_dir, tmp_path):
    path = mapped_upload(tmp_path, "reviews.jsonl", "".join(
        json.dumps({"review": f"text {i}", "stars": i % 2, "note": ""}) + "\n" for i in range(8)
    ))  # fmt: skip
    msg, _, _, box, first, second, pending = uploads.on_upload(path, "nlu")
    assert box["visible"] and (first.label, first.value) == ("Text column", "review")
    assert second.value is None  # nothing looks like a label: the user picks it
    first, second = uploads.on_mapping_task("nlg", pending)
    assert (first.label, second.label) == ("Prompt column", "Response column")
    first, second = uploads.on_mapping_task("nlu", pending)
    assert (first.label, second.label) == ("Text column", "Label column")
    msg, *_ = uploads.on_map(pending, "nlu", "review", "note", None)
    assert "**Upload your own data**: reviews.jsonl has no usable rows" in msg  # empty labels
    msg, dataset, columns, *_ = uploads.on_map(pending, "nlu", "review", "stars", None)
    assert msg.startswith("✅") and json.loads(columns) == {"text": "review", "label": "stars"}


def test_an_empty_upload_names_the_upload_field(runs_dir, tmp_path):
    empty = mapped_upload(tmp_path, "empty.csv", "")
    msg, *_, box, _, _, pending = uploads.on_upload(empty, "nlg")
    assert "**Upload your own data**: empty.csv is empty" in msg
    assert box["visible"] is False and pending is None
    header = mapped_upload(tmp_path, "header.csv", "question,answer\n")
    msg, *_ = uploads.on_upload(header, "nlg")
    assert "header.csv has a header but no rows" in msg


def test_status_lines_are_our_own_text():
    from lab.jobs import checks

    assert (
        checks.progress_line(12, 24, 70, 40) == "step 12/24 · 1 min 10 s elapsed · about 40 s left"
    )
    assert checks.progress_line(0, 2, 3.4) == "step 0/2 · 3 s elapsed"
    assert checks.duration(3725) == "1 h 2 min" and checks.duration(120) == "2 min"
    events = [{"arm": a, "step": s, "kind": "train", "seconds": 2.0} for s in (1, 2) for a in "ab"]
    events += [{"arm": a, "step": 2, "kind": "eval", "seconds": 5.0} for a in "ab"]
    # 24 steps, eval every 2: 12 eval points, one done; 22 steps of 2 arms x 2 s left
    assert checks.time_left(events, 24, 2) == 22 * 4.0 + 11 * 10.0
    cfg = {"arms": ["a", "b"], "train": {"steps": 24, "eval_every": 2}}
    t0 = time.mktime(time.strptime("2026-01-01 10:00:00", "%Y-%m-%d %H:%M:%S"))
    line = checks.run_progress_line(events, cfg, {"started": "2026-01-01 10:00:00"}, now=t0 + 70)
    assert line == "step 2/24 · 1 min 10 s elapsed · about 3 min 18 s left"
    assert checks.run_progress_line(events, cfg, None) is None


def test_measure_streams_our_status_line_then_the_estimate(monkeypatch):
    def fake_progress(preset, overrides):
        yield {"done": 0, "total": 6, "elapsed_s": 1.0}
        yield {"done": 3, "total": 6, "elapsed_s": 14.2}
        yield {"per_arm_s": {"lora": 1.0, "pissa": 1.0, "balora": 2.0}, "steps": 2,
               "eval_s": {"base": 3.0, "lora": 2.0, "pissa": 2.0, "balora": 2.0},
               "per_point_s": 4.0, "startup_s": 10.0, "wall_s": 40.0}  # fmt: skip

    monkeypatch.setattr(jobs.checks, "measure_progress", fake_progress)
    out = list(setup.on_estimate(None, "tiny-test", *form()))
    msgs = [m for m, _ in out]
    assert msgs[1:3] == [
        "⏳ measuring: step 0/6 · 1 s elapsed",
        "⏳ measuring: step 3/6 · 14 s elapsed",
    ]
    assert all("processing" not in m for m in msgs)
    # tiny-test: 8 steps, eval_every 0 -> one eval point; 10 + 8 x 4 + 3 + (6 + 4)
    assert out[-1][1]["total_s"] == pytest.approx(10 + 32 + 3 + 10)
    assert "about **55 s**" in msgs[-1] and "joint t-SNE" in msgs[-1]
    msg, estimate = list(setup.on_estimate(None, "tiny-test", *form(train__steps=0)))[-1]
    assert estimate is None and "**Steps** (train.steps)" in msg


def test_estimate_counts_every_eval_point_with_its_t_sne_and_a_slow_first_step():
    from lab.config import load_preset
    from lab.jobs import checks

    events = [{"arm": "base", "step": 0, "kind": "eval", "seconds": 3.0}]
    events += [{"arm": a, "step": 1, "kind": "train", "seconds": 5.0} for a in ("x", "y")]
    events += [{"arm": a, "step": 2, "kind": "train", "seconds": 1.0} for a in ("x", "y")]
    events += [{"arm": a, "step": 2, "kind": "eval", "seconds": 2.0} for a in ("x", "y")]
    m = checks.timing(events, wall_s=30.0, tail_s=4.0, steps=2)
    # 30 s = 4 typical steps (4 s) + evals (3 + 4) + tail 4 + start-up 15 (slow first steps in it)
    assert m["startup_s"] == pytest.approx(15.0) and m["per_point_s"] == 4.0
    cfg = load_preset("tiny-test", ["train.steps=24", "train.eval_every=12"])
    est = checks.estimate_run(cfg, m)
    assert est["eval_s"] == pytest.approx(3.0 + 2 * (4.0 + 4.0))  # 2 eval points
    assert est["total_s"] == pytest.approx(15.0 + 24 * 2.0 + est["eval_s"])
    one = checks.estimate_run(load_preset("tiny-test", ["train.steps=2", "train.eval_every=0"]), m)
    assert one["total_s"] == pytest.approx(30.0)  # the timing run's own config: its wall time
    # the time between two steps beyond the arms' own seconds (the shared teacher pass)
    seen = [(10.0, events[1]), (11.0, events[2]), (14.5, events[3]), (15.5, events[4])]
    assert checks.step_overhead(seen) == pytest.approx(15.5 - 11.0 - 2.0)
    m = checks.timing(events, wall_s=30.0, tail_s=4.0, steps=2, step_overhead_s=2.5)
    assert m["startup_s"] == pytest.approx(10.0)
    est = checks.estimate_run(cfg, m)
    assert est["train_s"] == pytest.approx(24 * (2.0 + 2.5))
