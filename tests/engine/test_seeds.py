"""Several training seeds in one job: every arm once per seed, on the one shared base.

Within a seed every arm sees the same batches; across seeds the batch order, the dropout noise
and the random part of the init change. The per-item records carry the seed, the verdicts pair
arms within a seed and pool the seeds stratified, and a stopped run resumes bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from safetensors.torch import load_file

import lab.engine.steps as steps
import lab.engine.trainer as trainer
from lab import arms
from lab.config import ConfigError, load_preset
from lab.engine import adapters
from lab.engine.checkpoint import ResumeError
from lab.evidence import sentences, verdicts
from lab.evidence.items import load_items
from lab.plots import report
from lab.plots.common import arm_color
from lab.runs.store import read_events, request_stop

SEEDS = [0, 1]
ARMS = ("lora", "pissa", "balora")
NAMES = [f"{a}#s{s}" for s in SEEDS for a in ARMS]
FAST = [
    "data.max_eval=6",
    "lora.dropout=0.1",
    "train.steps=2",
    "train.seeds=[0, 1]",
]


def _cfg(extra=()):
    return load_preset("tiny-test", FAST + list(extra))


def _digest(batch: dict) -> str:
    return hashlib.sha256(batch["input_ids"].cpu().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """A 2-seed run with analysis and bias probes on; records every arm's batches."""
    out = tmp_path_factory.mktemp("seeds") / "run"
    seen: dict[tuple[str, int], str] = {}
    original = steps.train_arm_step

    def recording(arm, micro, cfg, step, *args, **kwargs):
        seen[(arm.name, step)] = "".join(_digest(b) for b in micro)
        return original(arm, micro, cfg, step, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps, "train_arm_step", recording)
        events = list(trainer.run(_cfg(), out))
    return out, events, seen


def test_seed_names_and_specs():
    cfg = _cfg()
    got = arms.specs(cfg)
    assert [s.name for s in got] == NAMES
    assert [s.seed for s in got] == [0, 0, 0, 1, 1, 1]
    assert {s.plain for s in got} == set(ARMS)
    assert arms.kind_of("balora@0.1,0,0#s3") == "balora"
    assert arms.folder_name("balora@0.1,0,0#s3") == "balora-0p1_0_0-s3"
    assert arms.folder_name("lora#s1") == "lora-s1"
    assert sorted(["pissa#s1", "lora#s1", "base", "lora#s0", "pissa#s0"], key=arms.order_key) == [
        "base",
        "lora#s0",
        "lora#s1",
        "pissa#s0",
        "pissa#s1",
    ]
    assert arm_color("lora#s1") == arm_color("lora") != arm_color("pissa#s1")
    assert verdicts.arm_display("balora#s2") == "BA-LoRA (seed 2)"
    # one seed: the plain names, the run's seed
    single = load_preset("tiny-test", ["train.seed=5"])
    assert [(s.name, s.seed) for s in arms.specs(single)] == [(a, 5) for a in ARMS]


@pytest.mark.parametrize(
    "value, where, words",
    [
        ("[1, 1]", "train.seeds", "twice"),
        ("[0, -1]", "train.seeds[1]", "must be in"),
        ("[0, 1.5]", "train.seeds[1]", "integer"),
        (str(list(range(17))), "train.seeds", "at most 16"),
    ],
)
def test_bad_seeds_name_the_key(value, where, words):
    with pytest.raises(ConfigError, match=rf"^{re.escape(where)}: .*{words}"):
        load_preset("tiny-test", [f"train.seeds={value}"])


def test_an_arm_with_a_seed_suffix_is_refused():
    with pytest.raises(ConfigError, match="arms: 'lora#s1': the seed suffix"):
        load_preset("tiny-test", ["arms=lora#s1"])


def test_public_limit_on_seeds():
    from lab.jobs.hosting import PUBLIC_LIMITS, check_limits

    check_limits(load_preset("tiny-test", ["train.seeds=[0, 1, 2]"]), PUBLIC_LIMITS)
    with pytest.raises(ConfigError, match="train.seeds: 4 is over the limit of 3"):
        check_limits(load_preset("tiny-test", ["train.seeds=[0, 1, 2, 3]"]), PUBLIC_LIMITS)


