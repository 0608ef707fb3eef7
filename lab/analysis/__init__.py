"""Analysis numbers (never figures): spectra, effective rank, pooled hidden states, joint t-SNE,
drift from the base model, and the snapshot files under ``runs/<id>/analysis/``.

- ``spectra``    effective/stable rank, top-k energy, adapter update spectra, intruder dimensions
- ``drift``      per-position KL(base || arm), and the moments it can be measured from
- ``reference``  the base model's reference for the arms' drift (kept moments or a base forward)
- ``request``    what a snapshot measures: the probe texts, tokenized and batched
- ``snapshot``   one arm at one eval point on the probe texts (features, output spectrum, drift)
- ``embedding``  joint PCA + t-SNE of every arm's features, silhouette and effective rank
- ``store``      saving and loading snapshots, probe texts and embeddings
"""

from lab.analysis.drift import AnalysisError, kl_from_log_probs, token_kl
from lab.analysis.embedding import joint_embedding
from lab.analysis.reference import BaseReference, DriftBase
from lab.analysis.request import SnapshotRequest
from lab.analysis.snapshot import (
    AdapterSpec,
    Snapshot,
    feature_effective_rank,
    pooled_features,
    snapshot,
)
from lab.analysis.spectra import (
    adapter_update_spectra,
    capture_initial_adapter,
    effective_rank,
    intruder_dimensions,
    low_rank_singular_values,
    model_intruders,
    output_spectrum,
    stable_rank,
    topk_energy,
)
from lab.analysis.store import (
    analysis_steps,
    load_embedding,
    load_probe_texts,
    load_snapshots,
    load_snapshots_with_base,
    save_embedding,
    save_probe_texts,
    save_snapshot,
    top_drifted,
)

__all__ = [
    "AdapterSpec",
    "AnalysisError",
    "BaseReference",
    "DriftBase",
    "Snapshot",
    "SnapshotRequest",
    "adapter_update_spectra",
    "analysis_steps",
    "capture_initial_adapter",
    "effective_rank",
    "feature_effective_rank",
    "intruder_dimensions",
    "joint_embedding",
    "kl_from_log_probs",
    "load_embedding",
    "load_probe_texts",
    "load_snapshots",
    "load_snapshots_with_base",
    "low_rank_singular_values",
    "model_intruders",
    "output_spectrum",
    "pooled_features",
    "save_embedding",
    "save_probe_texts",
    "save_snapshot",
    "snapshot",
    "stable_rank",
    "token_kl",
    "top_drifted",
    "topk_energy",
]
