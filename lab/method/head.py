"""The NLG loss of one micro-batch computed from the hidden rows through the frozen LM head.

The task cross-entropy, the consistency term and the diversity term all need full-vocabulary
distributions at the used rows. ``head_loss`` makes them in row chunks: the (c, V) logits of a
chunk, student and teacher, exist only inside the loop, and the gradient with respect to the
hidden rows, (M, H), is formed there (dL/dz of the chunk times W) and kept for the backward
pass, which only scales it. Nothing of shape (M, V) is stored.

The svd term of the logits Z = h W^T (+ b) is exact from the (M, M) Gram matrix
h (W^T W) h^T, whose eigenvalues are the squared singular values of Z; W^T W (H, H) is cached
per head weight. The values and gradients equal those of :mod:`lab.method.regularizers` on the
materialized logits (tests compare them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F

from lab.method import losses
from lab.method.regularizers import DegenerateTermError, kl_rows, row_chunks

CHUNK_ROWS = 64  # rows per chunk: (64, 49152) float32 is 12.6 MB per buffer
EIG_FLOOR = 1e-12  # svd term: eigenvalues of the normalized Gram matrix clamped here before sqrt

T = TypeVar("T")


class _HeadLoss(torch.autograd.Function):
    """(total, ce, kl, neg_entropy) over M rows; total = ce + l1 * kl + l2 * neg_entropy is
    weighed by :func:`lab.method.losses.weigh`, and the chunk loop mixes the terms' gradients with the
    same weights by :func:`lab.method.losses.mix_into` (one (M, H) gradient buffer, whatever the number
    of terms)."""

    @staticmethod
    def forward(
        ctx,
        h: torch.Tensor,  # (M, H) student rows
        weight: torch.Tensor,  # (V, H) frozen head
        bias: torch.Tensor | None,
        teacher_h: torch.Tensor | None,  # (M, H) teacher rows, any float dtype
        targets: torch.Tensor,  # (M,) token ids
        lambdas: tuple[float, float, float],
        temperature: float,
        top_k: int,
        terms: bool,
        chunk: int,
        norm: float,
    ):
        need_grad = ctx.needs_input_grad[0]
        weighted = losses.active(lambdas)  # the terms whose gradient the mix needs
        ctx.h_dtype = h.dtype
        dh = torch.empty(h.shape, dtype=torch.float32, device=h.device) if need_grad else None
        sums = torch.zeros(3, dtype=torch.float32, device=h.device)  # ce, kl, -entropy
        t_weight = t_bias = None
        if terms and teacher_h is not None:
            t_weight = weight if teacher_h.dtype == weight.dtype else weight.to(teacher_h.dtype)
            if bias is not None:
                t_bias = bias.to(teacher_h.dtype)
        k = min(top_k, weight.shape[0])
        temp = float(temperature)
        for rows in row_chunks(h.shape[0], chunk):
            z = F.linear(h[rows], weight, bias).float()  # (c, V)
            tgt = targets[rows]
            log_p = F.log_softmax(z, dim=-1)
            sums[0] -= log_p.gather(1, tgt[:, None]).sum()
            g = log_p.exp_() if need_grad else None  # d CE / dz = p - onehot (times M)
            del log_p
            if g is not None:
                g[torch.arange(g.shape[0], device=g.device), tgt] -= 1.0
            grads: dict[str, torch.Tensor | losses.Scattered] = {}
            if terms and teacher_h is not None:
                zt = F.linear(teacher_h[rows], t_weight, t_bias).float().div_(temp)  # (c, V)
                log_t = F.log_softmax(zt, dim=-1)
                del zt
                log_s = F.log_softmax(z / temp, dim=-1)
                kl, dz = kl_rows(log_s, log_t, g is not None and "consistency" in weighted)
                del log_t, log_s
                sums[1] += kl
                if dz is not None:  # d (T^2 KL) / dz = T (p_s - p_t)
                    grads["consistency"] = dz.mul_(temp)
                del dz
            if terms:
                top, idx = z.topk(k, dim=-1)  # (c, K)
                lp = F.log_softmax(top, dim=-1)
                p = lp.exp()
                lp = torch.where(torch.isfinite(lp), lp, 0.0)
                row = (p * lp).sum(-1, keepdim=True)  # (c, 1): minus the entropy
                sums[2] += row.sum()
                if g is not None and "diversity" in weighted:
                    # d (sum p log p) / d top = p (log p - row), at the top-K columns
                    grads["diversity"] = losses.Scattered(idx, p * (lp - row))
            del z
            if g is not None:
                losses.mix_into(g, grads, lambdas)  # d total / dz of the chunk, in g
                del grads
                dh[rows] = (g.to(weight.dtype) @ weight).float()  # (c, V) @ (V, H)
                del g
        if dh is not None:
            dh.div_(norm)
        ctx.save_for_backward(dh)
        ce = sums[0] / norm
        kl = sums[1] * (temp * temp / norm)
        neg_entropy = sums[2] / norm
        # The total is a tensor of its own (ce is marked non-differentiable below).
        parts = {"consistency": kl, "diversity": neg_entropy}
        total = losses.weigh(ce.clone(), parts, lambdas).total
        ctx.mark_non_differentiable(ce, kl, neg_entropy)
        return total, ce, kl, neg_entropy

    @staticmethod
    def backward(ctx, g_total, *_):
        (dh,) = ctx.saved_tensors
        grad = None if dh is None else (dh * g_total).to(ctx.h_dtype)
        return (grad, *([None] * 10))


def head_loss(
    h: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher_h: torch.Tensor | None = None,
    *,
    lambdas: tuple[float, float] = (0.0, 0.0),
    temperature: float = 2.0,
    top_k: int = 20,
    terms: bool = False,
    chunk: int = CHUNK_ROWS,
    norm: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Task CE, consistency and diversity of the rows ``h`` under ``head``, fused.

    Returns ``(total, ce, kl, neg_entropy)``: ``total`` = ce + l1 * kl + l2 * neg_entropy
    carries the gradient to ``h`` (a term whose weight is 0 adds neither value nor gradient);
    the other three are detached. kl is T^2 * mean KL(teacher || student) at temperature T
    (None without ``teacher_h``), neg_entropy minus the mean entropy of the renormalized top-K
    distribution; both are None when ``terms`` is false.

    ``norm``: the count the row sums are divided by (default M, a mean over these rows). The
    trainer passes the step's global number of response tokens, so the micro-batches and
    processes of a step add up to the full-batch mean and its gradient.
    """
    if h.dim() != 2 or h.shape[0] == 0:
        raise ValueError(f"the hidden rows must be a non-empty (M, H) matrix, got {tuple(h.shape)}")
    if teacher_h is not None and teacher_h.shape != h.shape:
        raise ValueError(
            f"teacher rows {tuple(teacher_h.shape)} and student rows {tuple(h.shape)} differ"
        )
    lam1, lam2 = (float(x) for x in lambdas)
    if lam1 > 0 and teacher_h is None:
        raise ValueError("consistency has a non-zero weight but no teacher rows were given")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    total, ce, kl, neg_entropy = _HeadLoss.apply(
        h,
        head.weight,
        head.bias,
        teacher_h.detach() if teacher_h is not None else None,
        targets,
        (lam1, lam2, 0.0) if terms else (0.0, 0.0, 0.0),
        temperature,
        top_k,
        terms,
        chunk,
        float(h.shape[0] if norm is None else norm),
    )
    if not terms:
        return total, ce, None, None
    return total, ce, (kl if teacher_h is not None else None), neg_entropy


