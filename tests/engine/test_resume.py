"""Checkpoints and ``--resume``: a stopped or crashed run continues bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import lab.engine.checkpoint as checkpoint
import lab.engine.trainer as trainer
from lab.__main__ import main
from lab.config import dump_yaml, load_preset
from lab.engine.checkpoint import resume_config
from lab.runs.store import read_events, request_stop

N = 6
# dropout on, so a resume that lost the RNG states draws different noise
FAST = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "lora.dropout=0.1",
    f"train.steps={N}",
    "train.eval_every=2",
]
ARMS = ("lora", "pissa", "balora")


def _cfg(extra=()):
    return load_preset("tiny-test", FAST + list(extra))


def _train_events(run_dir):
    out = []
    for e in read_events(run_dir / "events.jsonl"):
        if e["kind"] == "train":
            out.append({k: v for k, v in e.items() if k != "seconds"})
    return out


def _adapters(run_dir):
    return {
        arm: load_file(str(run_dir / "adapters" / arm / "adapter_model.safetensors"))
        for arm in ARMS
    }


def _assert_same_adapters(a, b):
    for arm in ARMS:
        assert a[arm].keys() == b[arm].keys()
        for k in a[arm]:
            assert torch.equal(a[arm][k], b[arm][k]), (arm, k)


def _same_adapters(a, b) -> bool:
    return all(torch.equal(a[arm][k], b[arm][k]) for arm in ARMS for k in a[arm])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of N steps."""
    out = tmp_path_factory.mktemp("ref") / "full"
    list(trainer.run(_cfg(), out))
    return out


