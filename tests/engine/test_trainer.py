"""The training loop: the run directory contract, seed matching, teacher, NaN and stop."""

from __future__ import annotations

import json

import pytest
import yaml

import lab.engine.steps as steps
import lab.engine.trainer as trainer
from lab.config import load_preset
from lab.datasets.encoding import DataError
from lab.engine import adapters
from lab.runs import events as schema
from lab.runs.store import load_run, request_stop

FAST = ["train.bias_eval=false", "train.analysis=false", "data.max_eval=4"]


def _run(tmp_path, overrides=(), name="r", **kw):
    cfg = load_preset("tiny-test", list(overrides))
    events = list(trainer.run(cfg, tmp_path / name, **kw))
    return cfg, events, tmp_path / name


def _train(events, arm):
    return [e for e in events if e["kind"] == "train" and e["arm"] == arm]


def _check_schema(lines: list[dict]) -> None:
    """Every line is an event of its declared kind, and validating it changes nothing."""
    for line in lines:
        assert schema.validate(line).dump() == line, line


def test_run_directory_contract(tmp_path):
    cfg, events, out = _run(tmp_path)
    for name in ("config.yaml", "events.jsonl", "summary.json"):
        assert (out / name).exists()
    lines = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert lines == events
    assert all({"arm", "step", "kind"} <= set(e) for e in lines)
    _check_schema(lines)
    assert {e["kind"] for e in lines} == {"train", "eval"}
    for e in (e for e in lines if e["kind"] == "train"):
        assert {
            "loss",
            "task_loss",
            "consistency",
            "diversity",
            "svd",
            "lr",
            "tokens",
            "seconds",
        } <= set(e)
    evals = [e for e in lines if e["kind"] == "eval"]
    assert {(e["arm"], e["step"]) for e in evals} >= {
        ("base", 0),
        ("lora", 8),
        ("pissa", 8),
        ("balora", 8),
    }
    assert all("task_metric" in e and "kl_to_base" in e and "bias" in e for e in evals)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["steps_done"] == cfg.train.steps
    assert set(summary["arms"]) == {"lora", "pissa", "balora"}
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert load_preset("tiny-test").to_dict() == resolved
    for arm in ("lora", "pissa", "balora"):
        assert (out / "adapters" / arm / "adapter_config.json").exists()
        assert (out / "adapters" / arm / "adapter_model.safetensors").exists()
    assert load_run(out).status == "done"


def test_the_event_schema_rejects_a_dropped_renamed_or_mistyped_key(tmp_path):
    _, events, _ = _run(tmp_path, [*FAST, "train.steps=1"])
    train = next(e for e in events if e["kind"] == "train" and e["arm"] == "balora")
    evals = next(e for e in events if e["kind"] == "eval" and e["arm"] == "balora")
    schema.validate(train)
    schema.validate(evals)
    optional = {"grad_norm"}
    for key in set(train) - optional:
        with pytest.raises(ValueError):
            schema.validate({k: v for k, v in train.items() if k != key})
    for key in ("seconds", "arm", "step", "kind"):  # the keys every eval event has
        with pytest.raises(ValueError):
            schema.validate({k: v for k, v in evals.items() if k != key})
    for ev, key in ((train, "task_loss"), (evals, "task_metric")):
        with pytest.raises(ValueError):  # a misspelt key
            schema.validate({(k + "s" if k == key else k): v for k, v in ev.items()})
        with pytest.raises(ValueError):  # a number written as text
            schema.validate({**ev, "seconds": str(ev["seconds"])})
    with pytest.raises(ValueError):
        schema.validate({**train, "weighted": {**train["weighted"], "svd": "0.1"}})
    with pytest.raises(ValueError):
        schema.validate({**train, "tokens": float(train["tokens"])})
    with pytest.raises(ValueError, match="kind"):
        schema.validate({**train, "kind": "trian"})


