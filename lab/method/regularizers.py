"""The three BA-LoRA regularizers (arXiv 2408.04556) as pure tensor functions.

- ``consistency_loss``: T^2 * KL(teacher || student) on temperature-softened distributions.
- ``diversity_loss`` (NLG): minus the entropy of the renormalized top-K distribution.
- ``covariance_diversity_loss`` (NLU): squared off-diagonal covariance of the batch logits.
- ``svd_loss``: minus the share of the top-k singular values in the matrix norm.

Every term is computed in float32 whatever the input dtype, and every term is a loss: it is
minimised. An undefined or constant term raises :class:`DegenerateTermError`, which the training
path records as inactive with the reason. Any other failure (an SVD that does not converge, a
non-finite value) propagates; nothing is ever replaced by 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

EXACT_SVD_MAX_DIM = 64  # "auto": exact SVD up to this min(shape) ...
EXACT_SVD_MAX_ELEMS = 1 << 21  # ... or this many entries; randomized above (e.g. 512 x 49152)
RESCALE_ABOVE = 1e15  # svd term: a matrix whose largest entry is above this is divided by it


class DegenerateTermError(ValueError):
    """A term that is undefined or constant (zero gradient) for this input."""


def _rows(x: torch.Tensor, mask: torch.Tensor | None, what: str) -> torch.Tensor:
    """Select the used rows as float32: (B, T, V) + (B, T) mask -> (M, V); (N, D) -> (N, D)."""
    if x.dim() not in (2, 3):
        raise ValueError(f"{what} must be (N, D) or (B, T, V), got shape {tuple(x.shape)}")
    if mask is None:
        rows = x.reshape(-1, x.shape[-1])  # (B*T, V) or (N, D)
    else:
        if mask.dtype != torch.bool:
            raise ValueError(f"the mask must be a bool tensor, got {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"the mask has shape {tuple(mask.shape)} but {what} has {tuple(x.shape)}; "
                f"it must be {tuple(x.shape[:-1])}"
            )
        rows = x[mask]  # (M, V)
    if rows.shape[0] == 0:
        raise ValueError(f"the mask selects no position of {what}")
    return rows.float()


def _plogp(logp: torch.Tensor) -> torch.Tensor:
    """p * log p from log-probabilities, 0 where p == 0 (log p = -inf), with finite gradients."""
    p = logp.exp()
    return p * torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))


def consistency_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 2.0,
) -> torch.Tensor:
    """T^2 * mean over used rows of KL(softmax(z_t / T) || softmax(z_s / T)) (the paper's L_CR).

    Non-negative; 0 when the student's logits equal the teacher's. Minimising it keeps the
    student close to the pre-trained model. The teacher is detached. Both sides go through
    log_softmax (never log of softmax), so saturated or -inf logits give finite values.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = _rows(student_logits, mask, "student logits")  # (M, V)
    t = _rows(teacher_logits.detach(), mask, "teacher logits")  # (M, V)
    return _ChunkedKL.apply(s, t, float(temperature))


def row_chunks(m: int, size: int) -> Iterator[slice]:
    """The row slices of every loop over row chunks: ``size`` rows each (the last one fewer),
    covering rows 0 .. m - 1 in order. Only the (c, V) intermediates of one chunk exist at a
    time, so ``size`` bounds the loop's peak memory."""
    if size < 1:
        raise ValueError(f"a chunk must have at least 1 row, got {size}")
    for start in range(0, m, size):
        yield slice(start, min(start + size, m))


def kl_rows(
    log_s: torch.Tensor, log_t: torch.Tensor, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk of the consistency term, shared by every loop over row chunks.

    ``log_s``, ``log_t``: (c, V) float32 log_softmax(z / T) of the student and the teacher.
    Returns the sum over the rows of KL(p_t || p_s) and, when ``grad``, p_s - p_t (c, V),
    from which d (T^2 KL) / dz_s = T (p_s - p_t); it is formed in place in ``log_s``.
    """
    p_t = log_t.exp()
    # KL = sum p_t (log p_t - log p_s); entries with p_t == 0 contribute exactly 0.
    diff = torch.where(p_t > 0, log_t - log_s, 0.0)
    kl = (p_t * diff).sum()
    del diff
    return kl, (log_s.exp_().sub_(p_t) if grad else None)


class _ChunkedKL(torch.autograd.Function):
    """T^2 * mean_rows KL(softmax(t/T) || softmax(s/T)), computed over row chunks.

    Only the gradient T (softmax(s/T) - softmax(t/T)) / M is kept for the backward pass: one
    (M, V) buffer instead of the several full-vocabulary intermediates autograd would save.
    """

    CHUNK_ELEMS = 1 << 22  # about 16 MB of float32 per intermediate

    @staticmethod
    def forward(ctx, s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
        m, v = s.shape
        total = s.new_zeros(())
        grad = torch.empty_like(s) if ctx.needs_input_grad[0] else None
        for rows in row_chunks(m, max(1, _ChunkedKL.CHUNK_ELEMS // max(1, v))):
            log_s = F.log_softmax(s[rows] / temperature, dim=-1)
            log_t = F.log_softmax(t[rows] / temperature, dim=-1)
            kl, dz = kl_rows(log_s, log_t, grad is not None)
            total = total + kl
            if grad is not None:
                grad[rows] = dz * (temperature / m)
        ctx.save_for_backward(grad)
        return total * (temperature**2 / m)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


def diversity_loss(
    student_logits: torch.Tensor, mask: torch.Tensor | None = None, top_k: int = 20
) -> torch.Tensor:
    """Minus the mean entropy of softmax over the top-K logits of each used row (NLG L_DR).

    Returns -H, in [-ln K, 0]: uniform top-K logits give -ln K, a peaked row gives more.
    Minimising it raises the diversity of the next-token distribution. top_k >= V uses all V.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    z = _rows(student_logits, mask, "student logits")  # (M, V)
    k = min(top_k, z.shape[-1])
    top = z.topk(k, dim=-1).values  # (M, K)
    logp = F.log_softmax(top, dim=-1)
    entropy = -_plogp(logp).sum(dim=-1)  # (M,)
    return -entropy.mean()


def covariance_diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """(1/D) * sum_{i != j} C_ij^2, C the covariance of the batch-centred (N, D) logits / (N-1).

    Non-negative (the NLU L_DR); minimising it decorrelates the class logits across the batch.
    N < 2 (covariance undefined) or D < 2 (no off-diagonal entry) raises DegenerateTermError.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, D), got shape {tuple(logits.shape)}")
    n, d = logits.shape
    if n < 2:
        raise DegenerateTermError(f"covariance needs a batch of 2 or more rows, got N={n}")
    if d < 2:
        raise DegenerateTermError(f"covariance has no off-diagonal entry with D={d} column")
    z = logits.float()
    zc = z - z.mean(dim=0, keepdim=True)  # (N, D)
    cov = zc.T @ zc / (n - 1)  # (D, D)
    off = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off / d


def top_singular_values(
    matrix: torch.Tensor, q: int, niter: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The q largest singular values of a 2-D matrix by a randomized range finder, (q,) float32.

    Halko et al.: Q spans A @ Omega (Omega Gaussian, q columns) refined by ``niter`` power
    iterations; the values are those of Q^T A. Q is built without gradient, so gradients flow
    through svdvals(Q^T A) only (finite even for repeated singular values). When
    q >= min(shape) all singular values are computed exactly. ``generator`` None uses a fresh
    generator seeded 0, so the global random state is never consumed.
    """
    if matrix.dim() != 2:
        raise ValueError(f"the matrix must be 2-D, got shape {tuple(matrix.shape)}")
    if q < 1:
        raise ValueError(f"q must be at least 1, got {q}")
    a = matrix.float()
    if a.shape[0] > a.shape[1]:
        a = a.T  # (m, n) with m <= n: the basis lives in the smaller space
    m, n = a.shape
    if q >= m:
        return torch.linalg.svdvals(a)
    if generator is None:
        generator = torch.Generator(device=a.device).manual_seed(0)
    with torch.no_grad():
        omega = torch.randn(n, q, generator=generator, device=a.device)  # (n, q)
        basis = torch.linalg.qr(a @ omega).Q  # (m, q)
        for _ in range(niter):
            back = torch.linalg.qr(a.T @ basis).Q  # (n, q)
            basis = torch.linalg.qr(a @ back).Q  # (m, q)
    return torch.linalg.svdvals(basis.T @ a)  # (q,)


def svd_loss(
    matrix: torch.Tensor,
    k: int,
    norm: str = "frobenius",
    method: str = "auto",
    oversample: int = 10,
    niter: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Minus sum_{i<=k} s_i(Z) / ||Z|| (the paper's L_SVD), ||.|| Frobenius or nuclear.

    In [-sqrt(k), 0) for the Frobenius norm and [-1, 0) for the nuclear norm; minimising it
    concentrates the matrix on its top-k directions. k >= min(shape) and the zero matrix raise
    DegenerateTermError. method "exact" uses all singular values; "randomized" keeps
    q = k + oversample of them (more than k, so the ratio is not a constant) with the
    Frobenius norm computed exactly from the matrix; "auto" is exact up to min(shape) = 64 or
    2M entries (and always for the nuclear norm), randomized above.
    Flat spectra make the randomized value slightly smaller in magnitude than the exact one.
    """
    if matrix.dim() != 2:
        raise ValueError(f"the svd term needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    if norm not in ("frobenius", "nuclear"):
        raise ValueError(f"norm must be 'frobenius' or 'nuclear', got {norm!r}")
    if method not in ("auto", "exact", "randomized"):
        raise ValueError(f"method must be 'auto', 'exact' or 'randomized', got {method!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    small = min(matrix.shape)
    if k >= small:
        raise DegenerateTermError(
            f"svd_k={k} >= min{tuple(matrix.shape)}={small}: the top-k share is constant"
        )
    a = matrix.float()
    # The ratio is scale-free: dividing huge matrices by the (detached) largest entry avoids
    # overflow in the norm and leaves both the value and the gradient unchanged.
    scale = a.detach().abs().max()
    largest = scale.item()  # one host sync for both checks
    if not math.isfinite(largest):
        raise FloatingPointError("the svd term's matrix has non-finite entries")
    if largest == 0:
        raise DegenerateTermError("the svd term's matrix is all zeros (norm 0)")
    if largest > RESCALE_ABOVE:  # only then: a rescaled copy costs time and memory
        a = a / scale
    if method == "auto":
        exact = norm == "nuclear" or small <= EXACT_SVD_MAX_DIM or a.numel() <= EXACT_SVD_MAX_ELEMS
        method = "exact" if exact else "randomized"
    if method == "randomized":
        if norm == "nuclear":
            raise ValueError("the nuclear norm needs all singular values: use method='exact'")
        s = top_singular_values(a, k + oversample, niter=niter, generator=generator)
    else:
        s = torch.linalg.svdvals(a)  # (min(shape),), descending
    denom = torch.linalg.matrix_norm(a) if norm == "frobenius" else s.sum()
    return -s[:k].sum() / denom
