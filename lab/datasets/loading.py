"""Task data for a run: shipped sets, uploaded files, hub ids, with the noise/imbalance knobs.

``load_task_data`` resolves a name to a train and a clean test split, puts the rows in the
form the task needs and applies, in this order: ``max_train`` (a seeded subset), the class
imbalance, the label noise. The test split is never touched by the knobs; ``max_eval`` picks
a subset with a fixed seed so every run and seed scores the same test rows.

Row forms: NLG ``{"prompt", "response", "label"?}`` (classification: response = label word);
NLU ``{"text", "label": int}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import check_value
from lab.datasets.encoding import DataError

from .knobs import flip_labels, imbalance_indices, largest_remainder, seeded_subset
from .probes import PROBE_SET_NAMES, list_probe_sets  # the probe sets are listed beside the data
from .uploads import SUFFIXES, check_labels, records_to_rows, validate_upload

DATASETS_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "datasets"
TEST_SPLIT_SEED = 0
UPLOAD_TEST_FRACTION = 0.1
HUB_MAX_ROWS = 20_000  # rows read from each split of a hub dataset
UPLOAD_PROMPT = "Classify this text as one of: {names}. Answer with the label only.\n\nText: {text}"


@dataclass
class TaskData:
    name: str
    task: str  # "nlg" | "nlu"
    kind: str  # "classification" | "generation"
    train: list[dict]  # nlg: {"prompt", "response", "label"?: int}; nlu: {"text", "label": int}
    test: list[dict]  # always the clean test split
    label_names: list[str] | None
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    # (index in train, row) of every training row whose label the noise knob flipped, with the
    # flipped label: what an arm would predict if it memorised the noise
    flipped: list[tuple[int, dict]] = field(default_factory=list)


def shipped_names() -> list[str]:
    return sorted(p.parent.name for p in DATASETS_DIR.glob("*/info.json"))


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def list_datasets() -> list[dict]:
    """Every shipped dataset and probe set: name, kind, tasks, n_train, n_test, description."""
    out = []
    for name in shipped_names():
        folder = DATASETS_DIR / name
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        out.append(
            {
                "name": name,
                "kind": info["kind"],
                "tasks": info["tasks"],
                "n_train": _count_lines(folder / "train.jsonl"),
                "n_test": _count_lines(folder / "test.jsonl"),
                "label_names": info.get("label_names"),
                "description": info["description"],
            }
        )
    return out + list_probe_sets()


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            row["_line"] = i
            rows.append(row)
    return rows


def _load_hub(name: str, task: str, columns: dict) -> tuple[list, list, list[str]]:
    known = ", ".join(shipped_names())
    try:
        import datasets  # optional: only for hub ids
    except ImportError:
        raise DataError(
            f"'{name}' is not a shipped dataset ({known}) or an existing file. Loading a hub "
            "dataset needs the `datasets` package and a network connection; without them, "
            "upload a .jsonl or .csv file with prompt/response or text/label columns instead."
        ) from None
    try:
        ds = datasets.load_dataset(name)
    except Exception as e:  # network, missing repo, bad config: all mean "cannot use this id"
        raise DataError(
            f"could not load hub dataset '{name}' ({type(e).__name__}: {e}). With no network, "
            f"use a shipped set ({known}) or upload a .jsonl or .csv file."
        ) from None
    if "train" not in ds:
        raise DataError(f"hub dataset '{name}' has no 'train' split (splits: {', '.join(ds)})")
    test_key = next((k for k in ("test", "validation") if k in ds), None)
    out: dict[str, list[dict]] = {}
    warnings: list[str] = []
    for split in ("train", test_key) if test_key else ("train",):
        part = ds[split]
        if len(part) > HUB_MAX_ROWS:
            warnings.append(f"{name}:{split} has {len(part)} rows; using the first {HUB_MAX_ROWS}")
        records = [(i + 1, dict(part[i])) for i in range(min(len(part), HUB_MAX_ROWS))]
        out[split], more = records_to_rows(
            records, task=task, columns=columns, name=f"{name}:{split}", from_csv=False
        )
        warnings += more
    return out["train"], out.get(test_key, []), warnings


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """A fixed split of one uploaded file: 10% (at least 1 row) held out for testing."""
    if len(rows) < 2:
        raise DataError("an uploaded file needs at least 2 rows (one is held out for testing)")
    n_test = min(max(1, round(UPLOAD_TEST_FRACTION * len(rows))), 1000)
    test_idx = set(seeded_subset(len(rows), n_test, TEST_SPLIT_SEED))
    train = [r for i, r in enumerate(rows) if i not in test_idx]
    test = [r for i, r in enumerate(rows) if i in test_idx]
    return train, test


def _source(name: str, task: str, columns: dict | None, label_names):
    """Resolve ``name`` -> (train, test, info dict, warnings, source description)."""
    if name in shipped_names():
        folder = DATASETS_DIR / name
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        if task not in info["tasks"]:
            raise DataError(
                f"dataset '{name}' is a {info['kind']} set for task {' or '.join(info['tasks'])} "
                f"only, not {task}"
            )
        train = _read_jsonl(folder / "train.jsonl")
        test = _read_jsonl(folder / "test.jsonl")
        return train, test, info, [], {"source": "shipped", "path": str(folder)}
    if name in PROBE_SET_NAMES:
        raise DataError(
            f"'{name}' is a bias probe set, not a training dataset "
            f"(datasets: {', '.join(shipped_names())})"
        )
    path = Path(name).expanduser()
    if path.is_dir():
        train_f = next(
            (path / f"train{s}" for s in SUFFIXES if (path / f"train{s}").exists()), None
        )
        test_f = next((path / f"test{s}" for s in SUFFIXES if (path / f"test{s}").exists()), None)
        if train_f is None or test_f is None:
            raise DataError(
                f"folder {path} needs train.jsonl (or .csv) and test.jsonl (or .csv); "
                f"found {', '.join(p.name for p in path.iterdir()) or 'nothing'}"
            )
        info = {}
        if (path / "info.json").exists():
            info = json.loads((path / "info.json").read_text(encoding="utf-8"))
        names = label_names or info.get("label_names")
        train, w1 = validate_upload(train_f, task=task, columns=columns, label_names=names)
        test, w2 = validate_upload(test_f, task=task, columns=columns, label_names=names)
        return train, test, info, w1 + w2, {"source": "folder", "path": str(path)}
    if path.suffix.lower() in SUFFIXES or path.suffix.lower() in (".json", ".tsv", ".txt"):
        rows, warnings = validate_upload(path, task=task, columns=columns, label_names=label_names)
        train, test = _split(rows)
        return train, test, {}, warnings, {"source": "file", "path": str(path)}
    if path.exists():
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .jsonl or .csv")
    train, test, warnings = _load_hub(name, task, dict(columns or {}))
    if not test:
        train, test = _split(train)
    return train, test, {}, warnings, {"source": "hub", "path": name}


def _label_names(train: list[dict], test: list[dict], given: list[str] | None) -> list[str]:
    labels = [r["label"] for r in train + test]
    if given:
        return list(given)
    if all(isinstance(y, int) for y in labels):
        return [str(i) for i in range(max(labels) + 1)]
    return sorted(set(labels))


def _to_id(y, names: list[str]) -> int:
    return y if isinstance(y, int) else names.index(y)


def _classification_rows(rows: list[dict], names: list[str], task: str, prompt: str) -> list[dict]:
    out = []
    for r in rows:
        y = _to_id(r["label"], names)
        if task == "nlu":
            out.append({"text": r["text"], "label": y})
        else:
            text = prompt.format(text=r["text"], names=", ".join(names))
            out.append({"prompt": text, "response": names[y], "label": y})
    return out


def load_task_data(
    name: str,
    *,
    task: str = "nlg",
    columns: dict | None = None,
    label_noise: float = 0.0,
    minority_fraction: float = 0.0,
    seed: int = 0,
    max_train: int | None = None,
    max_eval: int | None = None,
    minority_class: str | int | None = None,
    label_names: list[str] | None = None,
) -> TaskData:
    """Load a dataset for ``task`` and apply the knobs; see the module docstring."""
    _check_knobs(name, task, label_noise, minority_fraction, max_train, max_eval)
    train, test, meta, warnings, info = _source(str(name), task, columns, label_names)
    kind = meta.get("kind") or ("classification" if "label" in train[0] else "generation")
    names: list[str] | None = None
    if kind == "classification":
        names = _label_names(train, test, label_names or meta.get("label_names"))
        train, test = _classification_splits(train, test, names, task, meta)
    else:
        train = [{k: v for k, v in r.items() if k != "_line"} for r in train]
        test = [{k: v for k, v in r.items() if k != "_line"} for r in test]
    info.update(n_train_total=len(train), n_test_total=len(test))
    if max_train is not None and len(train) > max_train:
        warnings.append(f"training split truncated to {max_train} of {len(train)} rows")
        train = [train[i] for i in seeded_subset(len(train), max_train, seed)]
    if max_eval is not None and len(test) > max_eval:
        test = _eval_subset(test, max_eval, stratify=names is not None)
    if minority_fraction > 0:
        if names is None:
            raise DataError(f"minority_fraction needs a classification dataset; '{name}' is {kind}")
        train, extra = _imbalance(train, names, minority_fraction, minority_class, seed)
        info.update(extra)
    flipped: list[tuple[int, dict]] = []
    if label_noise > 0:
        train, changed = _noise(train, names, kind, label_noise, seed)
        info["flipped"] = len(changed)
        if names is not None:
            flipped = [(i, train[i]) for i in changed]
    if names is not None:
        counts = [0] * len(names)
        for r in train:
            counts[r["label"]] += 1
        info["class_counts"] = dict(zip(names, counts))
    info.update(n_train=len(train), n_test=len(test), label_noise=label_noise, seed=seed)
    return TaskData(str(name), task, kind, train, test, names, warnings, info, flipped)


def _check_knobs(name, task, label_noise, minority_fraction, max_train, max_eval) -> None:
    """The arguments of ``load_task_data`` that can be refused before any file is read."""
    if task not in ("nlg", "nlu"):
        raise DataError(f"task must be 'nlg' or 'nlu', got {task!r}")
    if not 0.0 <= label_noise < 1.0:
        raise DataError(f"label_noise must be in [0, 1), got {label_noise}")
    if (bad := check_value("data.minority_fraction", minority_fraction)) is not None:
        raise DataError(f"minority_fraction {bad}, got {minority_fraction}")
    for knob, v in (("max_train", max_train), ("max_eval", max_eval)):
        if v is not None and v < 1:
            raise DataError(f"{knob} must be at least 1, got {v}")
    if not str(name).strip():
        raise DataError("the dataset name is empty")


def _classification_splits(train, test, names, task, meta) -> tuple[list[dict], list[dict]]:
    """Both splits checked against the label names and turned into the task's rows."""
    check_labels(train, names, "training split")
    check_labels(test, names, "test split")
    seen = {_to_id(r["label"], names) for r in train}
    for r in test:
        if _to_id(r["label"], names) not in seen:
            raise DataError(
                f"test split line {r['_line']}: label {r['label']!r} does not occur in the "
                "training split"
            )
    prompt = meta.get("prompt", UPLOAD_PROMPT)
    return (
        _classification_rows(train, names, task, prompt),
        _classification_rows(test, names, task, prompt),
    )