def cached_on_head(head: torch.nn.Module, name: str, compute: Callable[[], T]) -> T:
    """``compute()``, cached on the frozen ``head`` as the attribute ``name``.

    The cache key holds the weight's storage and the version counters of the weight and the
    bias, so an in-place change of the head (or a new head) recomputes it.
    """
    weight, bias = head.weight, getattr(head, "bias", None)
    key = (weight.data_ptr(), weight._version, None if bias is None else bias._version)
    cached = getattr(head, name, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = compute()
    setattr(head, name, (key, value))
    return value


def head_gram(head: torch.nn.Linear) -> torch.Tensor:
    """W'^T W' (H', H') in float32 for the frozen head (W' = [W, b] with a bias), cached on it
    (:func:`cached_on_head`)."""

    @torch.no_grad()
    def gram() -> torch.Tensor:
        w = head.weight.detach().double()
        if head.bias is not None:
            w = torch.cat([w, head.bias.detach().double()[:, None]], dim=1)
        return (w.T @ w).float()

    return cached_on_head(head, "_balora_gram", gram)


def logits_svd_loss(h: torch.Tensor, head: torch.nn.Linear, k: int) -> torch.Tensor:
    """-sum_{i<=k} s_i(Z) / ||Z||_F of Z = h W^T (+ b), exactly, without forming Z.

    The eigenvalues of Z Z^T = h' (W'^T W') h'^T are s_i^2 and its trace is ||Z||_F^2. Raises
    DegenerateTermError when k >= min(M, V) (the share is then constant); Z = 0 gives NaN.
    """
    m, v = h.shape[0], head.weight.shape[0]
    if k >= min(m, v):
        raise DegenerateTermError(f"svd_k={k} >= min({m}, {v}): the top-k share is constant")
    hf = h.float()
    if head.bias is not None:
        hf = torch.cat([hf, hf.new_ones(m, 1)], dim=1)
    gram = hf @ head_gram(head) @ hf.T  # (M, M) = Z Z^T
    # Scale-free ratio: dividing by the largest diagonal entry keeps the eigen solver in range.
    # Non-finite rows, or Z = 0 (0 / 0), make the value NaN (the caller reports a non-finite
    # svd term): the solver gets the identity instead, decided on the device, not the host.
    gram = gram / gram.detach().diagonal().max()
    gram = 0.5 * (gram + gram.T)
    ok = torch.isfinite(gram).all()
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    eig = torch.linalg.eigvalsh(torch.where(ok, gram, eye))  # ascending
    top = eig[-k:].clamp_min(EIG_FLOOR).sqrt().sum()
    value = -top / gram.diagonal().sum().sqrt()
    return torch.where(ok, value, torch.full_like(value, float("nan")))
