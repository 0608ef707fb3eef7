"""Evidence: per-item tables, paired statistics and the verdicts built from them.

- ``items``     the per-item records of every eval metric, read back as paired tables
- ``stats``     paired differences with intervals, p-values, Holm and detectable differences
- ``verdicts``  one sentence per metric and comparison (``python -m lab verdicts``)
"""
