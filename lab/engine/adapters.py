"""Every arm as adapters on one shared base model; the exact teacher; saving in plain PEFT format.

One PEFT model holds the base weights exactly as loaded (fp32, bf16 or 4-bit) and, per arm:

- a LoRA-init arm: one trainable adapter (B0 = 0), so the arm is W + s B A.
- a PiSSA-init arm: a trainable adapter initialised to the top-r SVD factors (A0, B0) of W, and
  a frozen adapter holding (A0, -B0) (no dropout; one per seed, shared by the PiSSA arms of
  that seed, which all start from the same factors), so the arm is W - s B0 A0 + s B A: the same
  function as PEFT's PiSSA init, which instead rewrites the base weight to the residual
  W - s B0 A0 (and, on a 4-bit base, re-quantizes it). Here the base is never written.

Only one arm is active at a time (:func:`activate`). The teacher is the base with every adapter
off (:func:`teacher_mode`): the loaded model's own forward, exactly, in every dtype, with no
second copy of any weight, and the same for every arm (so one teacher pass serves them all).

A PiSSA arm's two adapters together are the rank-2r LoRA delta s (B A - B0 A0) =
s [B, -B0] [A; A0] on the original W; :func:`save_adapter` writes that (alpha doubled so the
scale s stays), so ``PeftModel.from_pretrained`` on the untouched base reproduces the arm.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.integrations import dequantize_module_weight
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import save_file

from lab.arms import MAX_ARMS, ArmSpec  # MAX_ARMS: adapter names carry a two-digit index


@dataclass(frozen=True)
class ArmAdapters:
    """The adapter names of one arm inside the shared PEFT model."""

    spec: ArmSpec
    trainable: str  # e.g. "arm01"
    frozen_init: str | None  # e.g. "ini_s0": (A0, -B0) of seed 0's PiSSA arms; None for LoRA


def target_modules_for(model: torch.nn.Module, requested: list[str]) -> list[str] | str:
    """``["auto"]`` -> every linear layer of the attention and MLP blocks (not the head)."""
    if requested != ["auto"]:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in requested if t not in names]
        if missing:
            raise ValueError(
                f"lora.target_modules: {', '.join(missing)} not found in this model "
                f"(linear layers here: {', '.join(sorted(linear_layer_names(model)))})"
            )
        return requested
    return "all-linear"


def linear_layer_names(model: torch.nn.Module) -> set[str]:
    return {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }


def _lora_layers(model: torch.nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def _dense_weight(layer) -> torch.Tensor:
    """The base weight of a LoRA layer as float32 (out, in), de-quantized when 4-bit."""
    base = layer.get_base_layer()
    w = dequantize_module_weight(base).detach().to(torch.float32)
    return w.T if getattr(layer, "fan_in_fan_out", False) else w


def _pissa_init(
    model: PeftModel, trainable: str, frozen: str, niter: int, cache: dict | None = None
) -> None:
    """Set ``trainable`` to PiSSA's (A0, B0) and ``frozen`` to (A0, -B0) in every LoRA layer,
    computed as PEFT's ``pissa_init`` does, from the (de-quantized) base weight; the base
    weight itself is left as loaded.

    ``cache`` (one dict per seed, shared by the arms of one :func:`build`) keeps each layer's
    (A0, B0): every PiSSA arm of a seed starts from the same factors, and the SVDs are the
    slowest part of adding an arm (smollm2-135m, q/v: about 4 s of a 4-arm grid's 5 s each)."""
    with torch.no_grad():
        for name, layer in _lora_layers(model):
            if trainable not in getattr(layer, "lora_A", {}):
                continue
            r, s = layer.r[trainable], layer.scaling[trainable]
            key = (name, r, float(s), niter)
            if cache is not None and key in cache:
                a0, b0 = cache[key]
            else:
                w = _dense_weight(layer)  # (out, in)
                if niter == 0:
                    u, sv, vh = torch.linalg.svd(w, full_matrices=False)
                    ur, sr, vhr = u[:, :r], sv[:r] / s, vh[:r]
                else:
                    ur, sr, v = torch.svd_lowrank(w, r, niter=niter)
                    sr, vhr = sr / s, v.t()
                a0 = torch.diag(torch.sqrt(sr)) @ vhr  # (r, in)
                b0 = ur @ torch.diag(torch.sqrt(sr))  # (out, r)
                del w
                if cache is not None:
                    cache[key] = (a0, b0)
            layer.lora_A[trainable].weight.copy_(a0)
            layer.lora_B[trainable].weight.copy_(b0)
            layer.lora_A[frozen].weight.copy_(a0)
            layer.lora_B[frozen].weight.copy_(-b0)


def build(
    base: torch.nn.Module,
    specs: list[ArmSpec],
    *,
    task: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: list[str],
    pissa_niter: int,
    seed: int,
) -> PeftModel:
    """Wrap ``base`` (not copied, its weights untouched) with the adapters of every arm.

    Every arm is initialised from its own ``spec.seed`` (``seed`` when that is None) alone, so
    an arm's init does not depend on which other arms the run holds. The first arm is active
    on return."""
    if not specs:
        raise ValueError("at least one arm is needed")
    if len(specs) > MAX_ARMS:
        raise ValueError(f"at most {MAX_ARMS} arms fit in one run, got {len(specs)}")
    targets = target_modules_for(base, target_modules)
    task_type = TaskType.CAUSAL_LM if task == "nlg" else TaskType.SEQ_CLS
    model = None
    arms: dict[str, ArmAdapters] = {}
    pissa_factors: dict[int, dict] = {}  # seed -> the PiSSA (A0, B0) of every layer
    for i, spec in enumerate(specs, start=1):
        cfg = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            init_lora_weights=True,
            task_type=task_type,
        )
        trainable = f"arm{i:02d}"
        arm_seed = seed if spec.seed is None else spec.seed
        torch.manual_seed(arm_seed)
        if model is None:
            model = get_peft_model(base, cfg, adapter_name=trainable)
        else:
            model.add_adapter(trainable, cfg)
        frozen = None
        if spec.init == "pissa":
            # One frozen -s B0 A0 per seed, shared by that seed's PiSSA arms: they all start
            # from the same factors, and each further adapter costs a walk of the whole model.
            frozen = f"ini_s{arm_seed}"
            if frozen not in model.peft_config:
                init_cfg = copy.deepcopy(cfg)
                init_cfg.lora_dropout = 0.0  # the frozen -s B0 A0 sees the plain input, as W does
                model.add_adapter(frozen, init_cfg)
            torch.manual_seed(arm_seed)  # randomized SVD: one noise for every arm of a seed
            factors = pissa_factors.setdefault(arm_seed, {})
            _pissa_init(model, trainable, frozen, pissa_niter, factors)
        arms[spec.name] = ArmAdapters(spec, trainable, frozen)
    model.balora_arms = arms
    activate(model, specs[0].name)
    return model


