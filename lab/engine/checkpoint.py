"""Checkpoints a run continues from: ``RUN_DIR/checkpoint/``, no pickles.

Layout (written to a temp folder next to it, then renamed, so only whole checkpoints exist and
only the latest is kept):

- ``state.json``        the step, the data cursor, each arm's status, error, token count, last
                        train and eval events, optimizer structure and scheduler state
- ``tensors.safetensors`` each arm's trainable adapter tensors (``<arm>/param/<name>``), its
                        optimizer tensors (``<arm>/optim/<index>/<key>``) and RNG states
                        (``<arm>/rng/cpu``, ``<arm>/rng/cuda/<i>``), and the process-wide
                        generator states (``global/rng/...``) as uint8 tensors

The data cursor is the next step: the batch order is a pure function of the seed and the step
(:func:`lab.datasets.encoding.batch_order`), so skipping that many batches draws the same next batches. A
run with several seeds draws one batch order per seed, all at the same step; the cursor lists
them (``batch_order_seeds``), and :func:`check_cursor` refuses a config that would draw others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lab.config import ConfigError, from_dict, load_config_file, parse_overrides
from lab.engine import adapters

CHECKPOINT = "checkpoint"
VERSION = 1


class ResumeError(ValueError):
    """A run that cannot be resumed; the message says why in one line."""


def _rng_tensors(prefix: str, state: tuple) -> dict[str, torch.Tensor]:
    out = {f"{prefix}/rng/cpu": state[0].clone()}
    for i, s in enumerate(state[1] or []):
        out[f"{prefix}/rng/cuda/{i}"] = s.clone()
    return out


def _rng_from(prefix: str, tensors: dict[str, torch.Tensor]) -> tuple:
    cpu = tensors[f"{prefix}/rng/cpu"]
    cuda = []
    while f"{prefix}/rng/cuda/{len(cuda)}" in tensors:
        cuda.append(tensors[f"{prefix}/rng/cuda/{len(cuda)}"])
    return (cpu, cuda or None)


def save(
    run_dir: str | Path,
    arms: dict,
    step: int,
    cursor: dict,
    global_rng: tuple,
    *,
    eval_pending: bool = False,
) -> Path:
    """Write the checkpoint of ``arms`` after ``step`` and prune the previous one.
    ``eval_pending``: the evaluation due at ``step`` (the base model's at step 0) has not run."""
    if int(step) < 0:
        raise ValueError(f"a checkpoint step is 0 or more, not {step}")
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    state = {"version": VERSION, "step": step, "cursor": cursor, "arms": {},
             "eval_pending": bool(eval_pending)}  # fmt: skip
    tensors.update(_rng_tensors("global", global_rng))
    for name, arm in arms.items():
        for pname, p in adapters.trainable_named_parameters(arm.model, name).items():
            tensors[f"{name}/param/{pname}"] = p.detach().cpu().clone().contiguous()
        opt = arm.optimizer.state_dict()
        opt_state = {}
        for idx, entry in opt["state"].items():
            plain = {}
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{name}/optim/{idx}/{key}"] = value.detach().cpu().clone().contiguous()
                else:
                    plain[key] = value
            opt_state[str(idx)] = {"tensors": sorted(k for k in entry if torch.is_tensor(entry[k])),
                                   "values": plain}  # fmt: skip
        tensors.update(_rng_tensors(name, arm.rng))
        state["arms"][name] = {
            "status": arm.status,
            "error": arm.error,
            "tokens": arm.tokens,
            "last": arm.last,
            "last_eval": arm.last_eval,
            "optimizer": {"state": opt_state, "param_groups": opt["param_groups"]},
            "scheduler": arm.scheduler.state_dict(),
        }
    final = run_dir / CHECKPOINT
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".checkpoint.", suffix=".tmp"))
    try:
        save_file(tensors, str(tmp / "tensors.safetensors"))
        state["tensors_sha256"] = _sha256(tmp / "tensors.safetensors")
        text = json.dumps(state, indent=1, allow_nan=True, default=_plain)
        (tmp / "state.json").write_text(text + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if final.exists():
            old = run_dir / f".checkpoint.old.{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _plain(x):
    if torch.is_tensor(x):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def exists(run_dir: str | Path) -> bool:
    d = Path(run_dir) / CHECKPOINT
    return (d / "state.json").is_file() and (d / "tensors.safetensors").is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state(run_dir: str | Path) -> dict:
    """The JSON part of a run's checkpoint; :class:`ResumeError` when there is none, or when it
    cannot be read, has another format or a step below 0."""
    run_dir = Path(run_dir)
    if not exists(run_dir):
        raise ResumeError(
            f"run {run_dir.name} has no checkpoint to resume from: it ended before its first "
            "checkpoint (taken once the model and the adapters are set up); start it again"
        )
    try:
        state = json.loads((run_dir / CHECKPOINT / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ResumeError(f"the checkpoint of run {run_dir.name} is unreadable") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise ResumeError(f"the checkpoint of run {run_dir.name} has an unknown format")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ResumeError(
            f"the checkpoint of run {run_dir.name} names step {str(step)[:20]!r}, "
            "not a whole number of 0 or more"
        )
    if not isinstance(state.get("arms"), dict):
        raise ResumeError(f"the checkpoint of run {run_dir.name} lists no arms")
    state.setdefault("eval_pending", False)  # checkpoints written before it was recorded
    return state


def check(run_dir: str | Path) -> dict:
    """:func:`read_state` plus a check that the tensors file is whole and is the one the state
    was written with (its SHA-256, when recorded); -> the state. What a resume checks before
    any worker starts: a damaged checkpoint raises :class:`ResumeError` in one line."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    path = run_dir / CHECKPOINT / "tensors.safetensors"
    damaged = (
        f"the checkpoint of run {run_dir.name} is damaged ({path.name}: {{}}); it cannot be resumed"
    )
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (OSError, SafetensorError) as e:
        raise ResumeError(damaged.format(" ".join(str(e).split())[:120])) from None
    want = state.get("tensors_sha256")
    if want is not None and _sha256(path) != want:
        raise ResumeError(damaged.format("its content is not what was saved"))
    return state


def cursor(seeds: list[int], global_batch: int, step: int) -> dict:
    """The data cursor after ``step``: every seed's batch order continues at ``step + 1``."""
    return {
        "batch_order_seed": int(seeds[0]),
        "batch_order_seeds": [int(s) for s in seeds],
        "global_batch": int(global_batch),
        "next_step": int(step) + 1,
    }


def check_cursor(state: dict, seeds: list[int], run_name: str = "") -> None:
    """Raise :class:`ResumeError` when the checkpoint's batch orders (its seeds) are not the
    config's."""
    saved = state.get("cursor") or {}
    saved_seeds = saved.get("batch_order_seeds", [saved.get("batch_order_seed")])
    if [int(s) for s in saved_seeds if s is not None] != [int(s) for s in seeds]:
        raise ResumeError(
            f"run {run_name} was trained with seeds {saved_seeds}, the config has {list(seeds)}"
        )


def load(run_dir: str | Path, arms: dict) -> tuple[dict, tuple]:
    """Restore ``arms`` (built fresh from the run's config) from the checkpoint; returns the
    checkpoint's state and the process-wide RNG state to set before the next step."""
    run_dir = Path(run_dir)
    state = check(run_dir)
    try:
        tensors = load_file(str(run_dir / CHECKPOINT / "tensors.safetensors"))
    except (OSError, SafetensorError) as e:
        raise ResumeError(f"the checkpoint of run {run_dir.name} is damaged: {e}") from None
    if set(state["arms"]) != set(arms):
        raise ResumeError(
            f"the checkpoint of run {run_dir.name} holds arms {sorted(state['arms'])}, "
            f"the config {sorted(arms)}"
        )
    for name, arm in arms.items():
        saved = state["arms"][name]
        params = adapters.trainable_named_parameters(arm.model, name)
        with torch.no_grad():
            for pname, p in params.items():
                key = f"{name}/param/{pname}"
                if key not in tensors:
                    raise ResumeError(f"the checkpoint lacks the adapter tensor {key}")
                p.copy_(tensors[key].to(p.device, p.dtype))
        opt = saved["optimizer"]
        opt_state = {}
        device = next(iter(params.values())).device
        for idx, entry in opt["state"].items():
            values = dict(entry["values"])
            for key in entry["tensors"]:
                t = tensors[f"{name}/optim/{idx}/{key}"]
                values[key] = t if key == "step" else t.to(device)
            opt_state[int(idx)] = values
        arm.optimizer.load_state_dict({"state": opt_state, "param_groups": opt["param_groups"]})
        arm.scheduler.load_state_dict(saved["scheduler"])
        arm.rng = _rng_from(name, tensors)
        arm.status, arm.error, arm.tokens = saved["status"], saved["error"], saved["tokens"]
        arm.last, arm.last_eval = saved["last"] or {}, saved["last_eval"] or {}
    return state, _rng_from("global", tensors)


def truncate_events(path: str | Path, step: int) -> None:
    """Drop the event lines after ``step`` (and a torn last line), atomically, so a run that
    died between checkpoints does not log those steps twice."""
    from lab.runs.store import atomic_write_bytes

    path = Path(path)
    if not path.exists():
        return
    kept = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                ev = json.loads(raw)
            except (UnicodeDecodeError, ValueError):
                kept.append(raw)  # left for the reader to skip, as before
                continue
            if isinstance(ev, dict) and isinstance(ev.get("step"), int) and ev["step"] > step:
                continue
            kept.append(raw)
    atomic_write_bytes(path, b"".join(kept))


RESUMABLE_KEYS = ("train.steps",)  # the only settings ``--resume`` may change


def resume_config(run_dir: str | Path, overrides: list[str]):
    """The config of the run in ``run_dir`` with the overrides ``--resume`` allows."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ResumeError(f"{path} is not a run directory (no config.yaml)")
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {key}: not allowed with --resume (only {', '.join(RESUMABLE_KEYS)})"
            )
    cfg = load_config_file(path / "config.yaml")
    if overrides:
        extra = parse_overrides(overrides)
        data = cfg.to_dict()
        data["train"] = {**data["train"], **extra["train"]}
        cfg = from_dict(data)
    return cfg
