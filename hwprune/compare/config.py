"""What defines a compare (``compare.json``): the matrix and the one job setting every cell shares.

Every cell is a prune job built from the same :class:`~hwprune.job.JobConfig` fields (deployment,
table, seed, evaluator, fine-tune), differing only in agent, budget, predictor and, for LeGR's
later budgets, the ranking it thresholds. The file also records the cells that failed, with the
one line that says why, so ``--resume`` skips them like the finished ones.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hwprune.compare.matrix import CONTROL, Cell, plan_cells
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import read_json, write_json
from hwprune.job import JobConfig
from hwprune.job.config import validate_config

COMPARE_KIND = "compare"
COMPARE_SCHEMA = 1
DEFAULT_AGENTS = ("uniform", "netadapt", "amc", "legr")
DEFAULT_TWINS = ("uniform", "netadapt")
"""Uniform is the plain FLOPs baseline users already run; NetAdapt is the hardware-aware agent that
beat uniform in the budget benchmark: together they show what the latency table adds to the
simplest and to the strongest search."""
PER_CELL = (
    "checkpoint",
    "out",
    "budget",
    "ratio",
    "plan",
    "agent",
    "agent_options",
    "ranking",
    "continue_from",
    "predictor",
)
"""JobConfig fields a compare sets per cell; every other one is shared (``CompareConfig.job``)."""


@dataclass
class CompareConfig:
    checkpoint: str
    out: str
    budgets: list[str]
    agents: list[str] = field(default_factory=lambda: list(DEFAULT_AGENTS))
    twins: list[str] = field(default_factory=lambda: list(DEFAULT_TWINS))
    agent_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> its options
    legr_learn_at: str | None = None
    control: bool = True
    job: dict[str, Any] = field(default_factory=dict)  # the shared JobConfig fields (backend, lut, seed, ...)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.job) - {f.name for f in fields(JobConfig)})
        per_cell = sorted(set(self.job) & set(PER_CELL))
        if unknown or per_cell:
            raise ConfigError(f"a compare's job settings cannot set {', '.join(unknown + per_cell)}")

    def cells(self) -> list[Cell]:
        return plan_cells(self.budgets, self.agents, self.twins, self.legr_learn_at, self.control)

    def table_path(self) -> Path:
        """The latency table every cell reads: the user's, or the one profiled into the compare directory."""
        return Path(self.job["lut"]) if self.job.get("lut") else Path(self.out) / "lut.json"

    def options_for(self, agent: str) -> dict[str, Any]:
        return self.agent_options.get(agent, {})

    def job_config(self, cell: Cell) -> JobConfig:
        """The prune job of ``cell``: the shared settings, the table, and what the cell varies."""
        shared = self.job | {"lut": str(self.table_path())}
        run = str(cell_dir(self.out, cell))
        if cell.agent is None:  # the control: every channel kept, the same long fine-tune
            return JobConfig(checkpoint=self.checkpoint, out=run, ratio=1.0, **shared)
        ranking = str(cell_dir(self.out, cell.ranking_from) / "ranking.json") if cell.ranking_from else None
        return JobConfig(
            checkpoint=self.checkpoint,
            out=run,
            budget=cell.budget,
            agent=cell.agent,
            agent_options=self.options_for(cell.agent),
            predictor=cell.predictor,
            ranking=ranking,
            continue_from=str(cell_dir(self.out, cell.path_from)) if cell.path_from else None,
            **shared,
        )

    def validate(self) -> None:
        """Refuse a bad matrix or setting before anything is loaded, profiled or written."""
        if not self.agents and not self.twins:
            raise ConfigError("--agents and --twins are both empty: nothing to compare")
        stray = sorted(set(self.agent_options) - set(self.agents) - set(self.twins))
        if stray:
            raise ConfigError(
                f"--agent-option names {', '.join(stray)}, which is not in --agents or --twins; "
                "write AGENT.KEY=VALUE for an agent that runs, e.g. amc.episodes=40"
            )
        cells = self.cells()
        for cell in cells:
            cfg = self.job_config(cell)
            if cfg.ranking is not None or cfg.continue_from is not None:
                unset = {"ranking": None, "continue_from": None, "agent_options": self.options_for(cell.agent or "")}
                cfg = JobConfig(**(asdict(cfg) | unset))
            validate_config(cfg)  # the ranking and the path do not exist yet; everything else is checked

    def command(self) -> str:
        """The command line that makes this compare again, every setting spelled out."""
        args = ["hwprune", "compare", "--checkpoint", self.checkpoint, "--out", self.out]
        args += ["--budgets", ",".join(self.budgets), "--agents", ",".join(self.agents) or "none"]
        args += ["--twins", ",".join(self.twins) or "none"]  # what the options parse as an empty list
        if self.legr_learn_at:
            args += ["--legr-learn-at", self.legr_learn_at]
        if not self.control:
            args.append("--no-control")
        for agent, options in sorted(self.agent_options.items()):
            args += [a for k, v in sorted(options.items()) for a in ("--agent-option", f"{agent}.{k}={_json(v)}")]
        defaults = {f.name: f.default for f in fields(JobConfig)}
        for name, value in sorted(self.job.items()):
            flag = "--" + name.replace("_", "-")
            if name == "densify":
                args += [] if value else ["--no-densify"]
            elif name == "allow_foreign_table":
                args += ["--allow-foreign-table"] if value else []
            elif value is not None and (value != defaults.get(name) or name in ALWAYS_SPELLED):
                args += [flag, _json(value)]
        return " ".join(shlex.quote(str(a)) for a in args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ALWAYS_SPELLED = ("backend", "batch", "threads", "seed", "finetune_steps", "search_finetune_steps", "val_samples")
"""Settings the command names even at their default: a later version's default must not change the rerun."""


def _json(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def cell_dir(out: str | Path, name: str | Cell) -> Path:
    return Path(out) / "cells" / (name.name if isinstance(name, Cell) else name)


def save_state(cfg: CompareConfig, failed: dict[str, str]) -> None:
    write_json(
        Path(cfg.out) / "compare.json",
        {"kind": COMPARE_KIND, "schema_version": COMPARE_SCHEMA, "config": cfg.to_dict(), "failed": failed},
    )


def load_state(out: str | Path) -> tuple[CompareConfig, dict[str, str]]:
    """The compare a directory holds and the cells that failed (name -> reason)."""
    path = Path(out) / "compare.json"
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no compare there (no compare.json); start one with --checkpoint and --out")
    data = read_json(path, COMPARE_KIND, COMPARE_SCHEMA)
    try:
        cfg = CompareConfig(**data["config"])
        failed = {str(k): str(v) for k, v in data.get("failed", {}).items()}
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is not a compare this hwprune can resume ({exc}); start a new one") from None
    cfg.out = str(out)
    return cfg, failed


__all__ = ["CONTROL", "CompareConfig", "cell_dir", "load_state", "save_state"]