def make_arm(base: torch.nn.Module, arm: str, **settings) -> PeftModel:
    """A model holding the one arm ``arm`` (``lora``, ``pissa``, ``balora``, ``balora@...``);
    ``settings`` are the keyword arguments of :func:`build` (task, rank, alpha, ...)."""
    from lab.arms import make_spec

    spec = make_spec(arm, lambdas=(0.0, 0.0, 0.0), lr=1.0)
    return build(base, [spec], **settings)


def arm_names(model: PeftModel) -> list[str]:
    return list(model.balora_arms)


def active_arm(model: PeftModel) -> ArmAdapters:
    return model.balora_arms[model.balora_active]


@dataclass
class _Index:
    """The model's adapter layers and parameters, found once per set of adapters: a walk of
    every module costs about 0.1 s on smollm2-135m, and a step activates each arm (and the
    teacher) in turn, so walking each time made a 4-arm grid spend seconds on bookkeeping."""

    adapters: tuple[str, ...]
    wrappers: list  # ModulesToSaveWrapper modules
    layers: list  # (BaseTunerLayer, the names of the adapters it holds)
    named: list  # (name, parameter) of the whole model

    def named_of(self, adapter: str) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.named if f".{adapter}." in n}


def _index(model: PeftModel) -> _Index:
    names = tuple(model.peft_config)
    idx = getattr(model, "balora_index", None)
    if idx is None or idx.adapters != names:
        modules = list(model.modules())
        idx = _Index(
            names,
            [m for m in modules if isinstance(m, ModulesToSaveWrapper)],
            [
                (m, set(m._get_available_adapters()))
                for m in modules
                if isinstance(m, BaseTunerLayer)
            ],
            list(model.named_parameters()),
        )
        model.balora_index = idx
    return idx


