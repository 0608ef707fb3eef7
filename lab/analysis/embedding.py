"""Representation diversity: one joint PCA + t-SNE of every arm's probe features.

All arms' (n, H) feature matrices are stacked and embedded together, so the panels share one
coordinate system and a spread or a collapse is comparable across arms. Beside the map: the
effective rank of each arm's centred feature matrix and the silhouette score of its points by
label (in the joint PCA space, where distances are not distorted by t-SNE).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from lab.analysis.snapshot import AnalysisError, feature_effective_rank

MIN_POINTS = 4


def joint_embedding(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    seed: int = 0,
    perplexity: float = 30.0,
    *,
    pca_dim: int = 50,
    max_iter: int = 750,
    threads: int | None = 1,
) -> dict:
    """Joint PCA(``pca_dim``) then t-SNE(2) of all arms' features, stacked in dict order.

    ``features``: {arm: (n, H)}, the same n texts for every arm; ``labels``: (n,) ids.
    The perplexity is clipped to (N - 1) / 3 for N stacked points (t-SNE needs 3 x perplexity
    neighbours). Returns {"coords": {arm: (n, 2) float32}, "silhouette": {arm: float | None},
    "eff_rank": {arm: float}, "perplexity": float, "method": "tsne" | "pca"}; silhouette is None
    when the labels do not split the points into 2..n-1 groups. Below ``MIN_POINTS`` stacked
    points the coordinates are the first two principal components ("pca"). The same inputs and
    seed give the same coordinates.

    ``threads``: BLAS/OpenMP threads for PCA and t-SNE (None: the library default). One thread
    keeps the result bit-identical run to run and is several times faster than two on a busy
    shared CPU, where threads wait for each other; a thousand points take a few seconds.
    """
    if not features:
        raise AnalysisError("joint_embedding needs the features of at least one arm")
    labels = np.asarray(labels).reshape(-1)
    mats = {}
    for arm, x in features.items():
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise AnalysisError(f"features of {arm!r} must be (n, H), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise AnalysisError(f"features of {arm!r} have non-finite values")
        mats[arm] = x
    shapes = {x.shape for x in mats.values()}
    if len(shapes) != 1:
        raise AnalysisError(f"every arm needs features of one shape, got {sorted(shapes)}")
    n, h = next(iter(shapes))
    if len(labels) != n:
        raise AnalysisError(f"{n} feature rows per arm but {len(labels)} labels")
    stacked = np.concatenate(list(mats.values()), 0)  # (A * n, H)
    with threadpool_limits(limits=threads):
        return _embed(mats, labels, stacked, seed, perplexity, pca_dim, max_iter)


def _embed(mats, labels, stacked, seed, perplexity, pca_dim, max_iter) -> dict:
    total, h = stacked.shape
    n = len(labels)
    dim = min(pca_dim, total, h)
    if total > 1:
        pca = PCA(n_components=dim, svd_solver="full", random_state=seed)
        reduced = pca.fit_transform(stacked)  # (N, dim)
    else:
        reduced = np.zeros((total, dim), dtype=np.float32)
    perp = float(min(perplexity, (total - 1) / 3.0))
    if total < MIN_POINTS:  # too few points for t-SNE: the first two principal components
        coords = np.zeros((total, 2), dtype=np.float32)
        coords[:, : min(2, dim)] = reduced[:, :2]
        method = "pca"
    else:
        tsne = TSNE(
            n_components=2,
            perplexity=perp,
            init="pca",
            learning_rate="auto",
            max_iter=max(250, max_iter),
            random_state=seed,
        )
        coords = tsne.fit_transform(reduced).astype(np.float32)  # (N, 2)
        method = "tsne"
    out: dict = {
        "coords": {},
        "silhouette": {},
        "eff_rank": {},
        "perplexity": perp,
        "method": method,
    }
    groups = len(np.unique(labels))
    for k, arm in enumerate(mats):
        rows = slice(k * n, (k + 1) * n)
        out["coords"][arm] = coords[rows]
        sil = None
        if 2 <= groups <= n - 1:
            sil = float(silhouette_score(reduced[rows], labels, random_state=seed))
        out["silhouette"][arm] = sil
        out["eff_rank"][arm] = feature_effective_rank(mats[arm])
    return out
