"""Orchestration: the pruning job on top of agents, latency, pruning and profilers (nothing below imports it).

config (what a run is) -> measure (load, time, judge) -> tries / targets / policy (what the budget
loop decides, pure) -> search_try (one try's search with densify) -> budgeted (the thin loop that
executes the policy) -> run (the whole job and its report).
"""

from hwprune.job.config import JobConfig, finished_report, resume_config
from hwprune.job.run import run_job

__all__ = ["JobConfig", "finished_report", "resume_config", "run_job"]
