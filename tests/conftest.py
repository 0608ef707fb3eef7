"""Shared fixtures: tiny models built from a config (no files, no network) and a runs folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Every test writes runs under its own temp folder, never into the repository."""
    monkeypatch.setenv("BALORA_RUNS_DIR", str(tmp_path / "runs"))
    yield


@pytest.fixture(scope="session")
def tiny_llama():
    from lab.models import load_model

    return load_model("tiny-llama", task="nlg", seed=0)


@pytest.fixture(scope="session")
def tiny_bert():
    from lab.models import load_model

    return load_model("tiny-bert", task="nlu", num_labels=3, seed=0)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