def test_verdicts_pair_within_each_seed():
    """Synthetic records: the same item ids under two seeds, LoRA's values shifted by seed.
    Paired within a seed, BA-LoRA - LoRA is +1 under seed 0 and +3 under seed 1; pairing
    across seeds would mix them. Seeded arm names (lora#s1) fold into the plain arm."""
    records = []
    for seed, shift in ((0, 0.0), (1, 10.0)):
        for i in range(10):
            lora = shift + 0.1 * i
            gap = 1.0 if seed == 0 else 3.0
            records.append({"arm": f"lora#s{seed}", "seed": seed, "metric": "gold_logprob",
                            "item": str(i), "value": lora})  # fmt: skip
            records.append({"arm": "balora", "seed": seed, "metric": "gold_logprob",
                            "item": str(i), "value": lora + gap + 0.01 * (i % 3)})  # fmt: skip
    (row,) = verdicts.compare_arms(records, n_resamples=200)
    assert (row.arm_a, row.arm_b) == ("balora", "lora")
    assert row.n_seeds == 2 and row.items_per_seed == 10 and row.stats["n_strata"] == 2
    got = {d["seed"]: d["diff"] for d in row.per_seed}
    assert got[0] == pytest.approx(1.009, abs=1e-9) and got[1] == pytest.approx(3.009, abs=1e-9)
    assert row.diff == pytest.approx(2.009, abs=1e-9)
    assert row.seed_spread == pytest.approx(2.0, abs=1e-9)
    text = sentences.verdict_text(row)
    assert "2 seeds × 10 items" in text
    assert "per seed +1.01, +3.01 (seeds 0, 1; spread 2 nats), 2 seeds × 10 items" in text


def test_seeds_change_init_and_dropout_not_arms_of_one_seed():
    cfg = _cfg(["arms=lora,pissa", "lora.pissa_niter=2"])
    _, bundle = trainer.prepare(cfg)
    built = trainer.build_arms(cfg, bundle)
    model = built["lora#s0"].model

    def weights(name):
        return [p.detach().clone() for p in adapters.trainable_parameters(model, name)]

    s0, s1 = weights("lora#s0"), weights("lora#s1")
    assert any(not torch.equal(a, b) for a, b in zip(s0, s1))  # LoRA's random A
    p0, p1 = weights("pissa#s0"), weights("pissa#s1")
    assert any(not torch.equal(a, b) for a, b in zip(p0, p1))  # randomized SVD noise
    rng = {name: arm.rng[0] for name, arm in built.items()}
    assert torch.equal(rng["lora#s0"], rng["pissa#s0"])  # one dropout stream per seed
    assert torch.equal(rng["lora#s1"], rng["pissa#s1"])
    assert not torch.equal(rng["lora#s0"], rng["lora#s1"])
    # an arm's init depends on its seed alone: seed 1 of a 2-seed run is a 1-seed run of seed 1
    solo_cfg = load_preset("tiny-test", ["arms=lora", "train.seed=1"])
    _, solo_bundle = trainer.prepare(solo_cfg)
    solo = trainer.build_arms(solo_cfg, solo_bundle)["lora"]
    solo_w = adapters.trainable_parameters(solo.model, "lora")
    assert all(torch.equal(a, b) for a, b in zip(s1, solo_w))
    assert torch.equal(solo.rng[0], rng["lora#s1"])


def test_batches_identical_within_a_seed_and_differ_across(seeded_run):
    _, _, seen = seeded_run
    for step in (1, 2):
        for seed in SEEDS:
            digests = {seen[(f"{a}#s{seed}", step)] for a in ARMS}
            assert len(digests) == 1, (step, seed)
        assert seen[("lora#s0", step)] != seen[("lora#s1", step)]


def test_events_carry_the_seed(seeded_run):
    out, events, _ = seeded_run
    train = [e for e in events if e["kind"] == "train"]
    assert sorted({e["arm"] for e in train}) == sorted(NAMES)
    assert all(e["seed"] == int(e["arm"].rsplit("#s", 1)[1]) for e in train)
    evals = [e for e in events if e["kind"] == "eval" and e["arm"] != "base"]
    assert {(e["arm"], e["seed"]) for e in evals} == {(n, int(n[-1])) for n in NAMES}
    assert [e["arm"] for e in read_events(out / "events.jsonl")] == [e["arm"] for e in events]
    # the two seeds really trained differently
    last = {e["arm"]: e["loss"] for e in train if e["step"] == 2}
    assert last["lora#s0"] != last["lora#s1"]


