"""Snapshots on disk: ``runs/<id>/analysis/step_<step:06d>/<arm>.npz`` (no pickles).

Each file holds one :class:`Snapshot`'s arrays; adapter spectra and intruder counts are stored
as a list of module names plus one array per module. ``analysis/probe_texts.json`` holds the
probe texts once: {"texts": [...], "labels": [...], "label_names": [...] | null}. A joint
embedding of a step may sit beside the snapshots as ``embedding.npz`` + ``embedding.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from lab.analysis.snapshot import AnalysisError, Snapshot
from lab.arms import arm_key
from lab.runs import store as runs

_ARM = re.compile(r"^[A-Za-z0-9_.#@,+-]+$")  # "#": lora#s1; "@,+": balora@0.05,0.005,0.005
_STEP = re.compile(r"^step_(\d{6,})$")
_NOT_SNAPSHOTS = {"embedding"}


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "analysis" / f"step_{int(step):06d}"


def snapshot_arrays(snap: Snapshot) -> dict[str, np.ndarray]:
    """The arrays one snapshot file holds."""
    names = list(snap.adapter_spectra)
    inames = list(snap.intruders)
    arrays = {
        "arm": np.array(snap.arm),
        "step": np.array(int(snap.step), dtype=np.int64),
        "features": np.asarray(snap.features, dtype=np.float32),
        "labels": np.asarray(snap.labels, dtype=np.int64),
        "output_spectrum": np.asarray(snap.output_spectrum, dtype=np.float32),
        "adapter_names": np.array(names, dtype=np.str_),
        "intruder_names": np.array(inames, dtype=np.str_),
        "intruder_counts": np.array([snap.intruders[k] for k in inames], dtype=np.int64),
    }
    for i, name in enumerate(names):
        arrays[f"adapter_{i}"] = np.asarray(snap.adapter_spectra[name], dtype=np.float32)
    if snap.drift_per_text is not None:
        arrays["drift_per_text"] = np.asarray(snap.drift_per_text, dtype=np.float32)
    if snap.drift_positions is not None:
        arrays["drift_positions"] = np.asarray(snap.drift_positions, dtype=np.float32)
    return arrays


def snapshot_from_arrays(arrays: dict[str, np.ndarray]) -> Snapshot:
    names = [str(x) for x in arrays["adapter_names"].tolist()]
    inames = [str(x) for x in arrays["intruder_names"].tolist()]
    return Snapshot(
        arm=str(arrays["arm"]),
        step=int(arrays["step"]),
        features=arrays["features"],
        labels=arrays["labels"],
        output_spectrum=arrays["output_spectrum"],
        adapter_spectra={name: arrays[f"adapter_{i}"] for i, name in enumerate(names)},
        drift_per_text=arrays.get("drift_per_text"),
        intruders=dict(zip(inames, (int(c) for c in arrays["intruder_counts"].tolist()))),
        drift_positions=arrays.get("drift_positions"),
    )


def save_snapshot(run_dir: str | Path, snap: Snapshot) -> Path:
    """Write ``analysis/step_<step:06d>/<arm>.npz`` atomically; returns the path."""
    if not _ARM.match(snap.arm) or snap.arm in _NOT_SNAPSHOTS:
        raise AnalysisError(
            f"arm name {snap.arm!r} cannot be a file name (letters, digits, _ . # @ , + -)"
        )
    path = step_dir(run_dir, snap.step) / f"{snap.arm}.npz"
    runs.save_arrays(path, snapshot_arrays(snap))
    return path


def analysis_steps(run_dir: str | Path) -> list[int]:
    """The steps with at least one saved snapshot, increasing."""
    root = Path(run_dir) / "analysis"
    if not root.is_dir():
        return []
    steps = []
    for d in root.iterdir():
        m = _STEP.match(d.name)
        if m and d.is_dir() and any(p.stem not in _NOT_SNAPSHOTS for p in d.glob("*.npz")):
            steps.append(int(m.group(1)))
    return sorted(steps)


def load_snapshots(run_dir: str | Path, step: int | None = None) -> dict[str, Snapshot]:
    """{arm: Snapshot} at ``step`` (the latest by default), base first; {} when none is saved."""
    if step is None:
        steps = analysis_steps(run_dir)
        if not steps:
            return {}
        step = steps[-1]
    folder = step_dir(run_dir, step)
    if not folder.is_dir():
        return {}
    files = sorted(
        (p for p in folder.glob("*.npz") if p.stem not in _NOT_SNAPSHOTS),
        key=lambda p: arm_key(p.stem),
    )
    return {p.stem: snapshot_from_arrays(runs.load_arrays(p)) for p in files}


def load_snapshots_with_base(run_dir: str | Path, step: int) -> dict[str, Snapshot]:
    """:func:`load_snapshots` at ``step``, with the base model's snapshot (measured once, at
    step 0) taken from the latest earlier step that has one when ``step`` has none."""
    snaps = load_snapshots(run_dir, step)
    if "base" in snaps:
        return snaps
    for earlier in reversed([s for s in analysis_steps(run_dir) if s < step]):
        path = step_dir(run_dir, earlier) / "base.npz"
        if path.exists():
            return {"base": snapshot_from_arrays(runs.load_arrays(path)), **snaps}
    return snaps


def load_probe_texts(run_dir: str | Path) -> dict | None:
    """{"texts", "labels", "label_names"} saved with the run, or None."""
    path = Path(run_dir) / "analysis" / "probe_texts.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):  # a bare list of texts
        data = {"texts": data, "labels": None, "label_names": None}
    return data


def save_probe_texts(run_dir: str | Path, texts: list[str], labels=None, label_names=None) -> Path:
    path = Path(run_dir) / "analysis" / "probe_texts.json"
    payload = {
        "texts": list(texts),
        "labels": None if labels is None else [int(x) for x in labels],
        "label_names": None if label_names is None else list(label_names),
    }
    runs.atomic_write_text(path, json.dumps(payload))
    return path


def save_embedding(run_dir: str | Path, step: int, embedding: dict) -> None:
    folder = step_dir(run_dir, step)
    runs.save_arrays(
        folder / "embedding.npz", {f"coords/{k}": v for k, v in embedding["coords"].items()}
    )
    runs.write_json(
        folder / "embedding.json", {k: v for k, v in embedding.items() if k != "coords"}
    )


def load_embedding(run_dir: str | Path, step: int) -> dict | None:
    """The joint embedding saved at ``step`` or None: {"coords": {arm: (n, 2)}, "silhouette", ...}."""
    folder = step_dir(run_dir, step)
    if not (folder / "embedding.npz").exists() or not (folder / "embedding.json").exists():
        return None
    out = json.loads((folder / "embedding.json").read_text(encoding="utf-8"))
    out["coords"] = {
        k.split("/", 1)[1]: v for k, v in runs.load_arrays(folder / "embedding.npz").items()
    }
    return out


def top_drifted(snap: Snapshot, texts: list[str], n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` probe texts with the largest mean KL(base || arm), largest first."""
    if snap.drift_per_text is None:
        raise AnalysisError(
            f"snapshot of {snap.arm!r} has no drift (the base model is the reference)"
        )
    if len(texts) != len(snap.drift_per_text):
        raise AnalysisError(f"{len(texts)} texts but {len(snap.drift_per_text)} drift values")
    order = np.argsort(-np.asarray(snap.drift_per_text, dtype=np.float64), kind="stable")[:n]
    return [(texts[i], float(snap.drift_per_text[i])) for i in order]
