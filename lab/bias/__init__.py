"""Bias probes and their scores, each with n and a 95% bootstrap confidence interval.

``probes`` reads the probe sets in ``assets/probes/`` (stereotype pairs in the CrowS-Pairs
format, occupations and pronoun templates, group words, prompt pairs); ``scores`` turns model
log-likelihoods and predictions into scores. ``evaluate_bias`` runs them all for a task.
``benchmarks`` scores the published benchmarks (``formats`` reads their files) through
``harness``, their log-likelihoods as lm-evaluation-harness computes them.
"""

from lab.datasets.probes import (
    PROBES_DIR,
    counterfactual_prompt_pairs,
    list_probe_sets,
    load_group_words,
    load_occupations,
    load_pairs,
    load_templates,
    swap_group_words,
)

from .scores import (
    bootstrap_ci,
    evaluate_bias,
    flip_scores,
    pronoun_logodds,
    pronoun_scores,
    sentence_logprob,
    stereo_scores,
)

__all__ = [
    "PROBES_DIR",
    "bootstrap_ci",
    "counterfactual_prompt_pairs",
    "evaluate_bias",
    "flip_scores",
    "list_probe_sets",
    "load_group_words",
    "load_occupations",
    "load_pairs",
    "load_templates",
    "pronoun_logodds",
    "pronoun_scores",
    "sentence_logprob",
    "stereo_scores",
    "swap_group_words",
]
