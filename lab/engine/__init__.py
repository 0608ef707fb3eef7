"""The run lifecycle: a config in, a run directory and a stream of events out.

- ``trainer``      ``run(cfg, out)``: prepare, train steps, evaluate, finish (a generator of events)
- ``steps``        one training step of one arm, and of one seed's arms together
- ``forward``      one micro-batch's forward pass, the teacher pass and the fused head losses
- ``adapters``     the arms as adapters on one base model (LoRA and PiSSA inits)
- ``tuning``       ``lr_mode: tuned``: the short learning-rate sweep
- ``dist``         data parallelism under ``accelerate launch``
- ``evaluation``   eval points: task metric, bias probes, analysis snapshots, per-item records
- ``checkpoint``   checkpoints (no pickles) and resuming from them
- ``run_writer``   creates or reopens a run directory and writes what a run writes
- ``completions``  every saved arm's output for one prompt (the Compare tab)
"""
