"""Task datasets: shipped sets, uploads, hub ids, the noise and imbalance knobs, task metrics.

The public API: ``load_task_data``, ``list_datasets``, ``validate_upload``, ``evaluate_task``
and the ``TaskData`` they share; ``sequence_logprobs`` and ``predict_labels`` are the scoring
primitives the bias probes reuse.
"""

from .arithmetic import parse_final_number
from .loading import DATASETS_DIR, TaskData, list_datasets, load_task_data, shipped_names
from .logprobs import score_responses, sequence_logprobs, shared_prefix_logprobs
from .metrics import evaluate_task, predict_labels
from .uploads import validate_upload

__all__ = [
    "DATASETS_DIR",
    "TaskData",
    "evaluate_task",
    "list_datasets",
    "load_task_data",
    "parse_final_number",
    "predict_labels",
    "score_responses",
    "sequence_logprobs",
    "shared_prefix_logprobs",
    "shipped_names",
    "validate_upload",
]
