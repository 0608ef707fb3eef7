"""LoRA / PiSSA adapters through PEFT, the frozen teacher, and saving in plain PEFT format.

The teacher is the untouched pre-trained model W, with no second full copy of it:
- LoRA init (B0 = 0): ``disable_adapter()`` gives W.
- PiSSA init: PEFT rewrites the base weight to the residual W - s B0 A0, so ``disable_adapter()``
  would give the residual. A frozen copy of the initial adapter (A0, B0) named ``teacher`` sits
  on the same residual base; activating it gives W - s B0 A0 + s B0 A0 = W.

A PiSSA-initialized adapter is saved converted to a rank-2r LoRA on the original W
(delta = s (B A - B0 A0) = s [B, -B0] [A; A0], alpha doubled so the scale s stays), so
``PeftModel.from_pretrained`` on the same base model reproduces the trained logits.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file

TEACHER = "teacher"
PISSA_ARMS = ("pissa", "balora")


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


def make_arm(
    base: torch.nn.Module,
    arm: str,
    *,
    task: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: list[str],
    pissa_niter: int,
    seed: int,
) -> PeftModel:
    """Wrap ``base`` (modified in place) as one arm's PEFT model; seeded init."""
    if arm in PISSA_ARMS:
        init = "pissa" if pissa_niter == 0 else f"pissa_niter_{pissa_niter}"
    else:
        init = True
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules_for(base, target_modules),
        init_lora_weights=init,
        task_type=TaskType.CAUSAL_LM if task == "nlg" else TaskType.SEQ_CLS,
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, cfg)
    if arm in PISSA_ARMS:
        teacher_cfg = copy.deepcopy(cfg)
        teacher_cfg.init_lora_weights = True  # a plain adapter; its weights are copied below
        model.add_adapter(TEACHER, teacher_cfg)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, param in params.items():
                if f".{TEACHER}." in name:
                    param.copy_(params[name.replace(f".{TEACHER}.", ".default.")])
                    param.requires_grad_(False)
        model.set_adapter("default")
    model.balora_teacher = TEACHER if arm in PISSA_ARMS else None
    return model


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@contextmanager
def teacher_mode(model: PeftModel):
    """Forward passes inside give the untouched pre-trained model's outputs."""
    teacher = getattr(model, "balora_teacher", None)
    was_training = model.training
    model.eval()  # no dropout: the teacher is the deterministic pre-trained model
    try:
        if teacher is None:
            with model.disable_adapter():
                yield model
        else:
            model.set_adapter(teacher)
            try:
                yield model
            finally:
                model.set_adapter("default")
    finally:
        model.train(was_training)


def initial_adapter(model: PeftModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """{module name: (A0, B0)} of a PiSSA arm (the teacher copy); None for LoRA init (B0 = 0)."""
    if getattr(model, "balora_teacher", None) is None:
        return None
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and TEACHER in module.lora_A:
            out[name] = (
                module.lora_A[TEACHER].weight.detach().clone(),
                module.lora_B[TEACHER].weight.detach().clone(),
            )
    return out


def _lora_part(key: str) -> str | None:
    """The part, lora_A or lora_B, that an adapter state-dict key belongs to; None otherwise."""
    return next((part for part in ("lora_A", "lora_B") if f".{part}." in key), None)


def save_adapter(model: PeftModel, out_dir: str | Path) -> Path:
    """Save the trained adapter in PEFT format loadable on the original base model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name="default")
    cfg = copy.deepcopy(model.peft_config["default"])
    if getattr(model, "balora_teacher", None) is not None:
        init_state = get_peft_model_state_dict(model, adapter_name=TEACHER)
        for key in list(state):
            part = _lora_part(key)
            if part is None:
                continue
            w, w0 = state[key], init_state[key]
            # (r, in) -> (2r, in) for A; (out, r) -> (out, 2r) for B with -B0
            state[key] = torch.cat([w, w0], 0) if part == "lora_A" else torch.cat([w, -w0], 1)
        cfg.r = 2 * cfg.r
        cfg.lora_alpha = 2 * cfg.lora_alpha
    cfg.init_lora_weights = True
    cfg.inference_mode = True
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(str(out))
    return out
