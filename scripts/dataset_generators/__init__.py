"""Generators of the shipped datasets: templates and word lists combined with a fixed seed.

``build(name)`` returns ``{"info": dict, "train": rows, "test": rows}``; ``render`` turns that
into the exact text of each file in ``assets/datasets/<name>/``. ``scripts/make_datasets.py``
writes the files; a test checks that the committed files are what the generators produce.
Build-time only: the lab reads the shipped files and never imports this package.
"""

from __future__ import annotations

import json

from .arithmetic import make_arithmetic
from .sentiment import make_sentiment
from .topics import make_topics

BUILDERS = {"sentiment": make_sentiment, "topics": make_topics, "arithmetic": make_arithmetic}


def build(name: str) -> dict:
    return BUILDERS[name]()


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def render(built: dict) -> dict[str, str]:
    """File name -> exact text for one dataset folder."""
    return {
        "info.json": json.dumps(built["info"], indent=2, sort_keys=True) + "\n",
        "train.jsonl": _jsonl(built["train"]),
        "test.jsonl": _jsonl(built["test"]),
    }
