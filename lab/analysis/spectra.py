"""Singular value spectra: summary numbers, adapter updates, output matrices, intruder dimensions.

All SVDs run in float32 (float64 for the small core matrices), whatever the model dtype.

- ``effective_rank(s)``  exp of the entropy of p = s / sum(s) (Roy & Vetterli, 2007);
- ``stable_rank(s)``     sum s_i^2 / max s_i^2;
- ``topk_energy(s, k)``  share of the squared singular values in the top k;
- ``adapter_update_spectra``  singular values of each LoRA module's update, s (B A) for plain
  LoRA, or s (B A - B0 A0) for PiSSA-initialized arms, from thin QRs of the factors (rank <= 2r);
- ``intruder_dimensions``  how many of the top singular vectors of a tuned weight have a maximum
  cosine similarity below a threshold with every singular vector of the base weight
  (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence", 2024).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def _as_numpy(s: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(s, Tensor):
        s = s.detach().to("cpu", torch.float64).numpy()
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("an empty list of singular values has no rank")
    if not np.all(np.isfinite(s)):
        raise ValueError("singular values must be finite")
    if np.any(s < 0):
        raise ValueError("singular values must be non-negative")
    return s


def effective_rank(s: np.ndarray | Tensor) -> float:
    """exp(H(p)), p = s / sum(s): n for n equal values, 1 for a single non-zero value."""
    s = _as_numpy(s)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def stable_rank(s: np.ndarray | Tensor) -> float:
    """sum s_i^2 / max s_i^2 (0 for an all-zero spectrum)."""
    s = _as_numpy(s)
    top = s.max()
    return 0.0 if top == 0 else float((s**2).sum() / top**2)


def topk_energy(s: np.ndarray | Tensor, k: int = 10) -> float:
    """sum_{i<=k} s_i^2 / sum s_i^2, with s sorted in decreasing order (0 for all zeros)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    s = np.sort(_as_numpy(s))[::-1]
    total = (s**2).sum()
    return 0.0 if total == 0 else float((s[:k] ** 2).sum() / total)


NUMERICAL_ZERO = 1e-6  # singular values below this share of the largest are reported as 0


def gram_singular_values(z: Tensor, chunk: int = 8192) -> Tensor:
    """Singular values of a wide or tall matrix z (m, n) from the float64 Gram matrix of its
    short side: s = sqrt(eig(Z Z^T)). Many times faster than an SVD of a (rows, 49k) logits
    matrix; float64 keeps values down to ~1e-7 of the largest. Decreasing, float64, on the CPU.
    """
    if z.shape[0] > z.shape[1]:
        z = z.T
    m, n = z.shape
    gram = torch.zeros((m, m), dtype=torch.float64, device=z.device)  # (m, m), m = short side
    for start in range(0, n, chunk):
        block = z[:, start : start + chunk].to(torch.float64)  # (m, c)
        gram += block @ block.T
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0)  # increasing
    return eig.flip(0).sqrt().cpu()


def output_spectrum(logits_rows: Tensor, max_values: int | None = 64) -> np.ndarray:
    """Singular values of a (rows, V) output matrix, normalized by the largest: s / s[0].

    Returns at most ``max_values`` values (all when None), float32, decreasing; values under
    ``NUMERICAL_ZERO`` of the largest (float32 noise of a rank-deficient matrix) are 0; all
    zeros for an all-zero matrix.
    """
    if logits_rows.ndim != 2 or min(logits_rows.shape) == 0:
        raise ValueError(
            f"expected a non-empty (rows, V) matrix, got shape {tuple(logits_rows.shape)}"
        )
    z = logits_rows.detach()
    if not torch.isfinite(z).all():
        raise ValueError("the output matrix has non-finite entries")
    s = gram_singular_values(z).numpy()  # (min(R, V),)
    s[s < NUMERICAL_ZERO * s[0]] = 0.0  # below float32 resolution of the logits: rank deficiency
    if max_values is not None:
        s = s[:max_values]
    top = s[0]
    return (s / top if top > 0 else s).astype(np.float32)


