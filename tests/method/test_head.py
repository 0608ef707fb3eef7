"""The fused head loss and the Gram-matrix svd term against the plain, materialized versions."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from oracle import oracle_loss

import lab.engine.forward as forward
from lab import models
from lab.config import load_preset
from lab.engine import adapters
from lab.method.head import head_gram, head_loss, logits_svd_loss
from lab.method.regularizers import DegenerateTermError, svd_loss


def _head(v: int, hdim: int, bias: bool, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(hdim, v, bias=bias)
    head.requires_grad_(False)
    return head


def _rows(m: int, hdim: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(m, hdim, generator=g)
    t = h + 0.3 * torch.randn(m, hdim, generator=g)
    return h, t


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_head_loss_matches_materialized_terms(bias, chunk):
    head = _head(37, 12, bias)
    h, t = _rows(11, 12)
    targets = torch.randint(0, 37, (11,), generator=torch.Generator().manual_seed(2))
    lam = (0.3, 0.2)

    h1 = h.clone().requires_grad_()
    total, ce, kl, neg_h = head_loss(
        h1, head, targets, t, lambdas=lam, temperature=2.0, top_k=7, terms=True, chunk=chunk
    )
    total.backward()

    h2 = h.clone().requires_grad_()
    z = head(h2)
    ref = oracle_loss(
        F.cross_entropy(z, targets), z, head(t), lambdas=(*lam, 0.0), temperature=2.0, top_k=7
    )
    ref.total.backward()
    assert ce.item() == pytest.approx(ref.task.item(), rel=1e-5)
    assert kl.item() == pytest.approx(ref.raw["consistency"].item(), rel=1e-4)
    assert neg_h.item() == pytest.approx(ref.raw["diversity"].item(), rel=1e-5)
    assert total.item() == pytest.approx(ref.total.item(), rel=1e-5)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-4, atol=1e-6)


def test_head_loss_zero_weights_add_no_gradient_and_no_terms_is_plain_ce():
    head = _head(29, 8, False)
    h, t = _rows(9, 8)
    targets = torch.randint(0, 29, (9,), generator=torch.Generator().manual_seed(3))
    h1 = h.clone().requires_grad_()
    total, ce, kl, neg_h = head_loss(h1, head, targets, t, lambdas=(0.0, 0.0), terms=True)
    assert kl.item() > 0 and neg_h.item() < 0  # logged even with weight 0
    total.backward()
    h2 = h.clone().requires_grad_()
    plain = F.cross_entropy(head(h2), targets)
    plain.backward()
    assert total.item() == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-7)
    h3 = h.clone().requires_grad_()
    total3, _, kl3, neg3 = head_loss(h3, head, targets, None, terms=False)
    assert kl3 is None and neg3 is None
    total3.backward()
    torch.testing.assert_close(h3.grad, h2.grad, rtol=1e-5, atol=1e-7)


def test_head_loss_consistency_is_zero_for_the_same_rows():
    head = _head(31, 8, True)
    h, _ = _rows(6, 8)
    targets = torch.zeros(6, dtype=torch.long)
    _, _, kl, _ = head_loss(h, head, targets, h.clone(), lambdas=(1.0, 0.0), terms=True)
    assert abs(kl.item()) < 1e-6


def test_head_loss_rejects_bad_inputs():
    head = _head(10, 4, False)
    h = torch.randn(3, 4)
    t = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="no teacher"):
        head_loss(h, head, t, None, lambdas=(0.1, 0.0), terms=True)
    with pytest.raises(ValueError, match="differ"):
        head_loss(h, head, t, torch.randn(2, 4), terms=True)
    with pytest.raises(ValueError, match="non-empty"):
        head_loss(torch.randn(0, 4), head, t[:0], None)


@pytest.mark.parametrize("bias", [False, True])
def test_gram_svd_term_equals_exact_svd_of_the_logits(bias):
    head = _head(300, 16, bias)
    h, _ = _rows(40, 16)
    h1 = h.clone().requires_grad_()
    got = logits_svd_loss(h1, head, 5)
    got.backward()
    h2 = h.clone().requires_grad_()
    want = svd_loss(head(h2), 5, method="exact")
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-3, atol=1e-5)


def test_gram_svd_term_degenerate_cases_and_cache():
    head = _head(50, 6, False)
    with pytest.raises(DegenerateTermError, match="svd_k"):
        logits_svd_loss(torch.randn(4, 6), head, 4)
    assert torch.isnan(logits_svd_loss(torch.zeros(8, 6), head, 2))  # 0 / 0, no host sync
    first = head_gram(head)
    assert head_gram(head) is first
    with torch.no_grad():
        head.weight.mul_(2.0)  # an in-place change bumps the version: the cache is rebuilt
    torch.testing.assert_close(head_gram(head), 4.0 * first, rtol=1e-5, atol=1e-5)


def test_teacher_dtype_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert models.teacher_dtype("model", torch.float32, cpu) == torch.float32
    assert models.teacher_dtype("bfloat16", torch.float32, cpu) == torch.bfloat16
    monkeypatch.setattr(models.loading, "fast_bf16", lambda device: True)
    assert models.teacher_dtype("auto", torch.float32, cpu) == torch.bfloat16
    assert models.teacher_dtype("auto", torch.float16, cpu) == torch.float16
    monkeypatch.setattr(models.loading, "fast_bf16", lambda device: False)
    assert models.teacher_dtype("auto", torch.float32, cpu) == torch.float32


@pytest.mark.parametrize(
    ("flags", "onednn", "fast"),
    [
        ([], True, False),  # AVX-512 without bf16 (Ice Lake): oneDNN says yes, it is emulated
        (["avx512_bf16"], True, True),
        (["amx_bf16"], True, True),
        (["amx_bf16"], False, False),  # a torch build without oneDNN's bf16 kernels
        (None, True, False),  # flags unknown
    ],
)
def test_native_bf16_needs_the_cpu_flags_not_only_onednn(monkeypatch, flags, onednn, fast):
    monkeypatch.setattr(models.loading, "cpu_info", lambda: {"model": "x", "native_bf16": flags})
    monkeypatch.setattr(models.loading, "_onednn_bf16", lambda: onednn)
    models.loading.fast_bf16.cache_clear()
    try:
        assert models.loading.fast_bf16(torch.device("cpu")) is fast
    finally:
        models.loading.fast_bf16.cache_clear()


def _arm():
    bundle = models.load_model("tiny-llama", task="nlg", seed=0)
    return adapters.make_arm(
        bundle.model,
        "balora",
        task="nlg",
        rank=4,
        alpha=8.0,
        dropout=0.0,
        target_modules=["auto"],
        pissa_niter=0,
        seed=0,
    ), bundle


def _batch(bundle, cfg):
    from lab.datasets import encoding, load_task_data

    td = load_task_data("sentiment", task="nlg", seed=0, max_train=8, max_eval=2)
    return encoding.make_batch(bundle.tokenizer, td.train[:4], "nlg", cfg.train.seq_len)


def _step_with_grads(model, batch, cfg, lambdas):
    """One micro-batch's loss with every term, backward: (values, inactive terms, grads)."""
    params = adapters.trainable_parameters(model)
    for p in params:
        p.grad = None
    out = forward.micro_batch_loss(model, batch, cfg, lambdas, need_terms=True)
    weighted, raw, inactive = forward.batch_terms(model, out.rows, cfg, lambdas)
    (out.total + weighted).backward()
    values = {k: float(v) for k, v in {**out.values, **raw}.items()}
    values["loss"] = float(out.total + weighted)
    return values, inactive, [p.grad.clone() for p in params]


