"""Catastrophic-inheritance knobs on a training split: label noise and class imbalance.

Pure functions on label lists (class ids) with a seed; the test split never goes through them.

- ``flip_labels``: exactly ``round(fraction * n)`` labels move to a different class, chosen
  uniformly among the other classes.
- ``imbalance_indices``: the rows to keep so that one class makes up ``fraction`` of the
  training split (as close as whole rows allow: within one row).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lab.datasets.encoding import DataError

_NOISE_TAG = 101  # separates the noise stream from the imbalance stream for the same seed
_IMBALANCE_TAG = 202


def flip_labels(
    labels: Sequence[int], *, num_classes: int, fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Return (new labels, sorted indices that changed); exactly round(fraction * n) change."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"label_noise must be in [0, 1), got {fraction}")
    if fraction > 0 and num_classes < 2:
        raise DataError("label_noise needs at least 2 classes")
    n = len(labels)
    k = round(fraction * n)
    rng = np.random.default_rng([seed, _NOISE_TAG])
    idx = sorted(rng.choice(n, size=k, replace=False).tolist()) if k else []
    out = list(labels)
    for i in idx:
        shift = int(rng.integers(1, num_classes))  # 1..C-1: never the same class
        out[i] = (out[i] + shift) % num_classes
    return out, idx


def largest_remainder(counts: dict[int, int], total: int) -> dict[int, int]:
    """Split ``total`` over the classes in proportion to ``counts`` (whole numbers)."""
    s = sum(counts.values())
    raw = {c: total * n / s for c, n in counts.items()}
    out = {c: int(np.floor(v)) for c, v in raw.items()}
    left = total - sum(out.values())
    for c in sorted(raw, key=lambda c: (-(raw[c] - out[c]), c))[:left]:
        out[c] += 1
    return out


def imbalance_indices(
    labels: Sequence[int], *, minority: int, fraction: float, seed: int = 0
) -> list[int]:
    """Sorted indices to keep so that class ``minority`` is ``fraction`` of the kept rows.

    Keeps every row of the other classes when there are enough minority rows; otherwise keeps
    every minority row and subsamples the other classes in proportion to their sizes.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"minority_fraction must be in (0, 1), got {fraction}")
    labels = list(labels)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    if minority not in by_class:
        raise DataError(f"the minority class (id {minority}) has no training rows")
    others = {c: len(ix) for c, ix in by_class.items() if c != minority}
    if not others:
        raise DataError("class imbalance needs at least 2 classes in the training split")
    rest = sum(others.values())
    have = len(by_class[minority])
    want = round(fraction * rest / (1.0 - fraction))
    if want <= have:
        keep_counts = dict(others)
        keep_counts[minority] = want
    else:
        keep_counts = largest_remainder(others, round(have * (1.0 - fraction) / fraction))
        keep_counts[minority] = have
    if keep_counts[minority] < 1:
        raise DataError(
            f"minority_fraction={fraction} leaves no row of the minority class out of "
            f"{len(labels)} training rows; use a larger fraction or more rows"
        )
    rng = np.random.default_rng([seed, _IMBALANCE_TAG])
    kept: list[int] = []
    for c in sorted(by_class):
        ix = by_class[c]
        kept += rng.choice(ix, size=keep_counts[c], replace=False).tolist()
    return sorted(kept)


def seeded_subset(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` chosen with ``seed``, in their original order."""
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=k, replace=False).tolist())
