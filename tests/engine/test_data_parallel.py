"""Token-weighted losses: gradient accumulation and data parallelism give the full batch.

Every per-token term is divided by the step's global count of response tokens and the svd term
is computed over the global batch, so any split of a step's batch into micro-batches or
processes trains the same adapters as one micro-batch. The data here gives shards with unequal
token counts (checked), where a per-shard mean would weigh their tokens unequally.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lab.engine.steps as steps
import lab.engine.trainer as trainer
from lab.config import load_preset
from lab.engine.dist import Dist

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "train.steps=3",
    "train.warmup_ratio=0",
    "train.lr=0.001",
    # the svd term with a large weight, so a per-shard svd term would show
    "arms=lora,balora@0.5,0.05,0.5",
]


@pytest.fixture
def uneven(tmp_path) -> list[str]:
    """Overrides for a JSONL set whose responses have 1 to 9 words, so shards differ. The
    words vary: on repetitive text the top-k singular values of the svd term are nearly tied,
    and its gradient then turns float noise into visible differences."""
    import json
    import random

    rng = random.Random(0)
    words = "the a cat dog sat ran on under blue green fast slow tree house river stone".split()
    path = tmp_path / "uneven.jsonl"
    rows = [
        {
            "prompt": f"Say something about {rng.choice(words)}.",
            "response": " ".join(rng.choice(words) for _ in range(1 + i % 9)),
        }
        for i in range(96)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [*FAST, f"data.name={path}"]


def _adapters(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        d.name: load_file(str(d / "adapter_model.safetensors"))
        for d in sorted((out / "adapters").iterdir())
    }


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for arm in a:
        assert a[arm].keys() == b[arm].keys()
        for k in a[arm]:
            worst = max(worst, float((a[arm][k] - b[arm][k]).abs().max()))
    return worst


def _moved(out: Path, fresh: Path) -> float:
    return _max_diff(_adapters(out), _adapters(fresh))


def _unequal_shards(cfg, parts: int, strided: bool = True) -> list[int]:
    """Response tokens of each of ``parts`` shards of the first step's batch."""
    from lab.datasets.encoding import batch_order, make_batch

    task_data, bundle = trainer.prepare(cfg)
    first = next(iter(batch_order(len(task_data.train), cfg.train.batch_size, 1, cfg.train.seed)))
    picked = [task_data.train[i] for i in first]
    per = len(picked) // parts
    shards = [
        picked[p::parts] if strided else picked[p * per : (p + 1) * per] for p in range(parts)
    ]
    return [
        int(make_batch(bundle.tokenizer, rows, "nlg", cfg.train.seq_len)["reg_mask"].sum())
        for rows in shards
    ]


def _record_grads(monkeypatch) -> list[list[torch.Tensor]]:
    """Every arm step's gradients as the optimizer receives them, in call order."""
    seen: list[list[torch.Tensor]] = []
    real = Dist.sum_grads

    def recording(self, params):
        real(self, params)
        seen.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])

    monkeypatch.setattr(Dist, "sum_grads", recording)
    return seen


def test_grad_accumulation_gives_the_full_batch_adapters(tmp_path, monkeypatch, uneven):
    """The step's gradient itself, not only the adapters: AdamW's update hardly changes when
    the gradient is scaled, so two micro-batches whose losses were not divided by the step's
    global count would still train nearly the same adapters."""
    full_cfg = load_preset("tiny-test", [*uneven, "train.batch_size=6"])
    counts = _unequal_shards(full_cfg, 2, strided=False)
    assert counts[0] != counts[1], counts  # otherwise a per-micro-batch mean would pass too
    grads = _record_grads(monkeypatch)
    list(trainer.run(full_cfg, tmp_path / "full"))
    full_grads = list(grads)
    grads.clear()
    acc = load_preset("tiny-test", [*uneven, "train.batch_size=6", "train.grad_accum=2"])
    list(trainer.run(acc, tmp_path / "acc"))
    assert len(grads) == len(full_grads) == 2 * full_cfg.train.steps  # lora, balora per step
    for want, got in zip(full_grads[:2], grads[:2]):  # step 1: the same weights in both runs
        assert max(float(g.abs().max()) for g in want) > 1e-4  # a gradient to compare
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    zero = load_preset(
        "tiny-test", [*uneven, "train.batch_size=6", "train.steps=1", "train.lr=1e-12"]
    )
    list(trainer.run(zero, tmp_path / "start"))
    moved = _moved(tmp_path / "full", tmp_path / "start")
    assert moved > 1e-3  # training did move them
    # The step-1 gradients match above; after that, AdamW divides by sqrt(v), so where a
    # gradient entry is near zero the rounding difference between one batch and two summed
    # micro-batches moves that entry's update by up to ~lr (measured 1.9e-5 on an AMD EPYC,
    # under 1e-5 on an Ice Lake Xeon). A per-micro-batch mean would move them by ~moved.
    assert _max_diff(_adapters(tmp_path / "full"), _adapters(tmp_path / "acc")) < 0.01 * moved


