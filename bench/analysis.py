"""Time one eval point's analysis for three arms on smollm2-135m and print JSON.

A run analyses the base model once, at step 0 (its pooled hidden states, output spectrum, and
the reference its arms' drift is measured against); every later eval point analyses the three
arms. This bench measures both on 256 probe texts:

- ``base``: step 0: the base snapshot (its features, spectrum and drift reference) and the
  SVDs of the base weights that the arms' intruder counts reuse all run;
- ``eval_point``: one eval point of three arms: each arm's snapshot (pooled hidden states,
  output spectrum, drift from the base, adapter spectra), its intruder dimensions, and the
  joint PCA/t-SNE of the four feature matrices (base + three arms). Target: <= 15 s on 2 CPU
  cores.

The arms are three LoRA adapters with random B on the one loaded model.

    python bench/analysis.py [--texts 256] [--rank 8] [--targets q_proj,v_proj | auto]
                             [--base-context] [--no-intruders]

``--base-context`` measures the drift through a second base forward per arm (the teacher mode)
instead of the base reference. The time of one plain forward pass over the probe texts is
measured in the same run: ``eval_point_in_plain_forwards`` is the cost of an eval point in
forward passes, which holds on any machine (the floor is 3, one per arm). ``--targets auto``
adapts every linear layer (the lab's default); the default here is the classroom-cpu preset's
q_proj,v_proj. On a shared, busy machine threads wait for each other: ``--threads 1`` then
runs faster than 2, and its cpu_s is close to the work itself.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time

import _common as common  # first: puts the repository root on sys.path
import numpy as np
import torch
from peft import LoraConfig, get_peft_model

from lab import analysis
from lab.engine.adapters import target_modules_for
from lab.models import load_model

SUBJECTS = [
    "The nurse",
    "The engineer",
    "The teacher",
    "The pilot",
    "The cook",
    "The lawyer",
    "My neighbour",
    "The doctor",
]
VERBS = ["said that", "thinks that", "told us", "asked if"]
ENDINGS = [
    "he was late.",
    "she was right.",
    "they would come.",
    "it was fine.",
    "we could help.",
    "the plan worked.",
    "nobody knew.",
    "the bus left.",
]


def probe_texts(n: int) -> tuple[list[str], np.ndarray]:
    """``n`` short plain texts; label = the subject (8 groups)."""
    rows = list(itertools.product(range(len(SUBJECTS)), VERBS, ENDINGS))
    if n > len(rows):
        raise SystemExit(f"at most {len(rows)} probe texts, asked for {n}")
    picks = np.random.default_rng(0).permutation(len(rows))[:n]
    texts = [f"{SUBJECTS[rows[i][0]]} {rows[i][1]} {rows[i][2]}" for i in picks]
    labels = np.array([rows[i][0] for i in picks], dtype=np.int64)
    return texts, labels


def make_arms(model, names: list[str], rank: int, targets: list[str]):
    targets = target_modules_for(model, targets)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0)
    torch.manual_seed(0)
    peft = get_peft_model(model, cfg, adapter_name=names[0])
    for name in names[1:]:
        peft.add_adapter(name, cfg)
    with torch.no_grad():
        for pname, p in peft.named_parameters():
            if "lora_B" in pname:
                p.normal_(0.0, 0.02)  # a trained-looking update: B is no longer 0
    return peft.eval(), targets


def plain_forward_s(model, tok, texts: list[str], max_len: int, batch: int = 64) -> float:
    """Seconds of one plain forward pass of the base model over the texts (the unit of cost)."""
    ids = sorted(
        (tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts),
        key=len,
        reverse=True,
    )
    t = time.perf_counter()
    with torch.inference_mode(), model.disable_adapter():
        for i in range(0, len(ids), batch):
            rows = ids[i : i + batch]
            x = torch.full((len(rows), len(rows[0])), tok.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(x)
            for r, row in enumerate(rows):
                x[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            model(input_ids=x, attention_mask=mask)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--targets", default="q_proj,v_proj", help="comma-separated, or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    ap.add_argument("--base-context", action="store_true")
    ap.add_argument("--no-intruders", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = load_model("smollm2-135m", task="nlg", device="cpu", dtype="float32")
    load_s = time.perf_counter() - t0
    tok = bundle.tokenizer
    texts, labels = probe_texts(args.texts)
    arms = ["lora", "pissa", "balora"]
    model, targets = make_arms(bundle.model, arms, args.rank, args.targets.split(","))
    lengths = [len(tok(t)["input_ids"]) for t in texts]

    forward_before = plain_forward_s(model, tok, texts, args.max_len)
    seconds: dict = {"arms": {}, "intruders": {}}
    request = analysis.SnapshotRequest("nlg", texts, labels, max_len=args.max_len)
    t = time.perf_counter()
    with model.disable_adapter():
        base = analysis.snapshot(
            model, tok, request, arm="base", step=0, keep_reference=not args.base_context
        )
    cache: dict = {}
    if not args.no_intruders:  # as a run does at step 0: the base weights' SVDs, for every arm
        model.set_adapter(arms[0])
        analysis.model_intruders(model, None, arms[0], cache=cache)
    seconds["base"] = time.perf_counter() - t
    print(f"base: {seconds['base']:.1f} s", file=sys.stderr)
    snaps = {"base": base}
    t_all, c_all = time.perf_counter(), time.process_time()
    for arm in arms:
        model.set_adapter(arm)
        t = time.perf_counter()
        drift_base = (
            analysis.DriftBase(context=model.disable_adapter)
            if args.base_context
            else analysis.DriftBase(base.reference)
        )
        snaps[arm] = analysis.snapshot(
            model,
            tok,
            request,
            arm=arm,
            step=10,
            base=drift_base,
            adapter=analysis.AdapterSpec(arm, intruders=False),
        )
        seconds["arms"][arm] = time.perf_counter() - t
        print(f"{arm}: {seconds['arms'][arm]:.1f} s", file=sys.stderr)
        if not args.no_intruders:
            t = time.perf_counter()
            snaps[arm].intruders = analysis.model_intruders(model, None, arm, cache=cache)
            seconds["intruders"][arm] = time.perf_counter() - t
    t = time.perf_counter()
    emb = analysis.joint_embedding({k: s.features for k, s in snaps.items()}, labels, seed=0)
    seconds["joint_embedding"] = time.perf_counter() - t
    total = time.perf_counter() - t_all
    cpu = time.process_time() - c_all
    seconds["eval_point"] = total
    seconds["with_base_step0"] = total + seconds["base"]
    forward = min(forward_before, plain_forward_s(model, tok, texts, args.max_len))

    drift_via = "base_context (a second forward per arm)"
    if not args.base_context:
        drift_via = (
            "base reference (moments [p W, sum p log p] per position kept by the base snapshot)"
        )
    out = {
        "bench": "analysis",
        "model": "smollm2-135m",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "probe_texts": len(texts),
        "tokens_per_text_mean": float(np.mean(lengths)),
        "max_len": args.max_len,
        "arms": arms,
        "rank": args.rank,
        "target_modules": targets,
        "lora_modules": len(snaps["lora"].adapter_spectra),
        "drift_via": drift_via,
        "intruders": not args.no_intruders,
        "seconds": {
            k: (round(v, 3) if isinstance(v, float) else {a: round(x, 3) for a, x in v.items()})
            for k, v in seconds.items()
        },
        "cpu_s": round(cpu, 3),
        "cpu_s_per_thread": round(cpu / torch.get_num_threads(), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "plain_forward_s": round(forward, 3),
        "eval_point_in_plain_forwards": round(total / forward, 2),
        "target_s": 15.0,
        "within_target": total <= 15.0,
        "model_load_s": round(load_s, 3),
        "check": {
            "kl_to_base": {a: round(snaps[a].summary()["kl_to_base"], 5) for a in arms},
            "eff_rank_output": {
                a: round(s.summary()["eff_rank_output"], 3) for a, s in snaps.items()
            },
            "silhouette": {
                a: (None if v is None else round(v, 4)) for a, v in emb["silhouette"].items()
            },
            "intruders_total": {a: sum(snaps[a].intruders.values()) for a in arms},
        },
    }
    common.emit(out, args.out)


if __name__ == "__main__":
    main()
