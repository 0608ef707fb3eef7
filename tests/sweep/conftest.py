"""A sweep shared by the sweep and pooling tests: tiny-test, 3 seeds x 2 learning rates."""

from __future__ import annotations

import pytest

from lab.sweep.runner import run_sweep
from lab.sweep.spec import parse_spec

FAST = ["train.steps=2", "train.analysis=false", "train.bias_eval=false", "data.max_eval=8"]
SEEDS_X_LRS = {
    "preset": "tiny-test",
    "set": FAST,
    "grid": {"train.seeds": [[0], [1], [2]], "train.lr": [0.0005, 0.001]},
}


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """The 3 x 2 sweep run by the local engine: (folder, index)."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    return out, run_sweep(parse_spec(SEEDS_X_LRS), out)