def _stopped_at(out, k):
    """A run of N steps stopped (STOP file) after step k."""
    for ev in trainer.run(_cfg(), out):
        if ev["kind"] == "train" and ev["arm"] == ARMS[-1] and ev["step"] == k:
            request_stop(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps_done"] == k


def test_checkpoint_layout_keeps_only_the_latest(reference):
    ck = reference / "checkpoint"
    assert {p.name for p in ck.iterdir()} == {"state.json", "tensors.safetensors"}
    assert not [p for p in reference.iterdir() if p.name.startswith(".checkpoint")]
    state = json.loads((ck / "state.json").read_text())
    assert state["step"] == N and state["cursor"]["next_step"] == N + 1
    assert set(state["arms"]) == set(ARMS)
    for arm in ARMS:
        a = state["arms"][arm]
        assert a["status"] == "running" and a["tokens"] > 0
        assert a["scheduler"]["last_epoch"] == N
        assert a["optimizer"]["state"]  # Adam moments, as tensors in safetensors
    tensors = load_file(str(ck / "tensors.safetensors"))
    assert tensors["global/rng/cpu"].dtype == torch.uint8
    for arm in ARMS:
        assert tensors[f"{arm}/rng/cpu"].dtype == torch.uint8
        assert any(k.startswith(f"{arm}/optim/0/exp_avg") for k in tensors)
        assert any(k.startswith(f"{arm}/param/") for k in tensors)


def test_stopped_run_resumes_bitwise_equal(tmp_path, reference):
    out = tmp_path / "run"
    _stopped_at(out, 3)
    resumed = list(trainer.run(_cfg(), out, resume=True))
    assert min(e["step"] for e in resumed if e["kind"] == "train") == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == N
    assert summary["resumed_from"] == 3
    assert not (out / "STOP").exists()
    _assert_same_adapters(_adapters(out), _adapters(reference))
    assert _train_events(out) == _train_events(reference)


def test_crash_between_checkpoints_drops_the_later_events(tmp_path, reference):
    out = tmp_path / "run"
    gen = trainer.run(_cfg(), out)
    for ev in gen:  # dies during step 3; the last checkpoint is the eval point at step 2
        if ev["kind"] == "train" and ev["step"] == 3 and ev["arm"] == "pissa":
            break
    gen.close()
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 2
    assert max(e["step"] for e in read_events(out / "events.jsonl")) == 3
    list(trainer.run(_cfg(), out, resume=True))
    _assert_same_adapters(_adapters(out), _adapters(reference))
    assert _train_events(out) == _train_events(reference)


@pytest.mark.parametrize("lost", ["rng", "optimizer"])
def test_resume_without_a_restored_state_differs(tmp_path, reference, monkeypatch, lost):
    """The check above notices a resume that forgets the RNG or the optimizer state."""
    out = tmp_path / "run"
    _stopped_at(out, 3)
    real = checkpoint.load

    def forgetful(run_dir, arms):
        fresh = {n: a.rng for n, a in arms.items()}
        res = real(run_dir, arms)
        for n, a in arms.items():
            if lost == "rng":
                a.rng = fresh[n]
            else:
                a.optimizer.state.clear()
        return res

    monkeypatch.setattr(checkpoint, "load", forgetful)
    list(trainer.run(_cfg(), out, resume=True))
    assert not _same_adapters(_adapters(out), _adapters(reference))
    assert _train_events(out) != _train_events(reference)


def test_cli_resume_extends_the_steps(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--preset", "tiny-test", "--out", str(out), "--quiet"]
    assert main(args + [f"--set={s}" for s in FAST + ["train.steps=3"]]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--set", "train.steps=5", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == 5
    steps = [e["step"] for e in _train_events(out) if e["arm"] == "lora"]
    assert steps == [1, 2, 3, 4, 5]
    assert resume_config(out, []).train.steps == 5  # the config records the new plan
    # done with no new steps: a one-line error, exit 2
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nothing to resume" in err
    # only train.steps may change
    assert main(["train", "--resume", str(out), "--set", "train.lr=0.1"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "nock"
    out.mkdir()
    (out / "config.yaml").write_text(dump_yaml(_cfg()))
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no checkpoint" in err
    with pytest.raises(checkpoint.ResumeError, match="no checkpoint"):
        list(trainer.run(_cfg(), out, resume=True))
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ---- the Runs tab's Resume button ---------------------------------------------------------------


def _runs_root():
    from lab.ui import common

    return common.runs_root()


def _copy_run(src, name, status=None):
    import shutil

    dst = _runs_root() / name
    shutil.copytree(src, dst)
    if status:
        summary = json.loads((dst / "summary.json").read_text())
        summary["status"] = status
        (dst / "summary.json").write_text(json.dumps(summary))
    return dst


def test_resume_button_refuses_clearly(reference, monkeypatch):
    from lab.ui import runs as runs_tab

    _copy_run(reference, "finished")
    msg, followed, _ = runs_tab.on_resume("finished", None)
    assert msg.startswith("❌") and "run finished is done" in msg
    assert followed is not None and not isinstance(followed, str)  # gr.skip(): nothing followed
    nock = _copy_run(reference, "nock", "stopped")
    import shutil

    shutil.rmtree(nock / "checkpoint")
    assert "has no checkpoint to resume from" in runs_tab.on_resume("nock", None)[0]
    (_copy_run(reference, "torn", "failed") / "checkpoint" / "state.json").write_text("{")
    assert "checkpoint of run torn is unreadable" in runs_tab.on_resume("torn", None)[0]
    assert "'abc' is not a number" in runs_tab.on_resume("torn", "abc")[0]
    assert "a whole number of 1 or more" in runs_tab.on_resume("torn", 2.5)[0]
    assert "no run selected" in runs_tab.on_resume(None, None)[0]
    assert "unknown run" in runs_tab.on_resume("no-such-run", None)[0]
    assert "example run cannot be resumed" in runs_tab.on_resume("example", None)[0]
    import gradio as gr

    from lab.ui import layout

    with pytest.raises(gr.Error, match="run finished is done"):  # the same rules by the API
        layout.api_resume("finished")


def test_resume_button_is_owner_checked_in_public_mode(reference, monkeypatch):
    from lab.jobs import hosting
    from lab.ui import runs as runs_tab

    monkeypatch.setenv("BALORA_MODE", "public")
    _copy_run(reference, "theirs", "stopped")
    hosting.record_owner(_runs_root(), "theirs", "owner-token-aaaaaaaaaaaa")
    msg = runs_tab.on_resume("theirs", 8, "someone-else-bbbbbbbbbbbb")[0]
    assert "started by another visitor" in msg and "resume" in msg
    # a path for a run id, or a step count far past the public limits, is refused by name
    traversal = runs_tab.on_resume("../../etc", None, "owner-token-aaaaaaaaaaaa")[0]
    assert traversal.startswith("❌") and "/etc" not in traversal.replace("../../etc", "")
    huge = runs_tab.on_resume("theirs", 10**12, "owner-token-aaaaaaaaaaaa")[0]
    assert huge.startswith("❌") and "steps" in huge
    # the owner passes the ownership check and meets the next rule (6 of 6 steps trained)
    msg = runs_tab.on_resume("theirs", None, "owner-token-aaaaaaaaaaaa")[0]
    assert "already trained 6 of 6 steps" in msg


def test_resume_button_continues_a_stopped_run_to_a_new_total(reference):
    from lab.ui import common
    from lab.ui import runs as runs_tab

    out = _runs_root() / "halted"
    _stopped_at(out, 3)
    msg, followed, _ = runs_tab.on_resume("halted", 8)
    assert msg.startswith("✅") and "to 8 steps" in msg and followed == "halted"
    job = common.manager().wait("halted", timeout=300)
    assert job.state == "done", job.error
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 8 and summary["resumed_from"] == 3
    assert [e["step"] for e in _train_events(out) if e["arm"] == "lora"] == list(range(1, 9))
    # the first N steps are those of the uninterrupted run
    first = [e for e in _train_events(out) if e["step"] <= 3]
    assert first == [e for e in _train_events(reference) if e["step"] <= 3]