def test_summary_and_adapters_per_seed(seeded_run):
    out, _, _ = seeded_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["seeds"] == SEEDS
    assert set(summary["arms"]) == set(NAMES)
    assert summary["arm_specs"]["balora#s1"]["seed"] == 1
    assert summary["arm_specs"]["balora#s1"]["arm"] == "balora"
    saved = {p.name for p in (out / "adapters").iterdir()}
    assert saved == {n.replace("#", "-") for n in NAMES}
    a = load_file(str(out / "adapters" / "lora-s0" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapters" / "lora-s1" / "adapter_model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["cursor"]["batch_order_seeds"] == SEEDS


def test_items_carry_both_seeds_under_plain_arm_names(seeded_run):
    out, _, _ = seeded_run
    table = load_items(out)
    trained = table["arm"] != "base"
    assert set(table["arm"][trained].tolist()) == set(ARMS)
    for arm in ARMS:
        for metric in set(table["metric"].tolist()):
            rows = (table["arm"] == arm) & (table["metric"] == metric)
            seeds = table["seed"][rows]
            assert set(seeds.tolist()) == set(SEEDS), (arm, metric)
            assert (seeds == 0).sum() == (seeds == 1).sum()  # the same items under each seed
    assert set(table["seed"][~trained].tolist()) == {0}  # the base model, measured once


def test_verdicts_pair_within_a_seed_and_pool_stratified(seeded_run):
    out, _, _ = seeded_run
    rows = verdicts.run_verdicts(out, n_resamples=200)
    versus = [r for r in rows if r.arm_b != "base"]
    assert {(r.arm_a, r.arm_b) for r in versus} == {("balora", "lora"), ("balora", "pissa")}
    table = load_items(out)
    for r in rows:
        assert r.n_seeds == 2 and r.stats["n_strata"] == 2
        assert [d["seed"] for d in r.per_seed] == SEEDS
        assert sum(d["n"] for d in r.per_seed) == r.n
        text = sentences.verdict_text(r)
        assert f"2 seeds × {r.items_per_seed} items" in text and "(seeds 0, 1" in text
    r = next(x for x in versus if x.metric == "gold_logprob" and x.arm_b == "lora")
    # the per-seed difference is the mean over that seed's items of balora - lora
    for d in r.per_seed:
        sel = {}
        for arm in ("balora", "lora"):
            keep = (table["arm"] == arm) & (table["metric"] == "gold_logprob")
            keep &= table["seed"] == d["seed"]
            sel[arm] = dict(zip(table["item"][keep].tolist(), table["value"][keep].tolist()))
        want = sum(sel["balora"][i] - sel["lora"][i] for i in sel["lora"]) / len(sel["lora"])
        assert d["diff"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    diffs = [d["diff"] for d in r.per_seed]
    assert r.seed_spread == pytest.approx(max(diffs) - min(diffs))


def test_report_and_figures_read_seeded_arms(seeded_run):
    out, _, _ = seeded_run
    figs = report.run_figures(out)
    names = {t.name for t in figs["loss"].data}
    assert set(NAMES) <= names
    html = report.html_report(out, figs)
    assert "2 seeds ×" in html and "lora#s1" in html
    from lab.ui import figures

    text, _ = figures.evidence(out)
    assert "2 seeds ×" in text and "(seeds 0, 1" in text
    points = figures.pareto_points(out)
    assert sorted(p["arm"] for p in points) == sorted(ARMS * 2)  # one point per arm and seed


N = 4
RESUME = [
    "train.bias_eval=false",
    "train.analysis=false",
    "data.max_eval=4",
    "lora.dropout=0.1",
    f"train.steps={N}",
    "train.eval_every=2",
    "train.seeds=[3, 1]",
]


def _train_events(run_dir):
    return [
        {k: v for k, v in e.items() if k != "seconds"}
        for e in read_events(run_dir / "events.jsonl")
        if e["kind"] == "train"
    ]


def test_resume_with_two_seeds_equals_uninterrupted(tmp_path):
    cfg = load_preset("tiny-test", RESUME)
    full = tmp_path / "full"
    list(trainer.run(cfg, full))
    part = tmp_path / "part"
    for ev in trainer.run(load_preset("tiny-test", RESUME), part):
        if ev["kind"] == "train" and ev["arm"] == "balora#s1" and ev["step"] == 2:
            request_stop(part)
    assert json.loads((part / "summary.json").read_text())["steps_done"] == 2
    list(trainer.run(load_preset("tiny-test", RESUME), part, resume=True))
    assert _train_events(part) == _train_events(full)
    names = [f"{a}-s{s}" for s in (3, 1) for a in ARMS]
    for name in names:
        a = load_file(str(full / "adapters" / name / "adapter_model.safetensors"))
        b = load_file(str(part / "adapters" / name / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a config with other seeds draws other batches: refused
    with pytest.raises(ResumeError, match="seeds"):
        other = load_preset("tiny-test", [*RESUME, f"train.steps={N + 2}", "train.seeds=[3, 2]"])
        list(trainer.run(other, part, resume=True))