def _eval_subset(test: list[dict], k: int, *, stratify: bool) -> list[dict]:
    """``k`` test rows with a fixed seed; per class in proportion (each class kept if k allows)."""
    if not stratify:
        return [test[i] for i in seeded_subset(len(test), k, TEST_SPLIT_SEED)]
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(test):
        by_class.setdefault(r["label"], []).append(i)
    counts = largest_remainder({c: len(ix) for c, ix in by_class.items()}, k)
    if k >= len(by_class):  # move one row to any class the rounding left out
        for c in by_class:
            if counts[c] == 0:
                donor = max(counts, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[c] = 1
    keep: list[int] = []
    for c, ix in sorted(by_class.items()):
        keep += [ix[j] for j in seeded_subset(len(ix), counts[c], TEST_SPLIT_SEED + c)]
    return [test[i] for i in sorted(keep)]


def _imbalance(train, names, fraction, minority_class, seed) -> tuple[list[dict], dict]:
    if minority_class is None:
        minority = len(names) - 1
    elif isinstance(minority_class, int) and not isinstance(minority_class, bool):
        if not 0 <= minority_class < len(names):
            raise DataError(
                f"minority_class {minority_class} is out of range for {len(names)} classes"
            )
        minority = minority_class
    elif minority_class in names:
        minority = names.index(minority_class)
    else:
        raise DataError(f"minority_class {minority_class!r} is not one of {', '.join(names)}")
    keep = imbalance_indices(
        [r["label"] for r in train], minority=minority, fraction=fraction, seed=seed
    )
    train = [train[i] for i in keep]
    share = sum(r["label"] == minority for r in train) / len(train)
    return train, {"minority_class": names[minority], "minority_share": share}


def _noise(train, names, kind, fraction, seed) -> tuple[list[dict], list[int]]:
    if names is not None:
        labels, flipped = flip_labels(
            [r["label"] for r in train], num_classes=len(names), fraction=fraction, seed=seed
        )
        out = []
        for r, y in zip(train, labels):
            r = dict(r, label=y)
            if "response" in r:
                r["response"] = names[y]
            out.append(r)
        return out, flipped
    from .arithmetic import corrupt_responses  # generation: wrong final answers / swapped responses

    return corrupt_responses(train, fraction=fraction, seed=seed)
