"""The run directory on disk.

- ``store``       atomic writes, run ids, listing and reading runs (``load_run``)
- ``events``      the declared schema of ``events.jsonl``
- ``provenance``  where a run was made: code version, libraries, device, CPU
- ``status``      the run and job states, and the status of a run directory read from disk
"""
