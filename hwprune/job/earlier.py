"""What a run reads of earlier searches: a recorded try as the search result it kept, and the path a
finished NetAdapt run walked, which another run at another budget may continue (``--continue-from``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.agents import SearchResult
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import read_json
from hwprune.job.report import REPORT_KIND, REPORT_SCHEMA
from hwprune.pruning import PruningPlan

CONTINUES_PATH = ("netadapt",)
"""Agents whose search is one path through ever smaller plans: a run at one budget walks a prefix of
the path to a tighter one (the NetAdapt paper's "family of simplified networks"), so a run can start
where another stopped."""


def as_result(done: dict[str, Any]) -> SearchResult:
    """A recorded try as the search result it kept: what the next try's agent may continue from."""
    return SearchResult(
        PruningPlan.from_dict(done["plan"]),
        done["history"],
        done["cost"],
        lineage=tuple(PruningPlan.from_dict(p) for p in done.get("lineage", ())),
    )


def path_of_run(run: str | Path) -> SearchResult:
    """The search path of the try a finished run took (its ``report.json``): what ``--continue-from`` continues."""
    report = Path(run) / "report.json"
    if not report.is_file():
        raise ConfigError(f"--continue-from {run}: no finished run there (no report.json); give a run that finished")
    search = read_json(report, REPORT_KIND, REPORT_SCHEMA).get("search") or {}
    try:
        return as_result(search["tries"][search["taken_try"] - 1])
    except (KeyError, IndexError, TypeError):
        raise ArtifactError(
            f"--continue-from {run}: that run has no search path (it ran --ratio or --plan, or its report is damaged); "
            "give a run that searched a --budget"
        ) from None
