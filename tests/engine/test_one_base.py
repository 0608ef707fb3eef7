"""One base model for every arm: each arm is adapters on the shared, untouched base.

Checked against the construction it replaces (one deep copy of the base per arm, PEFT's own
PiSSA init rewriting the copy's weights to the residual), for the teacher in every dtype, and
for the saved adapters reloaded on a fresh base.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model

import lab.engine.trainer as trainer
from lab.arms import make_spec
from lab.config import load_preset
from lab.engine import adapters
from lab.models import load_model

ARMS = ["lora", "pissa", "balora", "balora@0.1,0.01,0.01"]
KW = dict(task="nlg", rank=4, alpha=8, dropout=0.0, target_modules=["auto"], seed=0)


def _ids(n=2, t=24, vocab=250):
    return torch.randint(3, vocab, (n, t), generator=torch.Generator().manual_seed(1))


def _specs(names=ARMS):
    return [make_spec(a, lambdas=(0.025, 0.005, 0.005), lr=1e-3) for a in names]


def _shared(base, names=ARMS, niter=0):
    return adapters.build(base, _specs(names), pissa_niter=niter, **KW)


def _separate(base, arm: str):
    """The old construction: a deep copy per arm; PiSSA through PEFT (exact SVD)."""
    init = "pissa" if arm != "lora" else True
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules="all-linear",
        init_lora_weights=init,
        task_type=TaskType.CAUSAL_LM,
    )
    torch.manual_seed(0)
    return get_peft_model(copy.deepcopy(base), cfg)


def _perturb_trainable(model, arm: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapters.trainable_parameters(model, arm):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_every_arm_matches_its_separate_copy(tiny_llama):
    base = copy.deepcopy(tiny_llama.model)
    x = _ids()
    model = _shared(base)
    for i, arm in enumerate(ARMS):
        ref = _separate(tiny_llama.model, arm)
        trained = adapters.trainable_parameters(model, arm)
        # the same trainable start as PEFT's own init (for PiSSA: the SVD factors)
        ref_params = [p for n, p in ref.named_parameters() if "lora_" in n]
        assert len(trained) == len(ref_params)
        for mine, theirs in zip(trained, ref_params):
            assert (mine - theirs).abs().max() < 1e-5
        _perturb_trainable(model, arm, seed=i)
        with torch.no_grad():
            for mine, theirs in zip(trained, ref_params):
                theirs.copy_(mine)
            adapters.activate(model, arm)
            got = model(x).logits
            want = ref(x).logits
        assert (got - want).abs().max() < 1e-5, arm


def test_pissa_arms_of_a_seed_share_one_frozen_initial_adapter(tiny_llama):
    """The PiSSA arms of one seed start from the same factors, so they share one frozen
    -s B0 A0; another seed gets its own; training one arm leaves the others' functions."""
    base = copy.deepcopy(tiny_llama.model)
    specs = _specs(["lora", "pissa", "balora", "balora@0.1,0.01,0.01"])
    specs.append(replace(_specs(["pissa"])[0], name="pissa#s1", seed=1))
    model = adapters.build(base, specs, pissa_niter=0, **KW)
    frozen = {a.spec.name: a.frozen_init for a in model.balora_arms.values()}
    assert frozen == {
        "lora": None,
        "pissa": "ini_s0",
        "balora": "ini_s0",
        "balora@0.1,0.01,0.01": "ini_s0",
        "pissa#s1": "ini_s1",
    }
    assert set(model.peft_config) == {f"arm{i:02d}" for i in range(1, 6)} | {"ini_s0", "ini_s1"}
    x = _ids()
    with torch.no_grad():
        before = {}
        for arm in frozen:
            adapters.activate(model, arm)
            before[arm] = model(x).logits
        _perturb_trainable(model, "balora", seed=3)
        for arm in frozen:
            adapters.activate(model, arm)
            moved = (model(x).logits - before[arm]).abs().max()
            assert (moved > 1e-4) if arm == "balora" else (moved == 0), arm
    assert torch.equal(before["pissa"], before["balora@0.1,0.01,0.01"])  # one start, one seed


