"""Speed of the stereotype-pair scorer against one plain forward pass, and 1,500 pairs timed.

The sentences are synthetic pairs in the CrowS-Pairs shape (two sentences differing in one
group word, 10-25 words), generated here from a small word list; no benchmark item is used.

- ``ratio``: sentences per second of ``lab.bias.benchmarks.crows_pairs_loglik`` (tokenizing,
  the harness's prefix token, length-sorted batches, the decoder once per batch and the LM
  head only on the rows that predict a token, float32 log-softmax) divided by those of one
  plain ``model(input_ids, attention_mask)`` forward (full (B, T, V) logits, nothing else)
  over the same pre-tokenized sentences in the same batches. Measured on ``--ratio-pairs``
  pairs, the two alternating ``--repeats`` times; the median ratio is reported. Target >= 0.8.
- ``pairs_1500_s``: wall time of scoring ``--pairs`` pairs (default 1,500) once.

    python bench/bias.py [--model smollm2-135m] [--pairs 1500] [--ratio-pairs 150]
                         [--repeats 3] [--batch-size 16] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import _common as common  # first: puts the repository root on sys.path
import torch

from lab.bias.benchmarks import crows_pairs_loglik
from lab.bias.harness import _encode_pair
from lab.models import load_model

SUBJECTS = [("old", "young"), ("poor", "rich"), ("short", "tall"), ("foreign", "local"),
            ("female", "male"), ("disabled", "healthy")]  # fmt: skip
NOUNS = "neighbour teacher driver student customer worker player artist cook clerk".split()
VERBS = "forgot noticed fixed carried painted cleaned ordered described borrowed found".split()
OBJECTS = (
    "the old bicycle|a heavy box of books|the broken kitchen window|a new phone|the garden gate|"
    "a long letter to the council|the map of the city|three tickets for the concert"
).split("|")
TAILS = (
    "before the shop closed|on the way home from work|while everyone was watching|"
    "after a long and tiring day|without asking anyone for help|as the rain started to fall"
).split("|")


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` sentence pairs that differ in one group word (10-25 words each)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.choice(SUBJECTS)
        noun, verb, obj = rng.choice(NOUNS), rng.choice(VERBS), rng.choice(OBJECTS)
        tail = " ".join(rng.sample(TAILS, rng.randint(1, 2)))
        text = "The {} " + f"{noun} {verb} {obj} {tail}."
        out.append({"sent_more": text.format(a), "sent_less": text.format(b),
                    "direction": "stereo", "bias_type": "synthetic", "line": i + 2})  # fmt: skip
    return out


@torch.inference_mode()
def plain_forward(model, batches) -> None:
    for ids, attention in batches:
        model(input_ids=ids, attention_mask=attention)


def plain_batches(tokenizer, pairs: list[dict], batch_size: int, device) -> list:
    """The scorer's sequences (prefix token + sentence) in its length-sorted batches."""
    texts = [p["sent_more"] for p in pairs] + [p["sent_less"] for p in pairs]
    seqs = [sum(_encode_pair(tokenizer, "", t), []) for t in texts]
    seqs.sort(key=len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s : s + batch_size]
        T = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), T), dtype=torch.long)
        for b, x in enumerate(chunk):
            ids[b, : len(x)] = torch.tensor(x)
            attention[b, : len(x)] = 1
        out.append((ids.to(device), attention.to(device)))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=1500)
    p.add_argument("--ratio-pairs", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args.model, task="nlg", device=args.device, dtype="float32")
    model, tok = bundle.model, bundle.tokenizer
    model.eval()
    small = synthetic_pairs(args.ratio_pairs, seed=1)
    batches = plain_batches(tok, small, args.batch_size, bundle.device)
    n_sent = 2 * len(small)
    crows_pairs_loglik(model, tok, small[:8], batch_size=args.batch_size)  # warm-up
    plain_forward(model, batches[:1])
    scorer_sps, plain_sps, ratios = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        crows_pairs_loglik(model, tok, small, batch_size=args.batch_size)
        t1 = time.perf_counter()
        plain_forward(model, batches)
        t2 = time.perf_counter()
        scorer_sps.append(n_sent / (t1 - t0))
        plain_sps.append(n_sent / (t2 - t1))
        ratios.append(scorer_sps[-1] / plain_sps[-1])
    pairs = synthetic_pairs(args.pairs, seed=2)
    t0 = time.perf_counter()
    crows_pairs_loglik(model, tok, pairs, batch_size=args.batch_size)
    full_s = time.perf_counter() - t0
    tokens = [len(tok(p["sent_more"], add_special_tokens=False)["input_ids"]) for p in pairs]
    res = {
        "bench": "bias",
        "model": args.model,
        "device": str(bundle.device),
        "cpu": common.cpu_info(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "batch_size": args.batch_size,
        "ratio_pairs": len(small),
        "scorer_sentences_per_s": round(statistics.median(scorer_sps), 2),
        "plain_forward_sentences_per_s": round(statistics.median(plain_sps), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "ratio_target": 0.8,
        "pairs": len(pairs),
        "pairs_s": round(full_s, 2),
        "pairs_sentences_per_s": round(2 * len(pairs) / full_s, 2),
        "mean_tokens_per_sentence": round(sum(tokens) / len(tokens), 1),
    }
    common.emit(res, args.out)
    return res


if __name__ == "__main__":
    main()
