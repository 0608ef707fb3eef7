"""scripts/make_example.py: a trained run shipped as the example, adapters in float16 within a
size budget, and the Compare tab generating from it at once (no training)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lab.jobs import hosting
from lab.runs.provenance import cpu_info
from lab.ui import common, compare

SCRIPT = ROOT / "scripts" / "make_example.py"


def script():
    spec = importlib.util.spec_from_file_location("make_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """A tiny example built by the script from the tiny-test preset (2 steps, tiny model)."""
    out = tmp_path_factory.mktemp("example") / "example_run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "tiny-test", "--set", "train.steps=2",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads(proc.stdout)
    assert entry["adapters"]  # what it shipped, printed as JSON
    # how long regenerating it took, and where: printed, and kept in the example's summary
    assert entry["trained_in_s"] > 0
    assert entry["trained_on"] == {"cpu": cpu_info()["model"], "cores": os.cpu_count()}
    made = f" on {os.cpu_count()} cores of {cpu_info()['model'] or 'an unknown CPU'}"
    assert re.search(r"example made in \d+ min \d+ s" + re.escape(made), proc.stderr)
    saved = json.loads((out / "summary.json").read_text())["example"]
    assert saved["trained_in_s"] == entry["trained_in_s"]
    return out


def test_the_example_fits_its_budget_with_half_precision_adapters(example):
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in example.rglob("*") if p.is_file())
    assert size < 5_000_000
    assert {"config.yaml", "events.jsonl", "summary.json", "adapters", "items"} <= {
        p.name for p in example.iterdir()
    }
    assert not (example / "checkpoint").exists() and not list(example.glob("*.log"))
    entry = json.loads((example / "summary.json").read_text())["example"]
    assert entry["adapters"] == ["adapters/lora", "adapters/pissa", "adapters/balora"]
    assert entry["adapters_left_out"] == [] and entry["adapter_dtype"] == "float16"
    for arm in ("lora", "pissa", "balora"):
        with safe_open(str(example / "adapters" / arm / "adapter_model.safetensors"), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}


def test_compare_generates_from_the_example_without_training(example, runs_dir, monkeypatch):
    monkeypatch.setattr(common, "EXAMPLE_RUN", example)
    choices = compare.adapter_run_choices()
    assert choices[0] == (compare.EXAMPLE_LABEL, hosting.EXAMPLE_ID)
    run_pick, _ = compare.on_page_load()
    assert run_pick.value == hosting.EXAMPLE_ID  # selected when the page opens
    html, msg = compare.on_compare(hosting.EXAMPLE_ID, "Tell me about nurses.", "", 5, 0, False)
    assert msg.startswith("✅") and "4 models" in msg and html.count('class="gen-card"') == 4
    assert not any(runs_dir.glob("*/config.yaml"))  # nothing was trained or written


def test_fp16_adapters_load_onto_the_base_models_precision(example):
    from lab.engine import completions
    from lab.runs import store as runs

    arm_set = completions.load_arm_set(example, runs.load_run(example).config, device="cpu")
    dtypes = {p.dtype for n, p in arm_set.model.named_parameters() if "lora_" in n}
    assert {str(d) for d in dtypes} == {"torch.float32"}  # cast to the base model's dtype
    assert arm_set.arms == ["lora", "pissa", "balora"]


def test_a_budget_too_small_for_every_adapter_ships_what_fits_and_says_so(example, tmp_path):
    mod = script()
    adapters = sum(p.stat().st_size for p in (example / "adapters").rglob("*") if p.is_file())
    rest = sum(p.stat().st_size for p in example.rglob("*") if p.is_file()) - adapters
    lora = sum(p.stat().st_size for p in (example / "adapters" / "lora").rglob("*"))
    entry = mod.export(example, tmp_path / "small", rest + lora + 4096 + 100)
    assert entry["adapters"] == ["adapters/lora"]
    assert "trained_in_s" not in entry  # shipped from a run, not trained here: no time claimed
    assert entry["adapters_left_out"] == ["adapters/pissa", "adapters/balora"]
    assert "left out" in entry["note"]
    saved = json.loads((tmp_path / "small" / "summary.json").read_text())["example"]
    assert saved["adapters_left_out"] == entry["adapters_left_out"]
    with pytest.raises(mod.ExampleError, match="over the 0.0 MB budget"):
        mod.export(example, tmp_path / "none", 1000)
    assert not (tmp_path / "none").exists()


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("BALORA_RUNS_DIR", str(path))
    return path


def test_grid_arms_show_their_names_in_compare(tmp_path):
    """A lambda-grid arm is saved under a folder name (no dots) but shown and activated by the
    name the config gives it."""
    from lab.config import load_preset
    from lab.engine import completions, trainer
    from lab.runs import store as runs

    cfg = load_preset(
        "tiny-test",
        ["train.steps=1", "train.bias_eval=false", "train.analysis=false",
         "arms=lora,balora@0.05,0.005,0.005"],
    )  # fmt: skip
    out = tmp_path / "grid"
    list(trainer.run(cfg, out))
    assert (out / "adapters" / "balora-0p05_0p005_0p005").is_dir()
    arm_set = completions.load_arm_set(out, runs.load_run(out).config, device="cpu")
    assert arm_set.arms == ["lora", "balora@0.05,0.005,0.005"]
    rows = completions.side_by_side(arm_set, "Say something.", max_new_tokens=3, seed=0)
    assert [r["arm"] for r in rows] == ["base", "lora", "balora@0.05,0.005,0.005"]