def test_one_base_holds_no_copy_and_never_rewrites_the_weights(tiny_llama):
    base = copy.deepcopy(tiny_llama.model)
    ptrs = {n: p.data_ptr() for n, p in base.named_parameters()}
    values = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = _shared(base, niter=2)
    n_base = sum(p.numel() for p in values.values())
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in model.parameters()) == n_base + lora
    for n, p in base.named_parameters():
        if "lora_" not in n:
            key = n.replace(".base_layer", "")
            assert p.data_ptr() == ptrs[key] and torch.equal(p, values[key]), n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_teacher_is_the_loaded_model_in_its_dtype(tiny_llama, dtype):
    base = copy.deepcopy(tiny_llama.model).to(dtype)
    x = _ids()
    with torch.no_grad():
        plain = base(x).logits
    model = _shared(base, niter=2)
    for i, arm in enumerate(ARMS):
        adapters.activate(model, arm)
        _perturb_trainable(model, arm, seed=10 + i)
    with torch.no_grad(), adapters.teacher_mode(model):
        teacher = model(x).logits
    assert teacher.dtype == plain.dtype
    assert torch.equal(teacher, plain)  # the same computation as the plain forward, bit for bit


def test_zero_weights_balora_reproduces_pissa_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    cfg = load_preset(
        "tiny-test",
        [
            "train.bias_eval=false",
            "train.analysis=false",
            "data.max_eval=4",
            "train.steps=4",
            "arms=pissa,balora@0,0,0",
        ],
    )
    events = list(trainer.run(cfg, tmp_path / "r"))
    train = [e for e in events if e["kind"] == "train"]
    pissa = [e for e in train if e["arm"] == "pissa"]
    zero = [e for e in train if e["arm"] == "balora@0,0,0"]
    assert [e["loss"] for e in pissa] == [e["loss"] for e in zero]
    a = load_file(str(tmp_path / "r" / "adapters" / "pissa" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "r" / "adapters" / "balora-0_0_0" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_saved_adapters_of_every_arm_reload_and_reproduce_it(tiny_llama, tmp_path):
    base = copy.deepcopy(tiny_llama.model)
    x = _ids()
    model = _shared(base, niter=2)
    for i, arm in enumerate(ARMS):
        adapters.activate(model, arm)
        _perturb_trainable(model, arm, seed=20 + i)
    for spec in _specs():
        adapters.activate(model, spec.name)
        with torch.no_grad():
            want = model(x).logits
        adapters.save_adapter(model, tmp_path / spec.folder, spec.name)
        fresh = load_model("tiny-llama", seed=0).model
        loaded = PeftModel.from_pretrained(fresh, str(tmp_path / spec.folder))
        with torch.no_grad():
            got = loaded(x).logits
        assert (got - want).abs().max() < 1e-4, spec.name


def test_learning_rate_by_arm_reaches_its_optimizer():
    cfg = load_preset(
        "tiny-test",
        {"arms": ["lora", "pissa", "balora@0.1,0,0"], "train": {"lr_by_arm": {"pissa": 1e-4}}},
    )
    _, bundle = trainer.prepare(cfg)
    arms = trainer.build_arms(cfg, bundle)
    lrs = {name: arm.scheduler.base_lrs[0] for name, arm in arms.items()}
    assert lrs == {"lora": cfg.train.lr, "pissa": 1e-4, "balora@0.1,0,0": cfg.train.lr}
    # each optimizer holds its own arm's adapter and nothing else
    owned = [
        {id(p) for g in arm.optimizer.param_groups for p in g["params"]} for arm in arms.values()
    ]
    assert all(owned) and not (owned[0] & owned[1]) and not (owned[1] & owned[2])


def test_adapter_state_equals_peft_state_dict(tiny_llama):
    """The fast read of an adapter's tensors gives PEFT's own state dict, key for key."""
    from peft import get_peft_model_state_dict

    model = _shared(copy.deepcopy(tiny_llama.model), ["lora", "pissa"])
    for ad in model.balora_arms.values():
        for name in filter(None, (ad.trainable, ad.frozen_init)):
            mine = adapters.adapter_state(model, name)
            theirs = get_peft_model_state_dict(model, adapter_name=name)
            assert mine.keys() == theirs.keys() and len(mine) > 0, name
            for k in mine:
                assert torch.equal(mine[k], theirs[k]), k
