"""Speed of the lab's own pair probes at several pair batch sizes, measured side by side.

The probes are the shipped sets an eval point scores with ``train.bias_items=0``: every
stereotype pair and every occupation x template he/she pair, scored by
``lab.bias.scores.pair_logprob_diff`` (the tokens both sentences share run once, then the two
rest parts). Each repeat runs every batch size once, in turn, so machine noise hits them alike.

- ``median_s``: seconds per batch size (median over ``--repeats``) for both probe sets.
- ``ratio_to_first``: each size's median divided by the first size's (the current default is
  ``lab.bias.scores.PAIR_BATCH``; compare it with 16, the size before it).
- ``same_scores``: the largest difference of the log-likelihood ratios between the sizes
  (batching changes the padding only, so float rounding).

    python bench/probes.py [--model smollm2-135m] [--batches 16,32] [--repeats 3]
                           [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import _common as common  # first: puts the repository root on sys.path
import numpy as np
import torch

from lab.bias.scores import PAIR_BATCH, pair_logprob_diff
from lab.datasets.probes import load_occupations, load_pairs, load_templates
from lab.models import load_model


def probe_texts() -> tuple[list[str], list[str]]:
    """(texts_a, texts_b) of every shipped stereotype pair and he/she template pair."""
    pairs = load_pairs()
    templates, occupations = load_templates(), load_occupations()
    a = [p["stereo"] for p in pairs]
    b = [p["anti"] for p in pairs]
    for pron, side in (("he", a), ("she", b)):
        side += [
            t.format(occupation=o["occupation"], pronoun=pron)
            for o in occupations
            for t in templates
        ]
    return a, b


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batches", default=f"16,{PAIR_BATCH}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.batches.split(",") if x.strip()]
    if not sizes or min(sizes) < 1 or args.repeats < 1:
        p.error("--batches needs sizes of at least 1, and --repeats at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args.model, task="nlg", device=args.device, dtype="float32")
    model, tok = bundle.model, bundle.tokenizer
    model.eval()
    a, b = probe_texts()
    pair_logprob_diff(model, tok, a[:8], b[:8], batch_size=sizes[0])  # warm-up
    seconds: dict[int, list[float]] = {s: [] for s in sizes}
    scores: dict[int, np.ndarray] = {}
    for _ in range(args.repeats):
        for s in sizes:
            t0 = time.perf_counter()
            scores[s] = pair_logprob_diff(model, tok, a, b, batch_size=s)
            seconds[s].append(time.perf_counter() - t0)
    median = {s: statistics.median(v) for s, v in seconds.items()}
    first = sizes[0]
    res = {
        "bench": "probes",
        "model": args.model,
        "device": str(bundle.device),
        "cpu": common.cpu_info(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "pairs": len(a),
        "batches": sizes,
        "seconds": {str(s): [round(x, 3) for x in v] for s, v in seconds.items()},
        "median_s": {str(s): round(m, 3) for s, m in median.items()},
        "ratio_to_first": {str(s): round(m / median[first], 3) for s, m in median.items()},
        "same_scores": float(max(np.abs(scores[s] - scores[first]).max() for s in sizes)),
    }
    common.emit(res, args.out)
    return res


if __name__ == "__main__":
    main()
