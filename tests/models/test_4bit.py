"""4-bit (NF4 through bitsandbytes) on the CPU: every arm trains, the teacher stays exact.

bitsandbytes is a dependency (requirements.txt), so these run everywhere, CI included."""

from __future__ import annotations

import json

import torch

import lab.engine.trainer as trainer
from lab.arms import make_spec
from lab.config import load_preset
from lab.engine import adapters
from lab.models import load_model

ARMS = ["lora", "pissa", "balora", "balora@0.1,0.01,0.01"]


def _is_4bit(model) -> bool:
    return any(type(m).__name__ == "Linear4bit" for m in model.modules())


def test_tiny_model_loads_in_4bit_on_the_cpu():
    bundle = load_model("tiny-llama", load_in_4bit=True, device="cpu")
    assert _is_4bit(bundle.model) and bundle.device.type == "cpu"
    x = torch.randint(3, 250, (2, 12))
    with torch.no_grad():
        assert torch.isfinite(bundle.model(x).logits).all()


def test_teacher_equals_the_4bit_models_own_forward():
    bundle = load_model("tiny-llama", load_in_4bit=True, device="cpu")
    x = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = bundle.model(x).logits
    specs = [make_spec(a, lambdas=(0.025, 0.005, 0.005), lr=1e-3) for a in ARMS]
    model = adapters.build(
        bundle.model,
        specs,
        task="nlg",
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["auto"],
        pissa_niter=2,
        seed=0,
    )
    for spec in specs:  # every arm starts as the same function as the 4-bit model
        adapters.activate(model, spec.name)
        with torch.no_grad():
            start = model(x).logits
        assert (start - plain).abs().max() < 1e-4, spec.name
        with torch.no_grad():
            for p in adapters.trainable_parameters(model, spec.name):
                p.add_(0.05 * torch.randn_like(p))
    with torch.no_grad(), adapters.teacher_mode(model):
        teacher = model(x).logits
    assert torch.equal(teacher, plain)


def test_a_4bit_run_trains_every_arm(tmp_path):
    cfg = load_preset(
        "tiny-test",
        [
            "model.load_in_4bit=true",
            "model.device=cpu",
            "train.bias_eval=false",
            "train.analysis=false",
            "data.max_eval=4",
            "train.steps=3",
            "arms=" + ",".join(ARMS),
        ],
    )
    events = list(trainer.run(cfg, tmp_path / "q"))
    train = [e for e in events if e["kind"] == "train"]
    assert {e["arm"] for e in train} == set(ARMS) and len(train) == 3 * len(ARMS)
    first = {e["arm"]: e for e in train if e["step"] == 1}
    assert first["balora"]["consistency"] < 1e-6  # the teacher is the 4-bit model itself
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in train)
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["status"] == "done"
    assert summary["provenance"]["load_in_4bit"] is True
    for arm in ARMS:
        folder = summary["arms"][arm]["folder"]
        assert (tmp_path / "q" / "adapters" / folder / "adapter_model.safetensors").exists()
