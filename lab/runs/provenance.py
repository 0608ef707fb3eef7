"""Where a run came from: code version, library versions and the hardware it ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def git_state(root: Path = ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None}; None where this is not a git checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict:
    """{"model": the CPU's model name, "native_bf16": its native bf16 flags (avx512_bf16,
    amx_bf16; empty: bf16 matmuls are emulated)}, read from ``path``; where that cannot be
    read, the platform's processor name and None (unknown). Speed figures depend on both, so
    runs and benchmarks record them."""
    name, flags = None, set()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"model": platform.processor() or platform.machine() or None, "native_bf16": None}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name is None:
            name = value.strip()
        elif key.strip() == "flags":
            flags |= set(value.split())
    return {"model": name, "native_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"})}


def provenance(bundle, processes: int = 1) -> dict:
    """The provenance block of ``summary.json`` for a run on ``bundle``'s model."""
    device = bundle.device
    name = str(device)
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    quant = getattr(getattr(bundle.model, "config", None), "quantization_config", None)
    return {
        "git": git_state(),
        "versions": library_versions(),
        "device": name,
        "dtype": str(bundle.dtype).replace("torch.", ""),
        "load_in_4bit": bool(quant)
        and bool(
            getattr(quant, "load_in_4bit", False)
            or (isinstance(quant, dict) and quant.get("load_in_4bit"))
        ),
        "cores": os.cpu_count(),
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "processes": processes,
    }


def describe(summary: dict | None) -> list[dict[str, str]]:
    """Where and how a run was made, from its ``summary.json``, as ``{"what", "value"}`` rows:
    code version, device and dtype, CPU, cores and threads, when it ran, the library versions
    it ran with. Empty for a run without provenance (an old or a failed-early run)."""
    summary = summary or {}
    prov = _mapping(summary.get("provenance"))
    if not prov:
        return []
    rows = []

    def add(what: str, value) -> None:
        if value not in (None, ""):
            rows.append({"what": what, "value": str(value)})

    git = _mapping(prov.get("git"))
    if git.get("commit"):
        add("code", git["commit"][:12] + (" with uncommitted changes" if git.get("dirty") else ""))
    quant = " (4-bit NF4 weights)" if prov.get("load_in_4bit") else ""
    add("device", f"{prov.get('device', '?')}, {prov.get('dtype', '?')}{quant}")
    cpu = _mapping(prov.get("cpu"))
    if cpu.get("model"):
        flags = cpu.get("native_bf16")
        bf16 = (", ".join(map(str, flags)) or "none") if isinstance(flags, list) else "unknown"
        add("CPU", f"{cpu['model']} (native bf16: {bf16})")
    add(
        "cores, threads, processes",
        ", ".join(str(prov.get(k, "?")) for k in ("cores", "torch_threads", "processes")),
    )
    add("started", summary.get("started"))
    add("finished", summary.get("finished"))
    for name, version in _mapping(prov.get("versions")).items():
        add(name, version or "not installed")
    return rows


def _mapping(value) -> dict:
    """``value`` where it is a mapping, else empty: a summary edited by hand or written by
    another tool can hold anything, and the report and the run diff still show the rest."""
    return value if isinstance(value, dict) else {}


def differences(a: dict | None, b: dict | None) -> list[list]:
    """``[["made on: <what>", value in a, value in b], ...]`` where two runs' summaries say
    they were made differently (code version, device, CPU, threads, library versions): results
    move with these as well as with a setting. Start and finish times always differ and are
    left out; so is everything when either run has no provenance."""
    if not _mapping((a or {}).get("provenance")) or not _mapping((b or {}).get("provenance")):
        return []
    da, db = (
        {r["what"]: r["value"] for r in describe(s) if r["what"] not in ("started", "finished")}
        for s in (a, b)
    )
    keys = list(dict.fromkeys([*da, *db]))
    return [[f"made on: {k}", da.get(k), db.get(k)] for k in keys if da.get(k) != db.get(k)]
