"""Training jobs: starting, queueing, watching and stopping training in worker processes.

- ``manager``  the app's one :class:`JobManager` (one worker at a time, a FIFO queue, stop/kill)
- ``job``      one job: its worker process, its command line and its log
- ``status``   job states and the status of a run directory, read from disk only
- ``checks``   preflight checks before a worker starts, and a measured time per step
"""

from lab.jobs.checks import (
    PROJECT_ROOT,
    estimate_run,
    hub_model_check,
    measure_step_time,
    preflight,
)
from lab.jobs.job import Job
from lab.jobs.manager import JobManager, get_manager
from lab.runs.status import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    LOG_NAME,
    PAUSED,
    QUEUED,
    RUNNING,
    STOPPED,
    JobError,
    arm_progress,
    log_tail,
    run_status,
)

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINISHED",
    "LOG_NAME",
    "PAUSED",
    "PROJECT_ROOT",
    "QUEUED",
    "RUNNING",
    "STOPPED",
    "Job",
    "JobError",
    "JobManager",
    "arm_progress",
    "get_manager",
    "hub_model_check",
    "log_tail",
    "measure_step_time",
    "estimate_run",
    "preflight",
    "run_status",
]