def test_two_processes_give_the_one_process_adapters(tmp_path, uneven):
    """A real 2-process CPU launch (torchrun + gloo) against one process, same global batch."""
    one = load_preset("tiny-test", [*uneven, "train.batch_size=6"])
    assert len(set(_unequal_shards(one, 2))) == 2
    list(trainer.run(one, tmp_path / "one"))
    out = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "-m", "lab", "train", "--preset", "tiny-test",
        *[a for item in uneven for a in ("--set", item)],
        "--set", "train.batch_size=3", "--set", "model.device=cpu",
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _max_diff(_adapters(tmp_path / "one"), _adapters(out)) < 1e-5


class _FakeAccelerator:
    num_processes, is_main_process, process_index = 1, True, 0


def test_step_norm_counts_every_micro_batch():
    cfg = load_preset("tiny-test", FAST)
    dist = Dist(_FakeAccelerator())
    micro = [
        {"reg_mask": torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)},
        {"reg_mask": torch.tensor([[1, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)},
    ]
    assert steps.step_norm(micro, cfg, dist) == 6


@pytest.mark.parametrize("accum", [1, 3])
def test_logged_losses_are_global_token_means(tmp_path, uneven, accum):
    """The logged values of step 1 are the same whatever the split (one global mean)."""
    cfg = load_preset(
        "tiny-test", [*uneven, "train.steps=1", "train.batch_size=6", f"train.grad_accum={accum}"]
    )
    events = list(trainer.run(cfg, tmp_path / f"a{accum}"))
    first = {e["arm"]: e for e in events if e["kind"] == "train"}
    ref = load_preset("tiny-test", [*uneven, "train.steps=1", "train.batch_size=6"])
    ref_events = list(trainer.run(ref, tmp_path / f"r{accum}"))
    want = {e["arm"]: e for e in ref_events if e["kind"] == "train"}
    for arm in first:
        for k in ("task_loss", "consistency", "diversity", "svd", "loss"):
            assert first[arm][k] == pytest.approx(want[arm][k], rel=1e-5, abs=1e-7), (arm, k)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["reg.svd_norm=nuclear"], id="nlg-unfused"),
        pytest.param(
            ["task=nlu", "model.name=tiny-bert", "data.name=topics", "reg.svd_k=2"], id="nlu"
        ),
        pytest.param(
            ["task=nlu", "model.name=tiny-bert", "data.name=topics", "reg.svd_target=features"],
            id="nlu-features",
        ),
    ],
)
def test_grad_accumulation_on_the_other_paths(tmp_path, monkeypatch, extra):
    """The unfused NLG path (batch svd on (M, V) logits) and NLU (the covariance diversity and
    the svd term over the global batch) split into micro-batches as exactly. The tiny BERT's
    own dropout is switched off: its noise depends on the micro-batch shapes."""
    import lab.models.tiny as tiny

    real = tiny.build

    def no_dropout(*a, **k):
        model, tok = real(*a, **k)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model, tok

    monkeypatch.setattr(tiny, "build", no_dropout)
    base = [*FAST, "train.steps=2", "train.batch_size=6", *extra]
    list(trainer.run(load_preset("tiny-test", base), tmp_path / "full"))
    list(trainer.run(load_preset("tiny-test", [*base, "train.grad_accum=3"]), tmp_path / "acc"))
    assert _max_diff(_adapters(tmp_path / "full"), _adapters(tmp_path / "acc")) < 1e-5
