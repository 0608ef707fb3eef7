"""Adapters: the teacher is the untouched model, PiSSA saves as LoRA that reloads exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from lab.engine.adapters import initial_adapter, make_arm, save_adapter, teacher_mode
from lab.models import load_model


def _arm(base, arm, task="nlg"):
    return make_arm(
        copy.deepcopy(base),
        arm,
        task=task,
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["auto"],
        pissa_niter=4,
        seed=0,
    )


def _perturb(model, scale=0.05):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


def _ids(n=2, t=24, vocab=250):
    return torch.randint(3, vocab, (n, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arm", ["lora", "pissa", "balora"])
def test_teacher_equals_untouched_model_after_training_steps(tiny_llama, arm):
    base = tiny_llama.model
    x = _ids()
    with torch.no_grad():
        ref = base(x).logits.float()
    model = _arm(base, arm)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        student = model(x).logits.float()
        with teacher_mode(model):
            teacher = model(x).logits.float()
        after = model(x).logits.float()
    assert torch.equal(teacher, ref)  # bit for bit: the base weights are never rewritten
    assert (student - ref).abs().max() > 1e-3  # the arm did move
    assert torch.equal(after, student)  # the adapter is active again after the teacher


def test_pissa_arm_leaves_the_base_weights_as_loaded(tiny_llama):
    """PEFT's PiSSA init rewrites W to the residual W - s B0 A0; here W stays, and the frozen
    initial adapter carries -s B0 A0, so the arm starts as exactly the same function."""
    base = copy.deepcopy(tiny_llama.model)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    x = _ids()
    with torch.no_grad():
        ref = base(x).logits
    model = make_arm(
        base,
        "pissa",
        task="nlg",
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["auto"],
        pissa_niter=4,
        seed=0,
    )
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in model.named_parameters()
        if "lora_" not in n
    }
    assert set(after) == set(before)
    assert all(torch.equal(after[n], before[n]) for n in before)
    with torch.no_grad():
        start = model(x).logits
    assert (start - ref).abs().max() < 1e-5


def test_teacher_adds_no_full_copy(tiny_llama):
    base = tiny_llama.model
    n_base = sum(p.numel() for p in base.parameters())
    model = _arm(base, "balora")
    n_arm = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert n_arm == n_base + lora
    assert lora < 0.5 * n_base


def test_initial_adapter_is_captured_for_pissa_only(tiny_llama):
    assert initial_adapter(_arm(tiny_llama.model, "lora")) is None
    init = initial_adapter(_arm(tiny_llama.model, "pissa"))
    assert init and all(a.shape[0] == 4 and b.shape[1] == 4 for a, b in init.values())


@pytest.mark.parametrize("arm", ["lora", "pissa"])
def test_saved_adapter_reloads_on_the_original_base(tiny_llama, tmp_path, arm):
    base = tiny_llama.model
    x = _ids()
    model = _arm(base, arm)
    _perturb(model)
    with torch.no_grad():
        out = model(x).logits
    save_adapter(model, tmp_path / arm)
    assert (tmp_path / arm / "adapter_model.safetensors").exists()
    fresh = load_model("tiny-llama", seed=0).model
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / arm))
    with torch.no_grad():
        again = loaded(x).logits
    assert (again - out).abs().max() < 1e-4


def test_nlu_teacher_keeps_the_initial_head(tiny_bert):
    base = tiny_bert.model
    x = _ids(4, 16)
    mask = torch.ones_like(x)
    with torch.no_grad():
        ref = base(input_ids=x, attention_mask=mask).logits
    for arm in ("lora", "balora"):
        model = _arm(base, arm, task="nlu")
        _perturb(model, 0.2)
        with torch.no_grad(), teacher_mode(model):
            teacher = model(input_ids=x, attention_mask=mask).logits
        assert (teacher - ref).abs().max() < 1e-4


def test_unknown_target_module_is_named(tiny_llama):
    with pytest.raises(ValueError, match="qkv_fused"):
        make_arm(
            copy.deepcopy(tiny_llama.model),
            "lora",
            task="nlg",
            rank=2,
            alpha=4,
            dropout=0.0,
            target_modules=["qkv_fused"],
            pissa_niter=2,
            seed=0,
        )


@pytest.mark.slow
def test_teacher_equals_untouched_smollm2():
    bundle = load_model("smollm2-135m")
    x = _ids(1, 16, 40000)
    with torch.no_grad():
        ref = bundle.model(x).logits.float()
    model = make_arm(
        bundle.model,
        "balora",
        task="nlg",
        rank=8,
        alpha=16,
        dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        pissa_niter=4,
        seed=0,
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad(), teacher_mode(model):
        teacher = model(x).logits.float()
    assert (teacher - ref).abs().max() < 1e-3


@pytest.mark.parametrize("arm", ["lora", "balora"])
def test_teacher_ignores_dropout_in_train_mode(tiny_llama, arm):
    base = tiny_llama.model
    x = _ids()
    with torch.no_grad():
        ref = base(x).logits
    model = make_arm(
        copy.deepcopy(base),
        arm,
        task="nlg",
        rank=4,
        alpha=8,
        dropout=0.5,
        target_modules=["auto"],
        pissa_niter=4,
        seed=0,
    )
    model.train()
    with torch.no_grad(), teacher_mode(model):
        teacher = model(x).logits
    assert model.training
    assert (teacher - ref).abs().max() < 1e-4


def test_pissa_arms_of_one_build_share_the_factors_they_would_compute_alone(tiny_llama):
    """The PiSSA SVDs are taken once per seed in a build; every arm still starts exactly where
    it would start built alone (and SVDs really are skipped: a patched SVD counts calls)."""
    from lab.arms import make_spec
    from lab.engine import adapters

    names = ["balora@0.1,0.01,0.01", "balora@0.05,0.005,0.005", "pissa"]
    specs = [make_spec(n, lambdas=(0.1, 0.01, 0.01), lr=1e-3) for n in names]
    kw = dict(task="nlg", rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"],
              pissa_niter=2, seed=3)  # fmt: skip
    calls = []
    real = torch.svd_lowrank

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    torch.svd_lowrank = counting
    try:
        together = adapters.build(copy.deepcopy(tiny_llama.model), specs, **kw)
        n_layers = len(adapters._lora_layers(together))
        shared_calls = len(calls)
        calls.clear()
        alone = {s.name: adapters.build(copy.deepcopy(tiny_llama.model), [s], **kw) for s in specs}
    finally:
        torch.svd_lowrank = real
    assert shared_calls == len(calls) // len(specs) > 0  # one arm's SVDs for three arms
    assert n_layers > 0
    for spec in specs:
        got = together.balora_arms[spec.name].trainable
        want = alone[spec.name].balora_arms[spec.name].trainable
        a = {n: p for n, p in together.named_parameters() if f".{got}." in n}
        b = {n.replace(f".{want}.", f".{got}."): p for n, p in alone[spec.name].named_parameters()
             if f".{want}." in n}  # fmt: skip
        assert a.keys() == b.keys() and len(a) > 0
        for n in a:
            assert torch.equal(a[n], b[n]), n