def lora_modules(
    model: torch.nn.Module, adapter_name: str = "default"
) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name, module) of every PEFT LoRA layer that holds ``adapter_name``."""
    for name, module in model.named_modules():
        a = getattr(module, "lora_A", None)
        e = getattr(module, "lora_embedding_A", None)
        if (a is not None and adapter_name in a) or (e is not None and adapter_name in e):
            yield name, module


def lora_factors(
    module: torch.nn.Module, adapter_name: str = "default"
) -> tuple[Tensor, Tensor, float]:
    """(A (r, in), B (out, r), scaling) of one LoRA layer, detached, float32."""
    if adapter_name in getattr(module, "lora_A", {}):
        a = module.lora_A[adapter_name].weight
        b = module.lora_B[adapter_name].weight
    else:
        a = module.lora_embedding_A[adapter_name]
        b = module.lora_embedding_B[adapter_name]
    a = a.detach().float().reshape(a.shape[0], -1)  # conv weights flattened to (r, in * k * k)
    b = b.detach().float().reshape(b.shape[0], -1)  # (out, r)
    return a, b, float(module.scaling[adapter_name])


def capture_initial_adapter(
    model: torch.nn.Module, adapter_name: str = "default"
) -> dict[str, tuple[Tensor, Tensor]]:
    """{module name: (A0, B0)} copies of the adapter factors now (call right after init)."""
    out = {}
    for name, module in lora_modules(model, adapter_name):
        a, b, _ = lora_factors(module, adapter_name)
        out[name] = (a.clone(), b.clone())
    return out


def low_rank_singular_values(left: Tensor, right: Tensor) -> np.ndarray:
    """Singular values of left @ right.T, left (m, k), right (n, k), through two thin QRs.

    left = Q_l R_l, right = Q_r R_r  =>  left right^T = Q_l (R_l R_r^T) Q_r^T, whose singular
    values are those of the k x k core. Returns min(m, n, k) values, float64, decreasing.
    """
    r_left = torch.linalg.qr(left.double(), mode="reduced").R  # (min(m, k), k)
    r_right = torch.linalg.qr(right.double(), mode="reduced").R  # (min(n, k), k)
    core = r_left @ r_right.T  # small: at most k x k
    s = torch.linalg.svdvals(core).numpy()
    return s[: min(left.shape[0], right.shape[0], left.shape[1])]


def update_factors(
    module: torch.nn.Module,
    adapter_name: str = "default",
    initial: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """(left (out, k), right (in, k)) with s (B A - B0 A0) = left @ right.T; k = r or 2r."""
    a, b, scale = lora_factors(module, adapter_name)
    if initial is None:
        return scale * b, a.T
    a0, b0 = (t.detach().float().to(a.device).reshape(t.shape[0], -1) for t in initial)
    left = torch.cat([b, -b0], dim=1) * scale  # (out, 2r)
    right = torch.cat([a, a0], dim=0).T  # (in, 2r)
    return left, right


def adapter_update_spectra(
    model: torch.nn.Module,
    initial: dict[str, tuple[Tensor, Tensor]] | None = None,
    adapter_name: str = "default",
) -> dict[str, np.ndarray]:
    """{LoRA module name: singular values of its update}, float32, decreasing.

    Plain LoRA (``initial`` None): s * B A, at most r non-zero values. PiSSA-initialized arms
    (``initial`` = {module name: (A0, B0)} captured at init): s * (B A - B0 A0), the change from
    the initial adapter, at most 2r non-zero values. Never forms the d x d update.
    """
    out = {}
    with torch.no_grad():
        for name, module in lora_modules(model, adapter_name):
            init = None
            if initial is not None:
                if name not in initial:
                    raise KeyError(f"no initial adapter factors for module {name!r}")
                init = initial[name]
            left, right = update_factors(module, adapter_name, init)
            out[name] = low_rank_singular_values(left.cpu(), right.cpu()).astype(np.float32)
    return out


def _left_vectors(w: Tensor) -> Tensor:
    return torch.linalg.svd(w.float(), full_matrices=False).U  # (out, min(out, in))


def intruder_dimensions(
    base_weight: Tensor,
    tuned_weight: Tensor,
    top: int = 10,
    threshold: float = 0.5,
) -> int:
    """Count of the ``top`` leading left singular vectors of ``tuned_weight`` whose largest
    |cosine| with any left singular vector of ``base_weight`` is below ``threshold``."""
    if base_weight.shape != tuned_weight.shape or base_weight.ndim != 2:
        raise ValueError(
            f"expected two matrices of one shape, got {tuple(base_weight.shape)} and {tuple(tuned_weight.shape)}"
        )
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    u_tuned = _left_vectors(tuned_weight)[:, :top]  # (out, top)
    return _count_intruders(u_tuned, _left_vectors(base_weight), threshold)


def _count_intruders(u_tuned: Tensor, u_base: Tensor, threshold: float) -> int:
    """How many columns of ``u_tuned`` have a largest |cosine| with ``u_base``'s below it."""
    best = (u_tuned.T @ u_base.to(u_tuned.device)).abs().max(dim=1).values  # (top,)
    return int((best < threshold).sum().item())