def test_saved_adapters_reproduce_the_final_eval(tmp_path):
    """Each saved adapter, loaded on a fresh base, gives the same metrics and drift as the run."""
    from peft import PeftModel

    from lab.analysis import DriftBase, SnapshotRequest, snapshot
    from lab.datasets import evaluate_task, load_task_data
    from lab.models import load_model

    cfg, events, out = _run(tmp_path, ["train.bias_eval=false"])
    final = {e["arm"]: e for e in events if e["kind"] == "eval" and e["step"] == cfg.train.steps}
    data = load_task_data("sentiment", task="nlg", seed=0, max_train=256, max_eval=16)
    probes = json.loads((out / "analysis" / "probe_texts.json").read_text())
    for arm in ("lora", "balora"):
        model = PeftModel.from_pretrained(
            load_model("tiny-llama").model, str(out / "adapters" / arm)
        )
        model.eval()
        metrics = evaluate_task(
            model, load_model("tiny-llama").tokenizer, data, max_examples=cfg.data.max_eval
        )
        assert metrics["task_metric"] == pytest.approx(final[arm]["task_metric"])
        snap = snapshot(
            model,
            load_model("tiny-llama").tokenizer,
            SnapshotRequest("nlg", probes["texts"], probes["labels"], max_len=cfg.train.seq_len),
            arm=arm,
            step=0,
            base=DriftBase(context=model.disable_adapter),
        )
        assert snap.summary()["kl_to_base"] == pytest.approx(
            final[arm]["kl_to_base"], rel=1e-3, abs=1e-6
        )


def test_zero_weights_make_balora_reproduce_pissa(tmp_path):
    _, events, _ = _run(tmp_path, [*FAST, "reg.lambda1=0", "reg.lambda2=0", "reg.lambda3=0"])
    pissa, balora = _train(events, "pissa"), _train(events, "balora")
    assert len(pissa) == len(balora) == 8
    for p, b in zip(pissa, balora):
        for key in ("loss", "task_loss", "consistency", "diversity", "svd"):
            assert abs(p[key] - b[key]) <= 1e-6, (p["step"], key)


def test_weights_change_the_balora_arm(tmp_path):
    _, events, _ = _run(tmp_path, [*FAST, "reg.lambda1=1.0", "reg.lambda2=0.5", "reg.lambda3=0.5"])
    pissa, balora = _train(events, "pissa"), _train(events, "balora")
    assert pissa[0]["task_loss"] == pytest.approx(balora[0]["task_loss"], abs=1e-6)  # same start
    assert max(abs(p["task_loss"] - b["task_loss"]) for p, b in zip(pissa, balora)) > 1e-4


def test_consistency_starts_at_zero_and_arms_share_batches(tmp_path):
    """At step 1 every student is still the base model, so the consistency term is 0 when the
    teacher is exact: the loaded model's own forward, in its own dtype (pinned here; an opt-in
    cheaper teacher such as bf16 autocast would make it clearly positive)."""
    cfg, events, _ = _run(tmp_path, [*FAST, "reg.teacher_dtype=model"])
    assert cfg.reg.teacher_dtype == "model"
    first = {e["arm"]: e for e in events if e["kind"] == "train" and e["step"] == 1}
    assert first["balora"]["consistency"] < 1e-6  # W - A0 B0 + A0 B0: W up to rounding
    assert first["lora"]["consistency"] == 0.0  # W + 0: the teacher's own computation, exactly
    # identical batches from the same seed: every arm saw the same tokens at every step
    assert len({e["tokens"] for e in first.values()}) == 1
    # lora and pissa are the same function at step 1 (W + 0 and W - A0B0 + A0B0)
    assert first["lora"]["task_loss"] == pytest.approx(first["pissa"]["task_loss"], abs=1e-4)


def test_same_seed_same_curves(tmp_path):
    _, a, _ = _run(tmp_path, FAST, name="a")
    _, b, _ = _run(tmp_path, FAST, name="b")
    key = lambda evs: [(e["arm"], e["step"], e["loss"]) for e in evs if e["kind"] == "train"]  # noqa: E731
    assert key(a) == key(b)