def activate(model: PeftModel, arm: str) -> None:
    """Make ``arm`` the model's function; only its trainable adapter requires grad."""
    ad = model.balora_arms[arm]
    names = [ad.trainable] + ([ad.frozen_init] if ad.frozen_init else [])
    idx = _index(model)
    for module in idx.wrappers:
        module.enable_adapters(True)
        module.set_adapter(ad.trainable)
    for module, available in idx.layers:
        module.enable_adapters(True)
        module.set_adapter([n for n in names if n in available])
    model.base_model.active_adapter = ad.trainable  # PEFT reads its config by this name
    tag = f".{ad.trainable}."
    for n, p in idx.named:
        p.requires_grad_(tag in n)
    model.balora_active = arm


def trainable_named_parameters(model: PeftModel, arm: str | None = None) -> dict:
    """{name: parameter} of the trainable adapter of ``arm`` (the active arm by default)."""
    ad = model.balora_arms[arm or model.balora_active]
    return _index(model).named_of(ad.trainable)


def trainable_parameters(model: PeftModel, arm: str | None = None) -> list[torch.nn.Parameter]:
    """The trainable adapter parameters of ``arm`` (the active arm by default)."""
    return list(trainable_named_parameters(model, arm).values())


@contextmanager
def teacher_mode(model: PeftModel):
    """Forward passes inside give the untouched pre-trained model's outputs, exactly: every
    adapter is off, so each layer runs its base weight alone (eval mode: no dropout)."""
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        activate(model, model.balora_active)
        model.train(was_training)


def initial_adapter(model: PeftModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """{module name: (A0, B0)} of the active arm when PiSSA-initialised; None for LoRA init."""
    ad = active_arm(model)
    if ad.frozen_init is None:
        return None
    out = {}
    for name, module in _lora_layers(model):
        if ad.frozen_init in getattr(module, "lora_A", {}):
            out[name] = (
                module.lora_A[ad.frozen_init].weight.detach().clone(),
                -module.lora_B[ad.frozen_init].weight.detach(),
            )
    return out


def _lora_part(key: str) -> str | None:
    """The part, lora_A or lora_B, that an adapter state-dict key belongs to; None otherwise."""
    return next((part for part in ("lora_A", "lora_B") if f".{part}." in key), None)


def adapter_state(model: PeftModel, adapter: str) -> dict[str, torch.Tensor]:
    """``get_peft_model_state_dict(model, adapter_name=adapter)``: the adapter's tensors under
    the keys PEFT saves them with (the adapter name taken out). A plain LoRA adapter (no bias,
    no DoRA, no modules to save) is read from the cached parameter list, since PEFT's own
    function walks the whole model twice per call; any other goes through PEFT."""
    cfg = model.peft_config[adapter]
    plain = (
        getattr(cfg, "bias", "none") == "none"
        and not getattr(cfg, "use_dora", False)
        and not getattr(cfg, "modules_to_save", None)
        and not getattr(model, "modules_to_save", None)
    )
    if not plain:
        return get_peft_model_state_dict(model, adapter_name=adapter)
    tag = f".{adapter}."
    return {
        n.replace(tag, "."): p
        for n, p in _index(model).named
        if tag in n and _lora_part(n.replace(tag, ".")) is not None
    }


def save_adapter(model: PeftModel, out_dir: str | Path, arm: str | None = None) -> Path:
    """Save ``arm`` (the active one by default) in PEFT format, loadable on the original base."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ad = model.balora_arms[arm or model.balora_active]
    state = adapter_state(model, ad.trainable)
    cfg = copy.deepcopy(model.peft_config[ad.trainable])
    if ad.frozen_init is not None:
        init_state = adapter_state(model, ad.frozen_init)
        for key in list(state):
            part = _lora_part(key)
            if part is None:
                continue
            w, w0 = state[key], init_state[key]  # w0: A0 or -B0
            # (r, in) -> (2r, in) for A; (out, r) -> (out, 2r) for B: [B, -B0]
            state[key] = torch.cat([w, w0], 0 if part == "lora_A" else 1)
        cfg.r = 2 * cfg.r
        cfg.lora_alpha = 2 * cfg.lora_alpha
    cfg.init_lora_weights = True
    cfg.inference_mode = True
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(str(out))
    return out