@pytest.mark.parametrize("teacher", ["model", "bfloat16"])
def test_fused_step_equals_unfused_step(monkeypatch, teacher):
    cfg = load_preset("tiny-test", [f"reg.teacher_dtype={teacher}", "reg.svd_k=3"])
    model, bundle = _arm()
    batch = _batch(bundle, cfg)
    lambdas = (0.5, 0.3, 0.2)
    assert forward.fused_nlg(model, cfg)

    fused, inactive_fused, g_fused = _step_with_grads(model, batch, cfg, lambdas)
    monkeypatch.setattr(forward, "fused_nlg", lambda model, cfg: False)
    plain, inactive_plain, g_plain = _step_with_grads(model, batch, cfg, lambdas)
    for key in ("loss", "task_loss", "consistency", "diversity", "svd"):
        assert fused[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    assert inactive_fused == inactive_plain == {}
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    if teacher == "bfloat16":
        assert fused["consistency"] > 0  # a bf16 teacher differs slightly from the fp32 model


def test_head_loss_on_a_bf16_head_follows_the_float32_one():
    head = _head(53, 16, False)
    h, t = _rows(12, 16)
    targets = torch.randint(0, 53, (12,), generator=torch.Generator().manual_seed(4))
    kw = dict(lambdas=(0.3, 0.2), terms=True, top_k=5)
    h32 = h.clone().requires_grad_()
    ref = head_loss(h32, head, targets, t, **kw)
    ref[0].backward()
    h16 = h.bfloat16().requires_grad_()
    got = head_loss(h16, head.to(torch.bfloat16), targets, t.bfloat16(), **kw)
    got[0].backward()
    assert h16.grad.dtype == torch.bfloat16
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32 and a.item() == pytest.approx(b.item(), rel=0.05, abs=0.02)
    cos = F.cosine_similarity(h16.grad.float().flatten(), h32.grad.flatten(), dim=0)
    assert cos.item() > 0.98


def test_a_bf16_model_trains_through_the_fused_head(tmp_path):
    from lab.engine import trainer

    cfg = load_preset(
        "tiny-test",
        [
            "model.dtype=bfloat16",
            "train.steps=2",
            "train.bias_eval=false",
            "train.analysis=false",
            "data.max_eval=4",
        ],
    )
    events = list(trainer.run(cfg, tmp_path / "bf16"))
    train = [e for e in events if e["kind"] == "train"]
    assert len(train) == 6 and not [e for e in events if e["kind"] == "failed"]
    for e in train:
        for key in ("loss", "task_loss", "consistency", "diversity", "svd"):
            assert e[key] is not None and math.isfinite(e[key]), (e["arm"], key)


def _hand_weighted_grad(h, head, targets, t, l1, l2, top_k):
    """d (ce + l1 * consistency + l2 * diversity) / dh, the weights applied here by hand."""
    from lab.method.regularizers import consistency_loss, diversity_loss

    h = h.clone().requires_grad_()
    z = head(h)
    total = F.cross_entropy(z, targets)
    total = total + l1 * consistency_loss(z, head(t), None, 2.0)
    total = total + l2 * diversity_loss(z, None, top_k)
    total.backward()
    return total.detach(), h.grad


def test_the_fused_gradient_takes_its_weights_from_lab_losses(monkeypatch):
    """The fused head mixes the terms' gradients through lab.method.losses: doubling the consistency
    weight there doubles that term's share of the gradient (and of the value)."""
    from lab.method import losses

    head = _head(41, 10, True)
    h, t = _rows(13, 10)
    targets = torch.randint(0, 41, (13,), generator=torch.Generator().manual_seed(5))
    kw = dict(lambdas=(0.4, 0.3), temperature=2.0, top_k=6, terms=True, chunk=4)

    def fused():
        h1 = h.clone().requires_grad_()
        total, *_ = head_loss(h1, head, targets, t, **kw)
        total.backward()
        return total.detach(), h1.grad

    def doubled_consistency(lambdas):
        w = plain_weights(lambdas)
        return {**w, "consistency": 2 * w["consistency"]}

    plain_weights = losses.weights
    for l1 in (0.4, 0.8):  # the second pass: lab.method.losses doubles the consistency weight
        total, grad = fused()
        ref_total, ref_grad = _hand_weighted_grad(h, head, targets, t, l1, 0.3, 6)
        assert total.item() == pytest.approx(ref_total.item(), rel=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
        monkeypatch.setattr(losses, "weights", doubled_consistency)


def _decoder_shapes(monkeypatch, model) -> list[tuple[int, int]]:
    """Record the (B, T) of every decoder call."""
    decoder = model.get_base_model().get_decoder()
    seen = []
    original = decoder.forward

    @functools.wraps(original)  # keeps the signature that picks the cache keyword
    def spy(*args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", spy)
    return seen


def test_shared_start_runs_once_and_gives_the_full_pass_loss_and_gradient(monkeypatch):
    # byte tokens: room for the whole instruction, which a shorter cut drops from the left
    cfg = load_preset("tiny-test", ["reg.svd_k=3", "train.seq_len=320"])
    model, bundle = _arm()
    batch = _batch(bundle, cfg)
    C, (B, T) = batch["shared_len"], batch["input_ids"].shape
    assert C >= 8  # every row starts with the task's instruction
    lambdas = (0.5, 0.3, 0.2)
    model.train()
    seen = _decoder_shapes(monkeypatch, model)
    shared, _, g_shared = _step_with_grads(model, batch, cfg, lambdas)
    # teacher and student: the shared start as one row, then every row's own part
    assert seen == [(1, C), (B, T - C)] * 2
    seen.clear()
    full, _, g_full = _step_with_grads(model, {**batch, "shared_len": 0}, cfg, lambdas)
    assert seen == [(B, T)] * 2
    for key in ("loss", "task_loss", "consistency", "diversity", "svd"):
        assert shared[key] == pytest.approx(full[key], rel=1e-5, abs=1e-6), key
    assert any(g.abs().sum() > 0 for g in g_full)
    for a, b in zip(g_shared, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lora_dropout_in_training_runs_every_row_whole(monkeypatch):
    cfg = load_preset("tiny-test", ["lora.dropout=0.1", "train.seq_len=320"])
    model, bundle = _arm()
    batch = _batch(bundle, cfg)
    assert batch["shared_len"] > 0
    seen = _decoder_shapes(monkeypatch, model)
    model.train()
    forward.micro_batch_loss(model, batch, cfg, (0.0, 0.0, 0.0), need_terms=False)
    assert seen == [tuple(batch["input_ids"].shape)]  # each row draws its own dropout noise
    seen.clear()
    model.eval()  # no dropout: the start is shared again
    forward.micro_batch_loss(model, batch, cfg, (0.0, 0.0, 0.0), need_terms=False)
    assert len(seen) == 2
