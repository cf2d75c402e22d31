"""What defines a prune run (``job.json``), checked before anything is loaded or written."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hwprune.agents import get_agent
from hwprune.agents.ranking import Ranking
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import read_json, write_json
from hwprune.job.earlier import CONTINUES_PATH, path_of_run
from hwprune.latency.calibrate import check_plan_count
from hwprune.options import (
    AT_LEAST_1,
    FRACTION,
    MARGIN,
    NON_NEGATIVE,
    POSITIVE,
    REPEATS,
    SLACK,
    UNIT_INTERVAL,
    Range,
    check_out_location,
)
from hwprune.pruning import TAYLOR_BATCHES, check_criterion
from hwprune.train import resolve_precision

JOB_KIND = "prune-job"
PREDICTORS = ("table", "macs")
JOB_SCHEMA = 1


@dataclass
class JobConfig:
    """Everything that defines a run; saved as ``job.json`` so ``--resume`` needs only the directory."""

    checkpoint: str | None  # None: a model handed in through the Python API (hwprune.prune)
    out: str
    budget: str | None = None
    ratio: float | None = None
    plan: str | None = None
    agent: str = "netadapt"
    agent_options: dict[str, Any] = field(default_factory=dict)
    backend: str = "onnxruntime"
    threads: int | None = None
    batch: int = 32  # the deployment batch `hwprune prune` falls back to (compute-bound on CPU)
    lut: str | None = None
    allow_foreign_table: bool = False
    data_dir: str | None = None
    data: str | None = None  # dataset to fine-tune and score on; None: the checkpoint's
    seed: int = 0
    search_finetune_steps: int = 20
    search_bn_batches: int = 0  # adaptive BN before each candidate's score (train.recalibrate_bn); 0: off
    val_samples: int = 2000
    finetune_steps: int = 400
    finetune_lr: float = 0.01
    distill: float = 0.0  # weight of the unpruned model's soft outputs in the long fine-tune; 0: labels alone
    batch_size: int = 128
    precision: str = "auto"  # of fine-tunes and candidate scores; resolved to fp32/bf16 when the run starts
    margin: float = 0.05
    slack: float | None = None  # None: twice the margin
    max_tries: int = 3
    densify: bool = True
    repeats: int = 10
    runs: int = 5
    rounds: int = 3
    settle_s: float = 3.0
    warmup_s: float = 1.0
    calibration_plans: int = 13
    min_keep_ratio: float = 0.1
    round_to: int = 1
    criterion: str | None = None  # filter importance; None: l2, or for --plan the criterion that chose its filters
    taylor_batches: int = TAYLOR_BATCHES
    ranking: str | None = None  # a LeGR ranking.json to threshold to the budget: no search, no evaluation
    continue_from: str | None = None  # a finished NetAdapt run whose search path this one continues
    predictor: str = "table"  # "macs": a FLOPs-targeted twin (job/macs_twin.py), no table and one search
    progress: bool = True  # tqdm bars of the table build and the long fine-tune; changes nothing a run computes

    def __post_init__(self) -> None:
        """``ranking`` is the LeGR agent's ``ranking`` option, hoisted to a field of the job so it can be
        checked before anything loads; either spelling sets both (a conflict is refused by validate_config)."""
        if self.ranking is None and self.agent == "legr" and self.agent_options.get("ranking") is not None:
            self.ranking = str(self.agent_options["ranking"])
        elif self.ranking is not None and "ranking" not in self.agent_options:
            self.agent_options = {**self.agent_options, "ranking": self.ranking}

    @property
    def slack_fraction(self) -> float:
        """How far under the budget a plan may measure before a wider one is searched for (0: never)."""
        return 2 * self.margin if self.slack is None else self.slack


PATH_FIELDS = ("checkpoint", "lut", "plan", "data_dir", "continue_from")
"""Options naming files: recorded absolute in job.json, so a run resumes from any working directory."""

RANGES: dict[str, Range] = {
    "ratio": FRACTION,
    "batch": AT_LEAST_1,
    "threads": AT_LEAST_1,
    "repeats": REPEATS,
    "runs": AT_LEAST_1,
    "rounds": AT_LEAST_1,
    "max_tries": AT_LEAST_1,
    "batch_size": AT_LEAST_1,
    "val_samples": AT_LEAST_1,
    "round_to": AT_LEAST_1,
    "taylor_batches": AT_LEAST_1,
    "finetune_steps": NON_NEGATIVE,
    "search_finetune_steps": NON_NEGATIVE,
    "search_bn_batches": NON_NEGATIVE,
    "calibration_plans": NON_NEGATIVE,
    "seed": NON_NEGATIVE,
    "settle_s": NON_NEGATIVE,
    "warmup_s": NON_NEGATIVE,
    "min_keep_ratio": FRACTION,
    "margin": MARGIN,
    "slack": SLACK,
    "finetune_lr": POSITIVE,
    "distill": UNIT_INTERVAL,
}
"""The range of every numeric option; the CLI's types check the same ones while parsing."""


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def validate_config(cfg: JobConfig) -> None:
    """Refuse bad option values before anything is loaded or written.

    The CLI has refused most of them while parsing; this is the same check for a ``JobConfig`` built
    in Python or read back from a ``job.json``. Every float must be finite (NaN passes ``x < 0``
    checks and breaks far later, in a sleep or a JSON file), every path non-empty.
    """
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{_flag(f.name)} must be a finite number, got {value}")
        if f.name in RANGES:
            RANGES[f.name].check(_flag(f.name), value)
        if f.name in PATH_FIELDS + ("out",) and value is not None and not str(value).strip():
            raise ConfigError(f"{_flag(f.name)} must not be empty")
    if sum(x is not None for x in (cfg.budget, cfg.ratio, cfg.plan)) != 1:
        raise ConfigError("give exactly one of --budget (e.g. 0.5x or 4.2ms), --ratio (uniform keep ratio) or --plan")
    if cfg.slack is not None and cfg.slack != 0 and not cfg.margin <= cfg.slack < 1:
        raise ConfigError(f"--slack must be 0 (off) or in [--margin, 1), got {cfg.slack} (--margin {cfg.margin})")
    resolve_precision(cfg.precision)  # refuses an unknown one
    if cfg.criterion is not None:
        check_criterion(cfg.criterion)
    if cfg.lut is None:
        check_plan_count(cfg.calibration_plans, "--calibration-plans")
    if cfg.ranking is not None:
        validate_ranking(cfg)
    if cfg.continue_from is not None:
        validate_continue_from(cfg)
    if cfg.predictor not in PREDICTORS:
        raise ConfigError(f"predictor must be one of {', '.join(PREDICTORS)}, got {cfg.predictor!r}")
    if cfg.predictor == "macs" and cfg.budget is None:
        raise ConfigError("the MACs predictor searches to a --budget: give one (e.g. 0.5x), not --ratio or --plan")
    if cfg.budget is not None:
        get_agent(cfg.agent, **cfg.agent_options)  # an unknown agent or option fails now, not after profiling