def _oriented_base(module: torch.nn.Module, shape: torch.Size) -> Tensor | None:
    """The layer's stored base weight as an (out, in) matrix, or None when it has no such one."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else None
    w = getattr(base, "weight", None)
    if w is None or w.ndim != 2:
        return None
    w = w.detach().float()
    if w.shape == shape:
        return w
    if w.T.shape == shape:
        return w.T
    return None


def top_left_vectors(w: Tensor, k: int, start: Tensor, niter: int = 4) -> Tensor:
    """The ``k`` leading left singular vectors of w (out, in) by subspace iteration from the
    columns of ``start`` (in, m), m > k: Q <- orth(W W^T Q), then an SVD of the small Q^T W.

    Accurate to the degree that the spectrum separates s_k from s_{m+1}; ``start`` should span
    the likely leading right vectors (the base weight's, plus the adapter's row space).
    """
    q = torch.linalg.qr(w @ start, mode="reduced").Q  # (out, m)
    for _ in range(niter):
        q = torch.linalg.qr(w @ (w.T @ q), mode="reduced").Q
    u_small = torch.linalg.svd(q.T @ w, full_matrices=False).U  # (m, m)
    return q @ u_small[:, :k]  # (out, k)


def _fingerprint(w: Tensor) -> tuple:
    w = w.double()
    return (
        tuple(w.shape),
        round(float(w.sum()), 6),
        round(float(w.abs().sum()), 6),
        round(float(w[0].sum()), 6),
    )


def model_intruders(
    model: torch.nn.Module,
    initial: dict[str, tuple[Tensor, Tensor]] | None = None,
    adapter_name: str = "default",
    *,
    top: int = 10,
    threshold: float = 0.5,
    max_dim: int = 4096,
    cache: dict | None = None,
    exact: bool = False,
    base_is_pretrained: bool = False,
) -> dict[str, int]:
    """{LoRA module name: intruder dimensions of base + update against the pre-trained weight}.

    The pre-trained weight is the stored base weight, plus s B0 A0 for PiSSA-initialized arms
    (PEFT stores the residual W - s B0 A0); with ``base_is_pretrained`` the stored weight is W
    and the tuned weight is W - s B0 A0 + s B A (the frozen initial adapter). The base weight needs one full SVD (all its left
    singular vectors); ``cache`` (a dict the caller keeps for the run) holds it between calls,
    keyed by module name and a fingerprint of the weight. The tuned weight's top vectors come
    from :func:`top_left_vectors` started from the base's leading right vectors and the
    adapter's row space (``exact=True``: a full SVD instead). Modules with a side over
    ``max_dim`` are skipped.
    """
    out = {}
    oversample = 10
    with torch.no_grad():
        for name, module in lora_modules(model, adapter_name):
            init = None if initial is None else initial.get(name)
            if initial is not None and init is None:
                raise KeyError(f"no initial adapter factors for module {name!r}")
            left, right = update_factors(module, adapter_name, None)  # s B (out, r), A^T (in, r)
            shape = torch.Size((left.shape[0], right.shape[0]))
            if max(shape) > max_dim:
                continue
            stored = _oriented_base(module, shape)
            if stored is None:
                continue
            base = stored
            tuned = stored + left @ right.T  # (out, in)
            if init is not None:
                a0, b0 = (
                    t.detach().float().to(stored.device).reshape(t.shape[0], -1) for t in init
                )
                init_delta = float(module.scaling[adapter_name]) * (b0 @ a0)  # (out, in)
                if base_is_pretrained:
                    tuned = tuned - init_delta
                else:
                    base = stored + init_delta  # W
            key = (name, *_fingerprint(base))
            entry = None if cache is None else cache.get(key)
            if entry is None:
                svd = torch.linalg.svd(base, full_matrices=False)
                entry = (svd.U, svd.Vh[: top + oversample])  # (out, d), (top + p, in)
                if cache is not None:
                    cache[key] = entry
            u_base, vh_top = entry
            m = min(shape)
            if exact or top + oversample + right.shape[1] >= m:
                u_tuned = _left_vectors(tuned)[:, :top]
            else:
                start = torch.cat([vh_top.T, right], dim=1)  # (in, top + p + r)
                u_tuned = top_left_vectors(tuned, top, start)
            out[name] = _count_intruders(u_tuned, u_base, threshold)
    return out
