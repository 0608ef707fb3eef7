"""Known-value, gradient, dtype and failure tests for the BA-LoRA regularizers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from oracle import oracle_loss

from lab.datasets.encoding import IGNORE_INDEX, EncodedNLG, collate_nlg
from lab.method import losses as L
from lab.method import regularizers as R
from lab.method.regularizers import (
    DegenerateTermError,
    consistency_loss,
    covariance_diversity_loss,
    diversity_loss,
    svd_loss,
    top_singular_values,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def equal_singular_matrix(k: int, shape=(6, 8), value: float = 3.0) -> torch.Tensor:
    """A matrix with exactly k equal non-zero singular values (rotated so it is not diagonal)."""
    m, n = shape
    u = torch.linalg.qr(torch.randn(m, m, generator=gen(1))).Q
    v = torch.linalg.qr(torch.randn(n, n, generator=gen(2))).Q
    d = torch.zeros(m, n)
    d[range(k), range(k)] = value
    return u @ d @ v.T


# consistency


def test_consistency_zero_for_identical_logits():
    z = torch.randn(5, 7, generator=gen())
    assert consistency_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_consistency_hand_computed_kl():
    p_t, p_s = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    temp = 2.0  # logits = T * log p, so softmax(logits / T) = p
    got = consistency_loss((temp * p_s.log())[None], (temp * p_t.log())[None], temperature=temp)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert got.item() == pytest.approx(temp**2 * kl, rel=1e-5)


def test_consistency_temperature_squared_scaling():
    s, t = torch.randn(4, 6, generator=gen(3)), torch.randn(4, 6, generator=gen(4))
    for temp in (0.5, 2.0, 3.0):
        scaled = consistency_loss(s / temp, t / temp, temperature=1.0)
        assert consistency_loss(s, t, temperature=temp).item() == pytest.approx(
            temp**2 * scaled.item(), rel=1e-5
        )


def test_consistency_masked_3d_equals_selected_rows_and_ignores_garbage():
    s, t = torch.randn(2, 5, 9, generator=gen(5)), torch.randn(2, 5, 9, generator=gen(6))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)
    ref = consistency_loss(s[mask], t[mask])
    assert consistency_loss(s, t, mask).item() == pytest.approx(ref.item(), rel=1e-6)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = 1e30
    t2[~mask] = -1e30
    assert consistency_loss(s2, t2, mask).item() == pytest.approx(ref.item(), rel=1e-6)


def test_consistency_saturated_student_is_finite_not_log_of_zero():
    # softmax([0, -200])[1] underflows to 0 in float32: log(softmax) would give inf.
    got = consistency_loss(torch.tensor([[0.0, -200.0]]), torch.zeros(1, 2), temperature=1.0)
    assert got.item() == pytest.approx(math.log(0.5) + 100.0, rel=1e-5)


def test_consistency_rejects_empty_mask_and_shape_mismatch():
    z = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="selects no position"):
        consistency_loss(z, z, torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape"):
        consistency_loss(z, torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="mask has shape"):
        consistency_loss(z, z, torch.ones(1, 4, dtype=torch.bool))


# diversity


def test_diversity_uniform_top_k_is_minus_log_k():
    k = 5
    z = torch.full((3, 12), -10.0)
    z[:, :k] = 1.0  # the top-K are tied
    assert diversity_loss(z, top_k=k).item() == pytest.approx(-math.log(k), rel=1e-6)
    assert diversity_loss(z[:, :k], top_k=50).item() == pytest.approx(-math.log(k), rel=1e-6)


def test_diversity_peaked_is_above_minus_log_k():
    z = torch.zeros(2, 30)
    z[:, 0] = 5.0
    value = diversity_loss(z, top_k=20).item()
    assert -math.log(20) + 0.1 < value < 0


# covariance diversity (NLU)


def test_covariance_diversity_known_example():
    # centred rows (0,-1), (-1,0), (1,1): C = [[1, .5], [.5, 1]], off-diag sum 2 * .25, / D = 2
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert covariance_diversity_loss(z).item() == pytest.approx(0.25, rel=1e-6)


def test_covariance_diversity_single_row_is_degenerate():
    with pytest.raises(DegenerateTermError, match="N=1"):
        covariance_diversity_loss(torch.randn(1, 3))
    z = torch.randn(1, 3)
    out = oracle_loss(torch.tensor(1.0), z, z.clone(), mode="nlu", svd_k=1)
    assert "diversity" in out.inactive and out.raw["diversity"] is None
    assert out.raw["consistency"] is not None


# svd


@pytest.mark.parametrize("k", [1, 3])
def test_svd_equal_singular_values(k):
    a = equal_singular_matrix(k)
    assert svd_loss(a, k).item() == pytest.approx(-math.sqrt(k), rel=1e-5)
    assert svd_loss(a, k, norm="nuclear").item() == pytest.approx(-1.0, rel=1e-5)


def test_svd_degenerate_inputs():
    with pytest.raises(DegenerateTermError, match="svd_k=4"):
        svd_loss(torch.randn(4, 9), 4)
    with pytest.raises(DegenerateTermError, match="zeros"):
        svd_loss(torch.zeros(5, 9), 2)
    with pytest.raises(ValueError, match="nuclear"):
        svd_loss(torch.randn(5, 9), 2, norm="nuclear", method="randomized")


def test_nuclear_svd_with_few_classes_is_inactive_in_the_oracle_loss():
    s = torch.randn(16, 2, generator=gen(7))  # N=16, D=2 classes, k=5 >= min(N, D)
    out = oracle_loss(
        torch.tensor(0.5), s, s + 0.1, mode="nlu", svd_k=5, svd_norm="nuclear", lambdas=(1, 1, 1)
    )
    assert out.raw["svd"] is None and "svd_k=5" in out.inactive["svd"]
    assert out.as_floats()["svd"] is None and out.as_floats()["weighted"]["svd"] is None
    feats = torch.randn(16, 32, generator=gen(8))
    out = oracle_loss(
        torch.tensor(0.5), s, s, mode="nlu", features=feats, svd_k=5, svd_target="features"
    )
    assert "svd" not in out.inactive and out.raw["svd"].item() < 0


def test_randomized_svd_matches_exact_and_is_not_constant():
    g = gen(9)
    spike = torch.randn(64, 5000, generator=g) + 3 * torch.randn(64, 1, generator=g) @ torch.randn(
        1, 5000, generator=g
    )
    u = torch.linalg.qr(torch.randn(64, 64, generator=g)).Q
    v = torch.linalg.qr(torch.randn(5000, 64, generator=g)).Q
    decay = u @ torch.diag(100.0 / torch.arange(1, 65)) @ v.T + 0.1 * torch.randn(
        64, 5000, generator=g
    )
    values = []
    for a in (spike, decay):
        exact = svd_loss(a, 10, method="exact").item()
        approx = svd_loss(a, 10, method="randomized").item()
        assert approx == pytest.approx(exact, rel=0.02)
        assert approx != pytest.approx(-1.0, abs=0.05)
        values.append(approx)
    assert abs(values[0] - values[1]) > 0.3
    s = top_singular_values(spike, 20)
    assert s.shape == (20,) and torch.all(s[:-1] >= s[1:])


def test_top_singular_values_match_svdvals():
    """The randomized values against torch.linalg.svdvals and against a spectrum known by
    construction: a slowly decaying one (where the power iterations matter: without them the
    top values are 15% low), an exactly low-rank one, a tall matrix and the exact path."""
    g = gen(21)
    m, n = 48, 3000
    u = torch.linalg.qr(torch.randn(m, m, generator=g)).Q
    v = torch.linalg.qr(torch.randn(n, m, generator=g)).Q
    known = 1.0 / torch.arange(1, m + 1, dtype=torch.float32).sqrt()  # s_i = 1 / sqrt(i)
    slow = u @ torch.diag(known) @ v.T  # (48, 3000)
    exact = torch.linalg.svdvals(slow)
    torch.testing.assert_close(exact, known, rtol=1e-4, atol=1e-6)
    for a in (slow, slow.T):
        s = top_singular_values(a, 20)
        assert s.shape == (20,) and torch.all(s[:-1] >= s[1:])
        torch.testing.assert_close(s[:10], exact[:10], rtol=0.02, atol=0.0)
        assert torch.all(s <= exact[:20] * (1 + 1e-5))  # a projection never adds energy
    low = torch.zeros(m)
    low[:15] = 2.0 ** -torch.arange(15, dtype=torch.float32)  # rank 15 < q = 20
    s = top_singular_values(u @ torch.diag(low) @ v.T, 20)
    torch.testing.assert_close(s[:15], low[:15], rtol=1e-4, atol=0.0)
    small = torch.randn(6, 40, generator=g)  # q >= min(shape): every value, exactly
    torch.testing.assert_close(top_singular_values(small, 8), torch.linalg.svdvals(small))


# gradients, dtypes, failures


def _finite_grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    value = fn(x)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    return x.grad


def test_gradients_finite_for_every_term():
    z = torch.randn(6, 10, generator=gen(10))
    z[0, 3] = float("-inf")
    z[1, 0] = 1e30
    teacher = torch.randn(6, 10, generator=gen(11))
    teacher[0, 3] = float("-inf")
    teacher[2, 1] = float("-inf")
    _finite_grad(lambda x: consistency_loss(x, teacher), z)
    _finite_grad(lambda x: diversity_loss(x, top_k=20), z)  # top_k > V: the -inf is included
    _finite_grad(lambda x: diversity_loss(x, top_k=3), z)
    _finite_grad(covariance_diversity_loss, torch.randn(6, 3, generator=gen(12)))
    repeated = equal_singular_matrix(3, shape=(30, 40))
    for method in ("exact", "randomized"):
        grad = _finite_grad(lambda x, m=method: svd_loss(x, 2, method=m, oversample=3), repeated)
        assert grad.abs().sum() > 0
    _finite_grad(lambda x: svd_loss(x, 2, norm="nuclear"), repeated)
    _finite_grad(lambda x: svd_loss(x, 2), torch.randn(5, 8) * 1e30)


def test_bf16_inputs_give_float32_answer():
    s = torch.randn(8, 64, generator=gen(13)).bfloat16()
    t = (s.float() + 0.3 * torch.randn(8, 64, generator=gen(14))).bfloat16()
    pairs = [
        (consistency_loss(s, t), consistency_loss(s.float(), t.float())),
        (diversity_loss(s), diversity_loss(s.float())),
        (covariance_diversity_loss(s), covariance_diversity_loss(s.float())),
        (svd_loss(s, 3), svd_loss(s.float(), 3)),
    ]
    for got, ref in pairs:
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(ref.item(), rel=1e-3)


def _raise_linalg(*args, **kwargs):
    raise torch.linalg.LinAlgError("svd did not converge")


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_svd_failure_propagates(monkeypatch, method):
    monkeypatch.setattr(torch.linalg, "svdvals", _raise_linalg)
    monkeypatch.setattr(torch.linalg, "qr", _raise_linalg)
    z = torch.randn(40, 50, generator=gen(15))
    with pytest.raises(torch.linalg.LinAlgError):
        oracle_loss(torch.tensor(1.0), z, z, svd_k=3, svd_method=method)


def test_non_finite_term_raises_naming_it():
    z = torch.randn(4, 6)
    t = z.clone()
    t[0, 0] = float("nan")  # a broken teacher: only the consistency term sees it
    with pytest.raises(FloatingPointError, match="consistency"):
        oracle_loss(torch.tensor(1.0), z, t, svd_k=2, lambdas=(1.0, 0.0, 0.0))
    z[0, 0] = float("-inf")
    with pytest.raises(FloatingPointError, match="svd"):
        oracle_loss(torch.tensor(1.0), z, z, svd_k=2)


def test_shifted_reg_mask_selects_the_scored_rows():
    items = [
        EncodedNLG([1, 2, 3, 4, 5], [-100, -100, 3, 4, 5]),
        EncodedNLG([1, 2, 3], [-100, 2, 3]),
    ]
    batch = collate_nlg(items, pad_id=0)
    labels, reg_mask = batch["labels"], batch["reg_mask"]
    assert torch.equal(reg_mask[:, :-1], labels[:, 1:] != IGNORE_INDEX)
    assert not reg_mask[:, -1].any()
    B, T = labels.shape
    V, K = 12, 4
    logits = torch.randn(B, T, V, generator=gen(16))
    logits[reg_mask] = torch.tensor([0.0] * K + [-30.0] * (V - K))  # uniform top-K where scored
    last = (labels != IGNORE_INDEX) & ~reg_mask  # last response token: in labels, never scored
    logits[last] = torch.tensor([20.0] + [-30.0] * (V - 1))
    assert diversity_loss(logits, reg_mask, top_k=K).item() == pytest.approx(-math.log(K))
    unshifted = diversity_loss(logits, labels != IGNORE_INDEX, top_k=K).item()
    assert unshifted > -math.log(K) + 0.1
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
    ce_rows = F.cross_entropy(logits[reg_mask], labels[:, 1:][reg_mask[:, :-1]])
    assert ce.item() == pytest.approx(ce_rows.item(), rel=1e-6)


def test_zero_lambdas_reproduce_task_loss_bitwise():
    w = torch.randn(12, 5, generator=gen(17)).requires_grad_(True)
    x, y = torch.randn(9, 5, generator=gen(18)), torch.randint(0, 12, (9,), generator=gen(19))
    logits = x @ w.T  # (N, V)
    teacher = logits.detach() + 0.5
    (ref_grad,) = torch.autograd.grad(F.cross_entropy(logits, y), w, retain_graph=True)
    task = F.cross_entropy(logits, y)
    out = oracle_loss(task, logits, teacher, lambdas=(0, 0, 0), svd_k=2)
    assert out.total is task and not out.inactive  # the same tensor, the same graph
    assert all(out.raw[t] is not None and not out.raw[t].requires_grad for t in L.TERMS)
    (grad,) = torch.autograd.grad(out.total, w, retain_graph=True)
    assert torch.equal(grad, ref_grad)
    on = oracle_loss(task, logits, teacher, lambdas=(1.0, 0.5, 0.5), svd_k=2)
    (grad_on,) = torch.autograd.grad(on.total, w)
    assert not torch.equal(grad_on, ref_grad)


def test_as_floats_and_total():
    z = torch.randn(10, 16, generator=gen(20))
    out = oracle_loss(torch.tensor(2.0), z, z + 1.0, lambdas=(0.1, 0.2, 0.3), svd_k=3)
    f = out.as_floats()
    expected = 2.0 + 0.1 * f["consistency"] + 0.2 * f["diversity"] + 0.3 * f["svd"]
    assert f["loss"] == pytest.approx(expected, rel=1e-6) and f["task_loss"] == 2.0
    assert f["weighted"]["svd"] == pytest.approx(0.3 * f["svd"], rel=1e-6)
    assert all(isinstance(f[t], float) for t in L.TERMS) and f["inactive"] == {}
    with pytest.raises(ValueError, match="features"):
        oracle_loss(torch.tensor(2.0), z, z, svd_target="features")
    with pytest.raises(ValueError, match="teacher"):
        oracle_loss(torch.tensor(2.0), z, None)


def test_chunked_consistency_matches_plain_autograd(monkeypatch):
    """The row-chunked KL keeps only its gradient; value and gradient equal the plain formula."""
    from lab.method import regularizers

    monkeypatch.setattr(regularizers._ChunkedKL, "CHUNK_ELEMS", 33)  # force several chunks
    g = torch.Generator().manual_seed(3)
    s = torch.randn(9, 13, generator=g, requires_grad=True)
    t = torch.randn(9, 13, generator=g)
    out = consistency_loss(s, t, temperature=2.0)
    (grad,) = torch.autograd.grad(out, s)
    s2 = s.detach().clone().requires_grad_(True)
    log_s, log_t = F.log_softmax(s2 / 2.0, -1), F.log_softmax(t / 2.0, -1)
    ref = 4.0 * (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    (ref_grad,) = torch.autograd.grad(ref, s2)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-7)


# the loss contract (lab.method.losses)


def test_weigh_known_values_and_zero_weights():
    from lab.method import losses

    out = losses.weigh(2.0, {"consistency": 1.5, "diversity": -3.0, "svd": None}, (0.1, 0.0, 0.5))
    assert out.total == 2.0 + 0.1 * 1.5  # diversity has weight 0, svd is not there
    assert out.weighted == {"consistency": 0.1 * 1.5, "diversity": 0.0, "svd": None}
    assert out.raw == {"consistency": 1.5, "diversity": -3.0, "svd": None}
    assert out.lambdas == {"lambda1": 0.1, "lambda2": 0.0, "lambda3": 0.5}
    task = torch.tensor(1.0, requires_grad=True)
    assert losses.weigh(task, {"svd": torch.tensor(float("nan"))}, (0, 0, 0)).total is task
    for bad in ((0.1, 0.2), (0.1, -1.0, 0.0), (0.1, math.inf, 0.0)):
        with pytest.raises(ValueError):
            losses.weigh(task, {}, bad)


def test_train_values_of_an_event():
    from lab.method import losses

    values = {"task_loss": 2.0, "consistency": 0.5, "diversity": -1.0, "svd": -2.0}
    lambdas = (0.2, 0.1, 0.0)
    got = losses.train_values(values, {"task_loss", "consistency", "diversity"}, lambdas, {}, True)
    assert got["loss"] == 2.0 + (0.2 * 0.5 + 0.1 * -1.0) and got["task_loss"] == 2.0
    assert (got["consistency"], got["diversity"], got["svd"]) == (0.5, -1.0, None)
    assert got["weighted"] == {"consistency": 0.2 * 0.5, "diversity": 0.1 * -1.0, "svd": None}
    assert got["lambdas"] == {"lambda1": 0.2, "lambda2": 0.1, "lambda3": 0.0}
    assert got["inactive"] == {}
    plain = losses.train_values(values, {"task_loss"}, (0.0, 0.0, 0.0), {}, False)
    assert plain["loss"] == 2.0 and plain["consistency"] is None
    assert set(plain["inactive"]) == set(losses.TERMS)


def test_mix_into_adds_the_weighted_gradients_in_place():
    from lab.method import losses

    acc = torch.ones(2, 4)
    dense = torch.full((2, 4), 2.0)
    index = torch.tensor([[0, 3], [1, 1]])
    sparse = losses.Scattered(index, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    parts = {"consistency": dense, "diversity": sparse, "svd": torch.full((2, 4), 9.0)}
    out = losses.mix_into(acc, parts, (0.5, 0.25, 0.0))
    assert out is acc  # in place; svd has weight 0 and adds nothing
    want = torch.tensor([[2.0 + 0.25, 2.0, 2.0, 2.0 + 0.5], [2.0, 2.0 + 0.25 * 7, 2.0, 2.0]])
    torch.testing.assert_close(acc, want)
    assert losses.active((0.5, 0.0, 0.1)) == {"consistency", "svd"}
    untouched = torch.zeros(3)
    losses.mix_into(untouched, {"consistency": None, "diversity": torch.ones(3)}, (1, 0, 0))
    assert untouched.tolist() == [0.0, 0.0, 0.0]


def test_row_chunks_cover_the_rows_in_order():
    assert list(R.row_chunks(5, 2)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert list(R.row_chunks(4, 10)) == [slice(0, 4)]
    assert list(R.row_chunks(0, 3)) == []
    with pytest.raises(ValueError, match="at least 1 row"):
        list(R.row_chunks(4, 0))
