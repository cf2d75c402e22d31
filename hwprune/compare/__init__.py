"""``hwprune compare``: every search agent at every budget on one device, one table, one fine-tune.

config (the matrix and the shared job setting) -> matrix (which cells, in what order, pure) ->
runner (the table once, each cell a prune job, failures recorded) -> results / plot / report
(``results.csv``, ``results.json``, ``pareto.png``, ``report.md``). Sits on top of the job;
nothing in hwprune imports it but the command.
"""

from __future__ import annotations

from pathlib import Path

from hwprune.compare.config import DEFAULT_AGENTS, DEFAULT_TWINS, CompareConfig, cell_dir
from hwprune.compare.matrix import Cell, plan_cells
from hwprune.compare.output import write_outputs
from hwprune.compare.runner import CellOutcome, outcomes_of, resume_compare, start_compare


def compare(cfg: CompareConfig) -> Path:
    """Run a new compare into ``cfg.out``; the path of its ``report.md``."""
    start_compare(cfg)
    return write_outputs(cfg.out)


def resume(out: str | Path) -> Path:
    """Continue the compare in ``out`` (finished and failed cells are not run again)."""
    resume_compare(out)
    return write_outputs(out)


__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_TWINS",
    "Cell",
    "CellOutcome",
    "CompareConfig",
    "cell_dir",
    "compare",
    "outcomes_of",
    "plan_cells",
    "resume",
    "write_outputs",
]
