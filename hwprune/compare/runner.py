"""Run a compare: one latency table, then every cell of the matrix through the prune job.

Each cell is the real ``hwprune prune`` job in its own directory under ``OUT/cells``, so it
resumes as a prune run does; a finished cell (its ``report.json``) is read back, never rerun.
A cell the job refuses (an impossible budget, no plan measured under it) is recorded in
``compare.json`` with its one-line reason and the matrix goes on; a LeGR cell whose ranking
was never learned fails the same way, while a NetAdapt cell whose path source failed searches from
the full model. Progress is one line per cell: which of how many, and an ETA from the cells this
session has run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from hwprune.compare.config import CompareConfig, cell_dir, load_state, save_state
from hwprune.compare.matrix import Cell
from hwprune.errors import HwpruneError
from hwprune.job import finished_report, resume_config, run_job
from hwprune.job.budgeted import latency_table
from hwprune.job.config import JobConfig, check_fresh_out
from hwprune.job.measure import Loaded, load_inputs
from hwprune.options import check_out_location

log = logging.getLogger(__name__)


@dataclass
class CellOutcome:
    cell: Cell
    run: Path
    status: str  # "done" (report.json written), "failed"
    reason: str | None = None
    ran: bool = False  # run (or continued) in this session, rather than read back


def absolute(cfg: CompareConfig) -> CompareConfig:
    """Paths recorded absolute, so ``--resume`` works from any working directory."""
    job = dict(cfg.job)
    for name in ("lut", "data_dir"):
        if job.get(name):
            job[name] = os.path.abspath(job[name])
    return replace(cfg, checkpoint=os.path.abspath(cfg.checkpoint), job=job)


def start_compare(cfg: CompareConfig) -> list[CellOutcome]:
    """A new compare into ``cfg.out`` (missing or empty)."""
    cfg = absolute(cfg)
    cfg.validate()
    check_fresh_out(cfg.out)
    probe, loaded = _probe(cfg)
    if cfg.job.get("lut"):  # a table that does not fit is refused before the directory exists
        latency_table(probe, loaded, Path(cfg.out), resume=False)
    save_state(cfg, {})
    _profile(cfg, probe, loaded)
    return run_cells(cfg, {}, loaded)


def resume_compare(out: str | Path) -> list[CellOutcome]:
    """Continue the compare in ``out``: finished and failed cells are kept, an interrupted one continues."""
    check_out_location(out, "--resume")
    cfg, failed = load_state(out)
    probe, loaded = _probe(cfg)
    _profile(cfg, probe, loaded)
    return run_cells(cfg, failed, loaded)


def _probe(cfg: CompareConfig) -> tuple[JobConfig, Loaded]:
    """The first cell's job with the user's table (or none), and its inputs: loading them refuses a bad
    checkpoint or dataset once, for the whole matrix. Every cell then runs on these inputs: the
    deployment options are the compare's, so one load, one export of the unpruned model, one
    measurement of it at the start (every cell at a budget searches toward the same ms) and one
    score of it serve all the cells."""
    probe = replace(cfg.job_config(cfg.cells()[0]), lut=cfg.job.get("lut"))
    return probe, load_inputs(probe)


def _profile(cfg: CompareConfig, probe: JobConfig, loaded: Loaded) -> None:
    """Without ``--lut``, profile the one table every cell reads into the compare directory (an
    interrupted profile continues). The job's own table code makes it, so it is the table a
    ``hwprune prune`` of this setting would make."""
    if not cfg.job.get("lut"):
        out = Path(cfg.out)
        latency_table(probe, loaded, out, resume=(out / "lut.json").is_file())


def run_cells(cfg: CompareConfig, failed: dict[str, str], loaded: Loaded) -> list[CellOutcome]:
    cells = cfg.cells()
    outcomes: list[CellOutcome] = []
    started, ran = time.perf_counter(), 0
    bar = tqdm(total=len(cells), desc="compare", unit="cell", leave=False)
    for i, cell in enumerate(cells, 1):
        run = cell_dir(cfg.out, cell)
        if finished_report(run) is not None:
            outcomes.append(CellOutcome(cell, run, "done"))
        elif cell.name in failed:
            outcomes.append(CellOutcome(cell, run, "failed", failed[cell.name]))
        else:
            eta = _eta(time.perf_counter() - started, ran, len(cells) - i + 1)
            log.info(f"compare: cell {i} of {len(cells)}: {cell.label} ({run}){eta}")
            outcome = run_cell(cfg, cell, outcomes, loaded)
            outcomes.append(outcome)
            ran += 1
            if outcome.status == "failed":
                failed[cell.name] = outcome.reason or "failed"
                save_state(cfg, failed)
                log.info(f"compare: cell {i} of {len(cells)} failed: {outcome.reason}")
        bar.update(1)
    bar.close()
    return outcomes


def _eta(elapsed_s: float, ran: int, left: int) -> str:
    if ran == 0:
        return ""
    return f"; about {tqdm.format_interval(elapsed_s / ran * left)} left for {left} cells"


def run_cell(cfg: CompareConfig, cell: Cell, before: list[CellOutcome], loaded: Loaded) -> CellOutcome:
    """Run (or continue) one cell's prune job; an HwpruneError becomes a failed cell, not an abort."""
    run = cell_dir(cfg.out, cell)
    if cell.ranking_from is not None:
        source = next((o for o in before if o.cell.name == cell.ranking_from), None)
        if source is None or source.status != "done" or not (source.run / "ranking.json").is_file():
            why = source.reason if source is not None and source.reason else "it left no ranking.json"
            return CellOutcome(cell, run, "failed", f"no ranking to threshold: {cell.ranking_from} failed ({why})")
    try:
        if (run / "job.json").is_file():
            job = resume_config(run)
            job.out = str(run)
            run_job(job, resume=True, loaded=loaded)
        else:
            run.parent.mkdir(parents=True, exist_ok=True)
            run_job(_path_checked(cfg.job_config(cell), cell, before), loaded=loaded)
    except HwpruneError as exc:
        return CellOutcome(cell, run, "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__, True)
    return CellOutcome(cell, run, "done", ran=True)


def _path_checked(job: JobConfig, cell: Cell, before: list[CellOutcome]) -> JobConfig:
    """A cell whose path source failed searches from the full model, as a lone ``hwprune prune`` would."""
    if cell.path_from is None or any(o.cell.name == cell.path_from and o.status == "done" for o in before):
        return job
    log.info(f"compare: {cell.path_from} has no finished path to continue; {cell.name} searches from the full model")
    return replace(job, continue_from=None)


def outcomes_of(out: str | Path) -> tuple[CompareConfig, list[CellOutcome]]:
    """What a compare directory holds now, without running anything (for the results and tests)."""
    cfg, failed = load_state(out)
    found: list[CellOutcome] = []
    for cell in cfg.cells():
        run = cell_dir(cfg.out, cell)
        if finished_report(run) is not None:
            found.append(CellOutcome(cell, run, "done"))
        elif cell.name in failed:
            found.append(CellOutcome(cell, run, "failed", failed[cell.name]))
        else:
            found.append(CellOutcome(cell, run, "pending"))
    return cfg, found


__all__ = ["CellOutcome", "outcomes_of", "resume_compare", "run_cells", "start_compare"]
