"""``hwprune.prune``: the measured budget loop of ``hwprune prune``, for a model in memory and the user's own loop.

A user hands in their trained ``nn.Module``, the input it takes, and two functions over their own
data: ``score(model) -> float`` (higher is better, e.g. validation accuracy) and
``finetune(model, steps) -> None``. The job is the CLI's (:func:`hwprune.job.run_job`): profile the
device (or use ``table``), search under the budget, cut, fine-tune, measure the pruned model on
the device against the budget, write the run directory. What comes back is the physically pruned
module, its plan, the measured verdict and the report.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hwprune.agents import get_agent, parse_budget
from hwprune.api.latency import as_table, backend_name_of
from hwprune.api.model import model_spec
from hwprune.data import DataBundle, load_data
from hwprune.errors import ConfigError
from hwprune.job import JobConfig, finished_report, resume_config, run_job
from hwprune.job.measure import inputs_from_model, job_profiler
from hwprune.latency import LatencyTable
from hwprune.models import ModelSpec
from hwprune.profilers import Measurement, Profiler
from hwprune.pruning import PruningPlan, load_pruned, save_pruned
from hwprune.train import resolve_precision
from hwprune.user_training import FinetuneFn, ScoreFn, UserTraining

log = logging.getLogger(__name__)

SET_HERE = ("checkpoint", "out", "budget", "ratio", "plan", "lut", "backend", "threads", "batch", "progress")
"""JobConfig fields ``prune`` sets from its own arguments; every other field may be passed as a keyword."""


@dataclass
class PruneResult:
    """What :func:`prune` made: the pruned, fine-tuned module and how it measured on this device.

    ``met`` is None for a run without a budget (``ratio=`` or ``plan=``). ``out`` is the run
    directory (plan, weights, report, the search's files), None when ``prune`` was given no ``out``.
    """

    model: nn.Module
    plan: PruningPlan
    spec: ModelSpec
    met: bool | None
    budget_ms: float | None
    measured: Measurement
    unpruned: Measurement
    report: dict[str, Any]
    out: Path | None

    @property
    def speedup(self) -> float:
        """Measured unpruned median over measured pruned median (the unpruned one measured alongside)."""
        return self.unpruned.median_ms / self.measured.median_ms

    @property
    def macs(self) -> tuple[int, int]:
        """MACs per sample (unpruned, pruned)."""
        return int(self.report["unpruned"]["macs"]), int(self.report["pruned"]["macs"])

    def save(self, path: str | Path) -> Path:
        """Write the pruned model (plan JSON + safetensors); read it back with
        ``hwprune.load_pruned(path, base_model=YourNet())``."""
        return save_pruned(path, self.model, self.spec, self.plan, {"source": "python"})

    def summary(self) -> str:
        verdict = "" if self.met is None else f", budget {self.budget_ms:.3f} ms {'met' if self.met else 'NOT met'}"
        before, after = self.macs
        return (
            f"{self.spec.name}: {self.unpruned.median_ms:.3f} -> {self.measured.median_ms:.3f} ms measured "
            f"({self.speedup:.2f}x){verdict}; MACs {before:,} -> {after:,}; keeps {self.plan.keep_ratio():.0%} "
            "of the prunable channels"
        )


def prune(
    model: nn.Module,
    input_shape: Sequence[int],
    budget: str | None = None,
    *,
    ratio: float | None = None,
    plan: PruningPlan | str | Path | None = None,
    table: LatencyTable | str | Path | None = None,
    agent: str = "netadapt",
    agent_options: dict[str, Any] | None = None,
    criterion: str | None = None,
    score: ScoreFn | None = None,
    finetune: FinetuneFn | None = None,
    finetune_steps: int = 400,
    search_finetune_steps: int = 20,
    taylor_data: Iterable[Any] | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    backend: str | Profiler | None = None,
    threads: int | None = None,
    batch: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` to a latency ``budget`` measured on this device, as ``hwprune prune`` does.

    ``budget``: ``"0.5x"`` (of the unpruned model's latency, measured alongside) or ``"4.2ms"`` (per
    batch); or instead ``ratio=`` (uniform keep ratio) or ``plan=`` (a :class:`PruningPlan` or its JSON).
    ``score`` / ``finetune``: your functions over your data (see :mod:`hwprune.user_training`); a search
    needs ``score``. Or ``data=`` names a built-in dataset (``fashion-mnist``, ``cifar10``, ...) whose
    data, training and test accuracy are then used. ``finetune_steps`` is the long fine-tune after
    pruning, ``search_finetune_steps`` the short one before each candidate is scored. ``table``: a
    :func:`~hwprune.profile` table (or its path); without one the device is profiled first.
    ``backend``: a backend name or a :class:`~hwprune.profilers.Profiler` (default: the table's, else
    onnxruntime). ``out``: the run directory to create (default: a temporary one, removed after).
    Other keywords are ``hwprune prune``'s options by their ``JobConfig`` names (``margin``,
    ``max_tries``, ``round_to``, ``min_keep_ratio``, ``rounds``, ``settle_s`` ...). The model is not changed.
    ``resume=True``: continue the run in ``out`` after a Ctrl-C or a crash, called with the same
    arguments (a search picks up where it stopped); a finished run is read back without running anything.
    """
    if budget is not None and not isinstance(budget, str):
        raise ConfigError(
            f'budget must be a string like "0.5x" (of the unpruned latency) or "4.2ms", got {budget!r}; '
            "for a uniform keep ratio pass ratio="
        )
    if budget is not None:
        parse_budget(budget, 1.0)  # a malformed budget is refused before anything is traced or timed
    _check_options(options)
    source = as_table(table) if table is not None else None
    settings = source.settings if source is not None else {}
    if batch is None and len(tuple(input_shape)) == 3:
        batch = int(settings.get("batch", 32))  # `hwprune prune`'s default deployment batch
    spec, batch = model_spec(model, input_shape, batch, name)
    training, bundle = _training(spec, score, finetune, taylor_data, data, data_dir, seed)
    if budget is not None and bundle is None and (training is None or training.score is None):
        raise ConfigError(
            "a budget search ranks plans by accuracy: pass score=(your validation metric of a model) "
            "or data=(a built-in dataset)"
        )
    if (criterion == "taylor") and bundle is None and (training is None or training.batches is None):
        raise ConfigError("criterion 'taylor' needs training batches: pass taylor_data=(your training DataLoader)")
    given = backend if isinstance(backend, Profiler) else None
    backend_name = given.name if given else backend_name_of(str(backend or settings.get("backend", "onnxruntime")))
    threads = threads if threads is not None else settings.get("threads")
    agent_options = dict(agent_options or {})
    if not progress and budget is not None and "progress" in get_agent(agent, **agent_options).options():
        agent_options.setdefault("progress", False)

    with tempfile.TemporaryDirectory(prefix="hwprune-") as scratch:
        run = Path(out) if out is not None else Path(scratch) / "run"
        cfg = JobConfig(
            checkpoint=None,
            out=str(run),
            budget=budget,
            ratio=ratio,
            plan=_as_path(plan, Path(scratch) / "plan.json", PruningPlan),
            agent=agent,
            agent_options=agent_options,
            criterion=criterion,
            backend=backend_name,
            threads=threads,
            batch=batch,
            lut=_as_path(table, Path(scratch) / "lut.json", LatencyTable),
            seed=seed,
            finetune_steps=finetune_steps,
            search_finetune_steps=search_finetune_steps,
            data_dir=data_dir,
            progress=progress,
            **options,
        )
        if resume:
            cfg = _resumed(cfg, out)
            if finished_report(run) is not None:
                return _result(run, model, spec, keep=True)
        profiler = given or job_profiler(cfg)
        loaded = inputs_from_model(cfg, model, spec, profiler, data=bundle, user=training)
        try:
            run_job(cfg, resume=resume, loaded=loaded)
        except KeyboardInterrupt:
            if out is not None:
                log.warning("interrupted: the run stays in %s; call prune again with resume=True to continue", out)
            raise
        result = _result(run, model, spec, keep=out is not None)
    log.info(result.summary())
    if result.met is False:
        log.warning(
            "after its last try's fine-tune the pruned model measured over the budget (device noise); see the "
            "report, and retry with a larger margin= or max_tries="
        )
    return result


NOT_COMPARED = ("checkpoint", "out", "plan", "lut", "data_dir", "ranking", "progress", "agent_options")
"""Fields a resumed call may pass anew: paths (a table or plan object is written to a new scratch file
each call) and what changes nothing computed. Agent options are compared key by key."""


def _resumed(cfg: JobConfig, out: str | Path | None) -> JobConfig:
    """The job saved in ``out`` with this call's paths, refused in one line where the call differs from it."""
    if out is None or not Path(out, "job.json").is_file():
        raise ConfigError(
            f"resume=True continues a run in out=, and {'no out= was given' if out is None else f'{out} holds none'}: "
            "call without resume=True to start one"
        )
    saved = resume_config(out)
    given = dataclasses.asdict(cfg) | {"precision": resolve_precision(cfg.precision)}
    given["criterion"] = cfg.criterion or saved.criterion
    given_options = {k: v for k, v in cfg.agent_options.items() if k != "progress"}
    differ = [
        f"{name}={given[name]!r} (the run has {value!r})"
        for name, value in dataclasses.asdict(saved).items()
        if name not in NOT_COMPARED and given[name] != value
    ] + [
        f"agent option {k}={v!r} (the run has {saved.agent_options.get(k)!r})"
        for k, v in given_options.items()
        if saved.agent_options.get(k) != v
    ]
    if differ:
        raise ConfigError(f"resume=True continues {out} as it started, but this call has {'; '.join(differ)}")
    options = saved.agent_options | ({"progress": False} if cfg.agent_options.get("progress") is False else {})
    return dataclasses.replace(
        saved, out=cfg.out, lut=cfg.lut, plan=cfg.plan, progress=cfg.progress, agent_options=options
    )


def _check_options(options: dict[str, Any]) -> None:
    """Extra keywords are JobConfig fields that ``prune`` does not set itself; anything else is one line."""
    names = {f.name for f in dataclasses.fields(JobConfig)} - set(SET_HERE)
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"did you mean {close[0]}=?" if close else f"the options are {', '.join(sorted(names))}"
            raise ConfigError(f"prune() got an unknown option {key}=: {hint}")


def _training(
    spec: ModelSpec,
    score: ScoreFn | None,
    finetune: FinetuneFn | None,
    taylor_data: Iterable[Any] | None,
    data: str | None,
    data_dir: str | None,
    seed: int,
) -> tuple[UserTraining | None, DataBundle | None]:
    """Who trains and scores: the user's functions, or a built-in dataset (never both)."""
    own = score is not None or finetune is not None or taylor_data is not None
    if own and data is not None:
        raise ConfigError(
            "give your own score=/finetune= or a built-in dataset data=, not both: data= trains and scores "
            "with hwprune's own loop"
        )
    if data is not None:
        bundle = load_data(data, data_dir, seed=seed)
        found = (bundle.in_channels, bundle.num_classes, bundle.input_size)
        wanted = (spec.in_channels, spec.num_classes, spec.input_size)
        if found != wanted:
            raise ConfigError(
                f"dataset '{data}' has (channels, classes, HxW) {found}, the model takes {wanted}: "
                "give a model and input_shape that fit it, or your own score=/finetune="
            )
        return None, bundle
    return (UserTraining(score, finetune, taylor_data) if own else None), None


def _as_path(item: PruningPlan | LatencyTable | str | Path | None, scratch: Path, kind: type) -> str | None:
    """A file the job reads and checks as it does the CLI's: the path given, or the object written to ``scratch``."""
    if item is None:
        return None
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, kind):
        item.save(scratch)
        return str(scratch)
    raise ConfigError(f"expected a {kind.__name__} or the path of one, got {type(item).__name__}")


def _result(run: Path, model: nn.Module, spec: ModelSpec, keep: bool) -> PruneResult:
    """The run's outcome read back from its directory: the saved model rebuilt on ``model``'s architecture
    (``met`` is the report's verdict, None for a run without a budget)."""
    report = json.loads((run / "report.json").read_text())
    pruned, _, plan = load_pruned(run / "model", base_model=model)
    budget = report.get("budget") or {}
    return PruneResult(
        model=pruned,
        plan=plan,
        spec=spec,
        met=report["budget_met"],
        budget_ms=budget.get("ms"),
        measured=Measurement.from_dict(report["pruned"]["measured"]),
        unpruned=Measurement.from_dict(report["unpruned"]["measured"]),
        report=report,
        out=run if keep else None,
    )