def validate_ranking(cfg: JobConfig) -> None:
    """A ``--ranking`` run thresholds a LeGR ranking to its budget: it needs both, and a readable ranking file.

    Whether the ranking fits the model (its name and channel groups) is checked once the model is loaded
    (``run.check_ranking``), still before anything is measured or written.
    """
    if cfg.agent != "legr":
        raise ConfigError(f"--ranking is a LeGR ranking: use it with --agent legr, not --agent {cfg.agent}")
    if cfg.budget is None:
        raise ConfigError("--ranking needs --budget (e.g. 0.5x): the ranking is thresholded to a latency budget")
    if cfg.agent_options.get("ranking") != cfg.ranking:
        raise ConfigError(
            f"two rankings given: --ranking {cfg.ranking} and --agent-option ranking={cfg.agent_options['ranking']}; "
            "give one"
        )
    Ranking.load(cfg.ranking)  # missing, corrupt or another kind of file: one line now


def validate_continue_from(cfg: JobConfig) -> None:
    """``--continue-from`` hands a NetAdapt search an earlier run's path: it needs a budget and a finished run.

    Whether that path's groups fit the model is checked once the model is loaded (``run.run_job``).
    """
    if cfg.agent not in CONTINUES_PATH:
        raise ConfigError(
            f"--continue-from continues a NetAdapt search path: use it with --agent netadapt, not --agent {cfg.agent}"
        )
    if cfg.budget is None:
        raise ConfigError("--continue-from needs --budget (e.g. 0.3x): the path is walked until it meets the budget")
    path_of_run(cfg.continue_from)  # not a finished run, or one without a search: one line now


def check_fresh_out(out: str | Path) -> None:
    """A fresh run needs an empty or missing ``--out`` it can write: refuse before anything is loaded or measured."""
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run} is a file: give a directory for the run")
    if run.exists() and any(run.iterdir()):
        raise ConfigError(f"run directory {run} already exists: pick another --out, or continue it with --resume {run}")
    check_out_location(run, "--out")


def finished_report(run_dir: str | Path) -> Path | None:
    """The report of a run that has finished (``report.json`` is written last but one), else None."""
    run = Path(run_dir)
    if not (run / "report.json").is_file():
        return None
    return run / "report.md" if (run / "report.md").is_file() else run / "report.json"


def start_run(cfg: JobConfig, budget_ms: float | None) -> Path:
    check_fresh_out(cfg.out)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    # Every agent option, defaults too, so a resumed run searches as it started even if a default changes.
    options = get_agent(cfg.agent, **cfg.agent_options).options() if cfg.budget is not None else cfg.agent_options
    write_json(
        run / "job.json",
        {
            "kind": JOB_KIND,
            "schema_version": JOB_SCHEMA,
            "config": asdict(cfg)
            | {"agent_options": options}
            | {name: os.path.abspath(path) for name in PATH_FIELDS if (path := getattr(cfg, name)) is not None},
            "budget_ms": budget_ms,
        },
    )
    return run


def resume_config(run_dir: str | Path) -> JobConfig:
    """The job a run directory holds, with the defaults it ran under where they have changed since.

    A run from before ``--slack`` replays without it, one from before ``--precision`` in fp32; a
    NetAdapt run from before carried weights (its job.json names no ``weights``: later runs store
    every agent option) with original ones.
    """
    data = read_json(Path(run_dir) / "job.json", JOB_KIND, JOB_SCHEMA)
    try:
        config = {"slack": 0.0, "precision": "fp32"} | data["config"]
        if config.get("agent") == "netadapt":
            config["agent_options"] = {"weights": "original"} | config.get("agent_options", {})
        return JobConfig(**config)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{Path(run_dir) / 'job.json'} is not a prune job this hwprune can resume ({exc}); start a new run"
        ) from None