def test_nan_fails_one_arm_and_the_others_go_on(tmp_path, monkeypatch):
    real = steps.micro_batch_loss

    def poisoned(model, batch, cfg, lambdas, **kw):
        out = real(model, batch, cfg, lambdas, **kw)
        if lambdas[0] > 0:  # only the balora arm has a non-zero weight
            out.total = out.total * float("nan")
            out.values["task_loss"] = out.values["task_loss"] * float("nan")
        return out

    monkeypatch.setattr(steps, "micro_batch_loss", poisoned)
    _, events, out = _run(tmp_path, FAST)
    failed = [e for e in events if e["kind"] == "failed"]
    assert [e["arm"] for e in failed] == ["balora"] and "not finite" in failed[0]["error"]
    _check_schema([json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()])
    assert len(_train(events, "lora")) == 8 and len(_train(events, "balora")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["balora"]["status"] == "failed"
    assert summary["arms"]["lora"]["status"] == "done" and summary["status"] == "done"


def test_a_non_finite_term_fails_the_arm_naming_the_term(tmp_path, monkeypatch):
    import lab.engine.forward as forward

    real = forward.logits_svd_loss
    monkeypatch.setattr(forward, "logits_svd_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    _, events, _ = _run(tmp_path, [*FAST, "train.log_terms=false"])
    failed = [e for e in events if e["kind"] == "failed"]
    assert [e["arm"] for e in failed] == ["balora"]
    assert "the svd term is not finite at step 1" in failed[0]["error"]
    assert len(_train(events, "pissa")) == 8  # no terms computed there: unaffected


def test_stop_request_ends_at_the_next_step(tmp_path):
    cfg = load_preset("tiny-test", FAST)
    out = tmp_path / "stopped"
    seen = []
    for ev in trainer.run(cfg, out):
        seen.append(ev)
        if ev["kind"] == "train" and ev["arm"] == "balora" and ev["step"] == 3:
            request_stop(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps_done"] == 3
    assert max(e["step"] for e in seen if e["kind"] == "train") == 3
    assert all((out / "adapters" / a / "adapter_model.safetensors").exists() for a in cfg.arms)


def test_lambda_schedules():
    cfg = load_preset(
        "tiny-test", ["reg.lambda1_schedule=cosine", "reg.lambda23_warmup=0.5", "train.steps=11"]
    )
    first, last = steps.lambdas_at(cfg, "balora", 1), steps.lambdas_at(cfg, "balora", 11)
    assert first[0] == pytest.approx(cfg.reg.lambda1) and last[0] == pytest.approx(
        0.1 * cfg.reg.lambda1
    )
    assert first[1:] == (0.0, 0.0) and last[1:] == (cfg.reg.lambda2, cfg.reg.lambda3)
    assert steps.lambdas_at(cfg, "pissa", 5) == (0.0, 0.0, 0.0)


def test_nlu_path_reports_degenerate_svd(tmp_path):
    cfg = load_preset(
        "tiny-test",
        [*FAST, "task=nlu", "model.name=tiny-bert", "data.name=topics", "train.steps=3"],
    )
    events = list(trainer.run(cfg, tmp_path / "nlu"))
    _check_schema(events)
    assert any(k.startswith("recall/") for e in events if e["kind"] == "eval" for k in e)
    balora = _train(events, "balora")
    assert balora and all("svd" in e["inactive"] for e in balora)  # k=5 >= min(N=4, D)
    assert all(e["svd"] is None and e["consistency"] is not None for e in balora)


def test_bad_data_fails_before_a_run_directory_exists(tmp_path):
    bad = tmp_path / "empty.jsonl"
    bad.write_text('{"prompt": "hi", "response": ""}\n{"prompt": "", "response": "x"}\n')
    with pytest.raises(DataError):
        list(trainer.run(load_preset("tiny-test", [f"data.name={bad}"]), tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_sequence_length_over_the_model_limit(tmp_path):
    with pytest.raises(DataError, match="train.seq_len=1024 is over the model's limit of 512"):
        list(trainer.run(load_preset("tiny-test", ["train.seq_len=1024"]), tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_failure_mid_run_is_marked_failed(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(adapters, "save_adapter", boom)
    with pytest.raises(RuntimeError):
        _run(tmp_path, FAST, name="f")
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk on fire" in summary["error"]
