"""Sets of runs: a sweep spec crossed into cells, run one after another or on Ray, and the
cells' runs pooled into verdicts across seeds."""
