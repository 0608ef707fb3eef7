"""Analysis numbers: ranks, adapter spectra, intruders, drift, snapshots, joint t-SNE, storage."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from lab import analysis
from lab.analysis import AdapterSpec, AnalysisError, DriftBase, Snapshot, SnapshotRequest
from lab.analysis.request import EncodedTexts
from lab.analysis.spectra import top_left_vectors
from lab.datasets import logprobs
from lab.models import load_model

TEXTS = [
    f"The {who} said that {p} was {how}."
    for who in ("nurse", "pilot", "cook")
    for p in ("he", "she")
    for how in ("late", "right")
]
LABELS = np.array([i // 4 for i in range(len(TEXTS))])


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama", task="nlg", seed=0)


def lora_model(bundle, rank=3, init=True, targets=("q_proj", "v_proj", "up_proj")):
    cfg = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=init
    )
    torch.manual_seed(0)
    return get_peft_model(copy.deepcopy(bundle.model), cfg).eval()


def perturb_b(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and ".default." in name:
                p.add_(scale * torch.randn(p.shape, generator=g))


# --- summary numbers ---------------------------------------------------------------------


def test_effective_rank_of_identity_and_rank_one():
    n = 7
    assert analysis.effective_rank(np.linalg.svd(np.eye(n), compute_uv=False)) == pytest.approx(n)
    rng = np.random.default_rng(0)
    rank1 = np.outer(rng.normal(size=9), rng.normal(size=5))
    assert analysis.effective_rank(np.linalg.svd(rank1, compute_uv=False)) == pytest.approx(
        1.0, abs=1e-6
    )
    assert analysis.effective_rank(torch.tensor([2.0, 2.0, 0.0])) == pytest.approx(2.0)


def test_stable_rank_and_topk_energy_known_values():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert analysis.stable_rank(s) == pytest.approx(14 / 9)
    assert analysis.topk_energy(s, k=1) == pytest.approx(9 / 14)
    assert analysis.topk_energy(s[::-1].copy(), k=2) == pytest.approx(13 / 14)  # sorted inside
    assert analysis.topk_energy(s, k=10) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, -1.0]), np.array([np.nan])])
def test_rank_functions_reject_bad_spectra(bad):
    with pytest.raises(ValueError):
        analysis.effective_rank(bad)


def test_output_spectrum_is_normalized_and_decreasing():
    torch.manual_seed(0)
    z = torch.randn(6, 4) @ torch.randn(4, 50)  # rank 4
    s = analysis.output_spectrum(z, max_values=None)
    assert len(s) == 6 and s[0] == pytest.approx(1.0)
    assert np.all(np.diff(s) <= 1e-6)
    assert s[4:].max() < 1e-5  # rank 4: the last two vanish
    assert len(analysis.output_spectrum(z, max_values=3)) == 3


# --- adapter spectra and intruders ------------------------------------------------------------


def test_rank_r_update_has_at_most_r_nonzero_singular_values(tiny):
    model = lora_model(tiny, rank=3)
    perturb_b(model)
    spectra = analysis.adapter_update_spectra(model)
    assert len(spectra) == 2 * 3  # 2 layers x (q, v, up)
    for name, s in spectra.items():
        module = model.get_submodule(name)
        exact = torch.linalg.svdvals(module.get_delta_weight("default").detach().float()).numpy()
        assert len(s) == 3
        assert np.count_nonzero(s > 1e-6 * s[0]) <= 3
        np.testing.assert_allclose(s, exact[:3], rtol=1e-4, atol=1e-7)
        assert exact[3:].max() < 1e-5 * exact[0]


def test_pissa_update_is_zero_at_init_and_rank_at_most_2r(tiny):
    model = lora_model(tiny, rank=2, init="pissa")
    initial = analysis.capture_initial_adapter(model)
    at_init = analysis.adapter_update_spectra(model, initial)
    assert all(np.abs(s).max() < 1e-6 for s in at_init.values())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    after = analysis.adapter_update_spectra(model, initial)
    for name, s in after.items():
        assert len(s) == 4 and s[0] > 1e-3
        m = model.get_submodule(name)
        a0, b0 = initial[name]
        dense = m.scaling["default"] * (
            m.lora_B["default"].weight @ m.lora_A["default"].weight - b0 @ a0
        )
        np.testing.assert_allclose(
            s, torch.linalg.svdvals(dense.detach()).numpy()[:4], rtol=1e-4, atol=1e-6
        )
    with pytest.raises(KeyError):
        analysis.adapter_update_spectra(model, {"nope": initial[next(iter(initial))]})


def test_intruder_dimensions_counts_new_directions():
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(20, 20))
    v, _ = torch.linalg.qr(torch.randn(12, 12))
    s = torch.tensor([10.0, 8, 6, 5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2])
    base = u[:, :12] @ torch.diag(s) @ v.T  # (20, 12), left vectors = u[:, :12]
    assert analysis.intruder_dimensions(base, base.clone()) == 0
    new = u[:, 15:16] @ v[:, :1].T * 50.0  # a strong direction outside the base's column space
    assert analysis.intruder_dimensions(base, base + new, top=1) == 1
    with pytest.raises(ValueError):
        analysis.intruder_dimensions(base, base[:5])


def test_fast_intruders_match_the_exact_count(tiny):
    model = lora_model(tiny, rank=2)
    perturb_b(model, scale=0.3)
    fast = analysis.model_intruders(model, top=4)
    exact = analysis.model_intruders(model, top=4, exact=True)
    assert fast.keys() == exact.keys() and len(fast) == 6
    assert fast == exact
    zero = analysis.model_intruders(lora_model(tiny, rank=2), top=4)  # B = 0: nothing new
    assert sum(zero.values()) == 0


def test_top_left_vectors_span_the_leading_subspace():
    torch.manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(40, 40))
    v, _ = torch.linalg.qr(torch.randn(30, 30))
    s = torch.logspace(1, -2, 30)
    w = u[:, :30] @ torch.diag(s) @ v.T
    got = top_left_vectors(w, 3, torch.randn(30, 12))
    overlap = (got.T @ u[:, :3]).abs()
    assert torch.allclose(overlap.max(dim=1).values, torch.ones(3), atol=1e-4)


def test_intruder_cache_is_reused(tiny):
    model = lora_model(tiny, rank=2)
    perturb_b(model, scale=0.3)
    cache: dict = {}
    first = analysis.model_intruders(model, cache=cache)
    assert len(cache) == 6
    assert analysis.model_intruders(model, cache=cache) == first and len(cache) == 6


# --- drift and snapshots -------------------------------------------------------------------------


def test_token_kl_known_values_and_mask():
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    arm = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    kl = analysis.token_kl(arm, base, torch.tensor([True, True]))
    p = torch.softmax(base[1], -1)
    assert kl[0].item() == 0.0
    assert kl[1].item() == pytest.approx(float((p * (p.log() - np.log(0.5))).sum()), rel=1e-5)
    assert analysis.token_kl(arm, base, torch.tensor([True, False]))[1].item() == 0.0
    with pytest.raises(AnalysisError):
        analysis.token_kl(arm, base[:1])


def test_drift_is_zero_for_identical_models_and_positive_after_a_change(tiny):
    model = lora_model(tiny)  # B = 0: the arm is the base model
    req = SnapshotRequest("nlg", TEXTS, LABELS, batch_size=5)
    base = DriftBase(context=model.disable_adapter)
    same = analysis.snapshot(model, tiny.tokenizer, req, arm="lora", step=1, base=base)
    assert same.summary()["kl_to_base"] == 0.0
    assert np.all(same.drift_per_text == 0.0)
    perturb_b(model)
    moved = analysis.snapshot(model, tiny.tokenizer, req, arm="lora", step=1, base=base)
    assert moved.summary()["kl_to_base"] > 1e-6
    assert np.all(moved.drift_per_text > 0)
    assert moved.features.shape == (len(TEXTS), tiny.model.config.hidden_size)
    assert not np.allclose(moved.features, same.features)


def test_batched_drift_is_the_mean_token_kl_of_each_text_alone(tiny):
    model = lora_model(tiny)
    perturb_b(model, scale=0.2)
    req = SnapshotRequest("nlg", TEXTS, LABELS, batch_size=4)
    snap = analysis.snapshot(
        model,
        tiny.tokenizer,
        req,
        arm="lora",
        step=1,
        base=DriftBase(context=model.disable_adapter),
    )
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([tiny.tokenizer(text)["input_ids"]])
        with torch.inference_mode():
            arm = model(input_ids=ids).logits
            with model.disable_adapter():
                base = model(input_ids=ids).logits
        want = analysis.token_kl(arm, base).mean().item()
        assert snap.drift_per_text[i] == pytest.approx(want, rel=1e-4, abs=1e-8)
        assert snap.drift_positions[i] == ids.shape[1]


def test_snapshot_cross_entropy_equals_the_separate_heldout_pass(tiny):
    # the forgetting metric now comes from the snapshot's own logits: it must equal the
    # separate pass it replaces, text by text, batched with padding (batch_size 3 of 8 texts)
    model = lora_model(tiny)
    perturb_b(model, scale=0.2)
    req = SnapshotRequest("nlg", TEXTS, LABELS, batch_size=3, max_len=64)
    snap = analysis.snapshot(model, tiny.tokenizer, req, arm="lora", step=1)
    want = logprobs.heldout_ce(model, tiny.tokenizer, TEXTS, max_len=64, batch_size=1)
    assert snap.heldout_ce.shape == (len(TEXTS),) and len(set(np.round(want, 4))) > 1
    np.testing.assert_allclose(snap.heldout_ce, want, rtol=1e-4)


def test_base_reference_gives_the_same_drift_as_a_second_forward(tiny):
    model = lora_model(tiny)
    req = SnapshotRequest("nlg", TEXTS, LABELS, batch_size=4)
    with model.disable_adapter():
        base = analysis.snapshot(
            model, tiny.tokenizer, req, arm="base", step=0, keep_reference=True
        )
    assert base.drift_per_text is None and base.adapter_spectra == {} and base.reference is not None
    hidden = tiny.model.config.hidden_size
    lengths = [len(tiny.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert [tuple(r.shape) for r in base.reference.rows] == [(n, hidden + 1) for n in lengths]
    perturb_b(model)
    via_ctx = analysis.snapshot(
        model,
        tiny.tokenizer,
        req,
        arm="lora",
        step=2,
        base=DriftBase(context=model.disable_adapter),
    )
    via_ref = analysis.snapshot(
        model, tiny.tokenizer, req, arm="lora", step=2, base=DriftBase(base.reference)
    )
    assert via_ref.summary()["kl_to_base"] > 1e-6
    np.testing.assert_allclose(via_ref.drift_per_text, via_ctx.drift_per_text, rtol=1e-4, atol=1e-7)
    shorter = SnapshotRequest("nlg", TEXTS, LABELS, batch_size=4, max_len=5)
    with pytest.raises(AnalysisError, match="other probe texts"):
        analysis.snapshot(
            model, tiny.tokenizer, shorter, arm="lora", step=2, base=DriftBase(base.reference)
        )


def test_moments_give_the_token_kl():
    from lab.analysis.drift import base_moments, moments_kl

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 40)
    h_base, h_arm = torch.randn(7, 6), torch.randn(7, 6)
    with torch.no_grad():
        z_base, z_arm = head(h_base), head(h_arm)
        rows = base_moments(head, z_base)
    assert rows.shape == (7, 7)
    want = analysis.token_kl(z_arm, z_base)
    torch.testing.assert_close(moments_kl(h_arm, z_arm, rows), want, rtol=1e-4, atol=1e-6)
    assert moments_kl(h_base, z_base, rows).abs().max().item() < 1e-5  # the same model: 0


def test_moments_reference_falls_back_when_the_arm_head_differs(tiny):
    req = SnapshotRequest("nlg", TEXTS, LABELS)
    model = lora_model(tiny)
    with model.disable_adapter():
        base = analysis.snapshot(
            model, tiny.tokenizer, req, arm="base", step=0, keep_reference=True
        )
    assert base.reference.serves(model)
    perturb_b(model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(1.01)  # the arm's head is no longer the base's
    assert not base.reference.serves(model)
    with pytest.raises(AnalysisError, match="head differs"):
        analysis.snapshot(
            model, tiny.tokenizer, req, arm="lora", step=1, base=DriftBase(base.reference)
        )
    fallback = analysis.snapshot(
        model,
        tiny.tokenizer,
        req,
        arm="lora",
        step=1,
        base=DriftBase(base.reference, model.disable_adapter),
    )
    second = analysis.snapshot(
        model,
        tiny.tokenizer,
        req,
        arm="lora",
        step=1,
        base=DriftBase(context=model.disable_adapter),
    )
    assert fallback.summary()["kl_to_base"] > 0
    np.testing.assert_array_equal(fallback.drift_per_text, second.drift_per_text)
    adapted = lora_model(tiny, targets=("q_proj", "lm_head"))
    with adapted.disable_adapter():
        ref = analysis.snapshot(
            adapted, tiny.tokenizer, req, arm="base", step=0, keep_reference=True
        )
    assert ref.reference is None  # a PEFT-wrapped head: no moments; arms use a base forward


def test_drift_base_needs_a_reference_or_a_context(tiny):
    with pytest.raises(AnalysisError, match="reference or a base context"):
        DriftBase()
    model = lora_model(tiny)
    req = SnapshotRequest("nlg", TEXTS[:2], LABELS[:2])
    with pytest.raises(AnalysisError, match="keep_reference"):
        analysis.snapshot(
            model,
            tiny.tokenizer,
            req,
            arm="lora",
            step=1,
            base=DriftBase(context=model.disable_adapter),
            keep_reference=True,
        )


def test_snapshot_summary_is_finite_json(tiny):
    model = lora_model(tiny)
    perturb_b(model)
    snap = analysis.snapshot(
        model,
        tiny.tokenizer,
        SnapshotRequest("nlg", TEXTS, LABELS),
        arm="lora",
        step=3,
        base=DriftBase(context=model.disable_adapter),
    )
    summary = snap.summary()
    for key in (
        "kl_to_base",
        "eff_rank_output",
        "stable_rank_output",
        "topk_energy_output",
        "eff_rank_features",
        "adapter_eff_rank_mean",
        "intruders_total",
    ):
        assert key in summary
    json.dumps(summary, allow_nan=False)
    assert 1.0 <= summary["eff_rank_output"] <= len(snap.output_spectrum)
    assert snap.output_spectrum[0] == pytest.approx(1.0)


def test_adapter_spec_picks_the_adapter_and_the_intruder_count(tiny):
    model = lora_model(tiny, rank=2)
    perturb_b(model, scale=0.3)
    req = SnapshotRequest("nlg", TEXTS[:3], LABELS[:3])
    base = DriftBase(context=model.disable_adapter)
    full = analysis.snapshot(model, tiny.tokenizer, req, arm="lora", step=1, base=base)
    assert full.intruders == analysis.model_intruders(model)
    assert full.adapter_spectra.keys() == analysis.adapter_update_spectra(model).keys()
    no_intruders = AdapterSpec(intruders=False)
    plain = analysis.snapshot(
        model, tiny.tokenizer, req, arm="lora", step=1, base=base, adapter=no_intruders
    )
    assert plain.intruders == {} and plain.adapter_spectra.keys() == full.adapter_spectra.keys()
    model.add_adapter("other", LoraConfig(r=1, target_modules=["q_proj"], init_lora_weights=False))
    other = AdapterSpec("other", intruders=False)
    picked = analysis.snapshot(
        model, tiny.tokenizer, req, arm="other", step=1, base=base, adapter=other
    )
    assert len(picked.adapter_spectra) == 2  # 2 layers x q_proj, rank 1
    assert all(len(v) == 1 and v[0] > 0 for v in picked.adapter_spectra.values())


def test_snapshot_of_a_classifier(tmp_path):
    bundle = load_model("tiny-bert", task="nlu", num_labels=3, seed=0)
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = get_peft_model(bundle.model, cfg).eval()
    req = SnapshotRequest("nlu", TEXTS, LABELS)
    with model.disable_adapter():
        base = analysis.snapshot(
            model, bundle.tokenizer, req, arm="base", step=0, keep_reference=True
        )
    assert base.reference is None  # a classifier keeps no reference: arms use a base forward
    snap = analysis.snapshot(
        model,
        bundle.tokenizer,
        req,
        arm="lora",
        step=1,
        base=DriftBase(base.reference, model.disable_adapter),
    )
    assert snap.features.shape == (len(TEXTS), 64)
    assert len(snap.output_spectrum) == 3  # (n, D = 3) class logits
    assert snap.summary()["kl_to_base"] == 0.0  # B = 0
    np.testing.assert_array_equal(snap.drift_positions, np.ones(len(TEXTS)))


def test_snapshot_request_rejects_bad_input():
    with pytest.raises(AnalysisError, match="labels"):
        SnapshotRequest("nlg", TEXTS, LABELS[:3])
    with pytest.raises(AnalysisError, match="task"):
        SnapshotRequest("seq", TEXTS, LABELS)
    with pytest.raises(AnalysisError, match="at least one"):
        SnapshotRequest("nlg", [], [])
    with pytest.raises(AnalysisError, match="at least 1"):
        SnapshotRequest("nlg", TEXTS, LABELS, batch_size=0)


def test_encoded_texts_batch_longest_first_within_the_memory_cap(tiny):
    req = SnapshotRequest("nlg", [*TEXTS, "a b"], [*LABELS, 0], batch_size=4)
    texts = EncodedTexts.encode(tiny.tokenizer, req)
    lengths = texts.lengths
    batches = list(texts.batches(4, 3 * max(lengths)))  # room for 3 of the longest
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    order = [i for b in batches for i in b]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    assert all(len(b) * lengths[b[0]] <= 3 * max(lengths) for b in batches)
    rows = texts.spectrum_rows(16)
    assert sum(len(p) for p in rows.values()) == 16
    assert all(int(p.max()) < lengths[i] for i, p in rows.items())
    other = SnapshotRequest("nlg", TEXTS, LABELS, max_len=5)
    assert EncodedTexts.encode(tiny.tokenizer, other).key != texts.key


# --- joint embedding -----------------------------------------------------------------------


def _clusters(n_per=10, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 16)) * 5
    labels = np.repeat(np.arange(3), n_per)
    feats = {
        arm: (centers[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)
        for arm in ("base", "lora")
    }
    return feats, labels


def test_joint_tsne_shapes_and_determinism():
    feats, labels = _clusters()
    a = analysis.joint_embedding(feats, labels, seed=0)
    b = analysis.joint_embedding(feats, labels, seed=0)
    for arm in feats:
        assert a["coords"][arm].shape == (30, 2)
        np.testing.assert_array_equal(a["coords"][arm], b["coords"][arm])
        assert a["silhouette"][arm] > 0.5  # three well-separated clusters
        assert a["eff_rank"][arm] > 1.0
    assert a["perplexity"] == pytest.approx(min(30.0, (60 - 1) / 3))


def test_joint_tsne_small_inputs_and_errors():
    feats, labels = _clusters(n_per=2)
    out = analysis.joint_embedding({"base": feats["base"]}, labels, perplexity=30)
    assert out["coords"]["base"].shape == (6, 2) and out["perplexity"] == pytest.approx(5 / 3)
    one_label = analysis.joint_embedding({"base": feats["base"]}, np.zeros(6, dtype=int))
    assert one_label["silhouette"]["base"] is None
    assert out["method"] == "tsne"
    two = analysis.joint_embedding({"base": feats["base"][:2]}, labels[:2])  # too few for t-SNE
    assert two["method"] == "pca" and two["coords"]["base"].shape == (2, 2)
    assert np.linalg.norm(two["coords"]["base"][0] - two["coords"]["base"][1]) > 0
    with pytest.raises(AnalysisError):
        analysis.joint_embedding({"base": feats["base"], "lora": feats["lora"][:4]}, labels)
    with pytest.raises(AnalysisError):
        analysis.joint_embedding(feats, labels[:3])


# --- storage -------------------------------------------------------------------------------------


def _snap(arm, step, drift=True):
    rng = np.random.default_rng(step)
    return Snapshot(
        arm=arm,
        step=step,
        features=rng.normal(size=(5, 8)).astype(np.float32),
        labels=np.array([0, 1, 0, 1, 2]),
        output_spectrum=np.array([1.0, 0.5, 0.1], dtype=np.float32),
        adapter_spectra={}
        if arm == "base"
        else {"base_model.model.layers.0.q_proj": np.array([0.3, 0.1], np.float32)},
        drift_per_text=None if not drift else np.array([0.1, 0.5, 0.0, 0.3, 0.2], np.float32),
        intruders={} if arm == "base" else {"base_model.model.layers.0.q_proj": 2},
        drift_positions=None if not drift else np.array([3, 4, 5, 6, 7], np.float32),
    )


def test_snapshot_save_load_round_trip(tmp_path):
    snaps = [
        _snap("base", 0, drift=False),
        _snap("lora", 0),
        _snap("lora", 10),
        _snap("balora", 10),
    ]
    for s in snaps:
        analysis.save_snapshot(tmp_path, s)
    (tmp_path / "analysis" / "step_000010" / "embedding.npz").write_bytes(b"not a snapshot")
    assert analysis.analysis_steps(tmp_path) == [0, 10]
    latest = analysis.load_snapshots(tmp_path)
    assert list(latest) == ["lora", "balora"]
    first = analysis.load_snapshots(tmp_path, 0)
    assert list(first) == ["base", "lora"]
    back = first["lora"]
    np.testing.assert_array_equal(back.features, snaps[1].features)
    np.testing.assert_array_equal(back.drift_per_text, snaps[1].drift_per_text)
    assert back.adapter_spectra.keys() == snaps[1].adapter_spectra.keys()
    assert back.intruders == {"base_model.model.layers.0.q_proj": 2}
    assert back.summary() == pytest.approx(snaps[1].summary())
    assert first["base"].drift_per_text is None
    assert analysis.load_snapshots(tmp_path / "nothing") == {}
    with pytest.raises(AnalysisError):
        analysis.save_snapshot(tmp_path, _snap("../evil", 1))


def test_grid_and_seeded_arms_have_snapshots(tmp_path):
    """A lambda-grid arm (balora@L1,L2,L3) and an arm of one seed (lora#s1) are file names."""
    for arm in ("balora@0.05,0.005,0.005", "lora#s1", "balora@0.1,0,0#s2"):
        analysis.save_snapshot(tmp_path, _snap(arm, 4))
    got = analysis.load_snapshots(tmp_path, 4)
    assert set(got) == {"balora@0.05,0.005,0.005", "lora#s1", "balora@0.1,0,0#s2"}
    assert got["lora#s1"].arm == "lora#s1"


def test_top_drifted_orders_by_kl():
    snap = _snap("lora", 1)
    texts = ["a", "b", "c", "d", "e"]
    assert analysis.top_drifted(snap, texts, n=2) == [
        ("b", pytest.approx(0.5)),
        ("d", pytest.approx(0.3)),
    ]
    with pytest.raises(AnalysisError):
        analysis.top_drifted(_snap("base", 0, drift=False), texts)
    with pytest.raises(AnalysisError):
        analysis.top_drifted(snap, texts[:2])


def test_pooled_features_ignore_padding(tiny):
    tok = tiny.tokenizer
    short, long = tok("a b")["input_ids"], tok("a much longer probe text")["input_ids"]
    pad = tok.pad_token_id
    batch = {
        "input_ids": torch.tensor([long, short + [pad] * (len(long) - len(short))]),
        "attention_mask": torch.tensor(
            [[1] * len(long), [1] * len(short) + [0] * (len(long) - len(short))]
        ),
    }
    both = analysis.pooled_features(tiny.model, batch)
    alone = analysis.pooled_features(
        tiny.model,
        {
            "input_ids": torch.tensor([short]),
            "attention_mask": torch.ones(1, len(short), dtype=torch.long),
        },
    )
    assert both.shape == (2, tiny.model.config.hidden_size)
    np.testing.assert_allclose(both[1], alone[0], rtol=1e-4, atol=1e-5)
    first_layer = analysis.pooled_features(tiny.model, batch, layer=1)
    assert not np.allclose(first_layer, both)
