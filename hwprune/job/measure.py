"""Loading a run's inputs, measuring models as deployed, and judging them against the budget.

A run's inputs come from a checkpoint and its dataset (``hwprune prune``), or from a model and the
user's own score / fine-tune functions handed in through the Python API (:func:`inputs_from_model`);
the job after loading is the same for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import nn

from hwprune.agents import Budget
from hwprune.checkpoint import load_checkpoint
from hwprune.data import DATASETS, DataBundle, load_data
from hwprune.errors import ConfigError
from hwprune.job.config import JobConfig
from hwprune.latency.allocator import pin_allocator
from hwprune.models import ModelSpec
from hwprune.profilers import Measurement, Profiler, get_profiler, keep_faster
from hwprune.pruning import ModelGraph, PruningPlan
from hwprune.train import evaluate, fine_tune
from hwprune.user_training import UserTraining

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    model: nn.Module
    spec: ModelSpec
    meta: dict[str, Any]
    data: DataBundle | None  # None: the user's own functions (``user``) train and score, or the checkpoint
    # names no dataset (imported without --data) and none was given
    graph: ModelGraph
    profiler: Profiler
    input_shape: tuple[int, ...]  # as deployed: (batch, channels, height, width)
    user: UserTraining | None = None
    _at_start: Measurement | None = field(default=None, init=False, repr=False)

    def unpruned_at_start(self, cfg: JobConfig) -> Measurement:
        """The unpruned model measured as a job starts, once for every job sharing these inputs: a
        compare's cells then each save a measurement, and all cells at a budget search toward the same ms."""
        if self._at_start is None:
            self._at_start = measure(self, self.model, cfg)
        return self._at_start

    @cached_property
    def timed_unpruned(self) -> Callable[[], Measurement]:
        """The unpruned model deployed once per job: it is timed beside every plan the job judges."""
        return self.profiler.deploy(self.model.eval(), self.input_shape)

    @cached_property
    def unpruned_quality(self) -> dict[str, Any]:
        """The unpruned model's test accuracy (or the user's score): once for every run sharing these inputs."""
        return quality_of(self, self.model)


def load_inputs(cfg: JobConfig) -> Loaded:
    model, spec, meta, data, graph = load_trained(cfg.checkpoint, cfg.data_dir, cfg.data)
    if data is None and (needs := data_needs(cfg)):
        raise ConfigError(
            f"checkpoint {cfg.checkpoint} names no dataset, and {needs} needs one: pass --data "
            f"({', '.join(DATASETS)})" + (", or --finetune-steps 0 to skip the fine-tune" if cfg.budget is None else "")
        )
    pin_allocator()  # tables are measured under it; the job's own timings must be too (see allocator.py)
    return Loaded(model, spec, meta, data, graph, job_profiler(cfg), (cfg.batch, spec.in_channels, *spec.input_size))


def job_profiler(cfg: JobConfig) -> Profiler:
    """The device as the job times it: ``cfg``'s backend and threads, at its measurement protocol."""
    return get_profiler(cfg.backend, threads=cfg.threads, repeats=cfg.repeats, runs=cfg.runs, warmup_s=cfg.warmup_s)


def data_needs(cfg: JobConfig) -> str | None:
    """What in this run needs a dataset ("the search under --budget"), or None: a run by --ratio or --plan
    with no fine-tune and a data-free criterion prunes a checkpoint that names none (accuracy unknown)."""
    if cfg.budget is not None:
        return "the search under --budget (it scores candidates on the validation split)"
    if cfg.finetune_steps > 0:
        return f"the fine-tune after pruning (--finetune-steps {cfg.finetune_steps})"
    if cfg.criterion == "taylor":
        return "--criterion taylor (it scores filters on training batches)"
    return None


def inputs_from_model(
    cfg: JobConfig,
    model: nn.Module,
    spec: ModelSpec,
    profiler: Profiler,
    *,
    data: DataBundle | None = None,
    user: UserTraining | None = None,
) -> Loaded:
    """A run's inputs from a model in memory (the Python API): its graph at ``spec``'s input, and who trains it.

    ``user`` (the user's score / fine-tune) or ``data`` (a built-in dataset) is what the search ranks
    plans by and what fine-tunes them; the model is timed by ``profiler`` at ``cfg.batch``.
    """
    pin_allocator()
    graph = ModelGraph(model, (spec.in_channels, *spec.input_size))
    return Loaded(model, spec, {}, data, graph, profiler, (cfg.batch, spec.in_channels, *spec.input_size), user)


def load_trained(
    checkpoint: str, data_dir: str | None, dataset: str | None = None
) -> tuple[nn.Module, ModelSpec, dict[str, Any], DataBundle | None, ModelGraph]:
    """A checkpoint, the dataset it was trained on (split as it was) and its channel groups.

    ``dataset`` overrides the checkpoint's; the data is None when neither names one (a checkpoint
    ``hwprune import`` wrote without ``--data``). A checkpoint from before datasets were recorded
    was trained on fashion-mnist.
    """
    model, spec, meta = load_checkpoint(checkpoint)
    name = dataset or meta.get("data", "fashion-mnist")
    if not name:
        return model, spec, meta, None, ModelGraph(model, (spec.in_channels, *spec.input_size))
    # Split with the checkpoint's own seed: the validation images the search is rewarded on must be
    # ones the baseline never trained on.
    data = load_data(str(name), data_dir, seed=int(meta.get("seed") or 0))
    if (data.in_channels, data.num_classes) != (spec.in_channels, spec.num_classes):
        raise ConfigError(
            f"checkpoint expects {spec.in_channels} input channels and {spec.num_classes} classes, "
            f"dataset '{data.name}' has {data.in_channels} and {data.num_classes}"
        )
    return model, spec, meta, data, ModelGraph(model, (spec.in_channels, *spec.input_size))


def measure(loaded: Loaded, model: nn.Module, cfg: JobConfig) -> Measurement:
    """``cfg.rounds`` measurements of ``model`` as deployed, the faster kept: the latency table's own rule.

    Every model the job judges (the unpruned one that fixes a relative budget, each searched plan,
    the final model) is measured the same way, so a budget is neither loosened by a slow spell
    during the unpruned measurement nor missed because of one during the pruned one. The job
    first idles ``cfg.settle_s``: a model timed right after a fine-tune runs slow for a few seconds
    (docs/latency.md), and the first timing's warm-up is ``cfg.warmup_s`` (1 s) because after an idle
    pause the first runs are slow too.
    """
    return _measure_rounds(loaded, [deploy(loaded, model)], cfg)[0]


def deploy(loaded: Loaded, model: nn.Module) -> Callable[[], Measurement]:
    """``model`` ready to be timed at the job's input shape as often as needed.

    On ONNX backends this is the export (seconds): once per judged model, not
    once per round (a relative judgement times each model 6 times), and once per job for the unpruned one.
    """
    return loaded.timed_unpruned if model is loaded.model else loaded.profiler.deploy(model.eval(), loaded.input_shape)


def _measure_rounds(
    loaded: Loaded, deployed: list[Callable[[], Measurement]], cfg: JobConfig, *, settle: bool = True
) -> list[Measurement]:
    """``cfg.rounds`` rounds, each timing every model in turn; the faster of each kept.

    ``settle``: first idle ``cfg.settle_s``, for a session that follows other work (a fine-tune).
    Only the session's first timing warms up for ``cfg.warmup_s`` too; the others follow timings and
    warm up by count, which reads the same medians about 11 s sooner per verdict (docs/budget-loop.md).
    """
    if settle:
        time.sleep(cfg.settle_s)
    kept = [deployed[0]()]  # rounds >= 1 is validated
    with loaded.profiler.warm_by_count():
        kept += [timed() for timed in deployed[1:]]
        for _ in range(cfg.rounds - 1):
            kept = [keep_faster(k, timed()) for k, timed in zip(kept, deployed, strict=True)]
    return kept


@dataclass(frozen=True)
class Judged:
    """A model's measured latency and the budget it is judged against."""

    measured: Measurement
    unpruned: Measurement | None  # measured alongside, for a relative budget
    budget: Budget

    @property
    def budget_ms(self) -> float:
        return self.budget.against(self.unpruned.median_ms if self.unpruned else None)

    @property
    def met(self) -> bool:
        return self.measured.median_ms <= self.budget_ms

    def clears(self, margin: float) -> bool:
        """Under the budget by half ``margin``: the reserve kept for the re-measurement after the fine-tune."""
        return self.measured.median_ms <= self.budget_ms * (1 - margin / 2)

    def merge(self, again: Judged) -> Judged:
        """Two judgements of the same model: the faster of each measurement (the budget follows the unpruned one)."""
        unpruned = keep_faster(self.unpruned, again.unpruned) if again.unpruned is not None else self.unpruned
        return Judged(keep_faster(self.measured, again.measured), unpruned, self.budget)

    def describe(self) -> str:
        m = self.measured
        text = f"measured {m.median_ms:.3f} ms (IQR {m.iqr_ms:.3f}), budget {self.budget_ms:.3f} ms"
        if self.unpruned is not None:
            text += f" (unpruned measured alongside: {self.unpruned.median_ms:.3f} ms)"
        return text


PAIRED_SESSIONS = 2
"""Sessions a relative budget is judged on: each ``cfg.rounds`` interleaved rounds, the first after a settle."""

DECISIVE = 0.4
"""A first session this far from its budget (a miss by 40 % or more, a pass at 60 % or less) is the verdict.
One session's ratio moved by -20 % to +31 % at the next, and one model's reading by a quarter, across the
budget benchmarks (docs/budget-loop.md): a second session cannot overturn it, only cost time."""


def second_session_needed(measured_ms: float, budget_ms: float) -> bool:
    """Whether a verdict whose first session read ``measured_ms`` against ``budget_ms`` needs its second."""
    return (1 - DECISIVE) * budget_ms < measured_ms < (1 + DECISIVE) * budget_ms


def measure_judged(loaded: Loaded, model: nn.Module, cfg: JobConfig, budget: Budget) -> Judged:
    """``model`` measured as :func:`measure` does, and the budget it must meet.

    A relative budget ("0.5x") is a ratio, so it is judged as one: the unpruned model is measured
    in the same window, round by round interleaved with ``model``, and the budget is the fraction
    of *that* median. A shared machine drifts by tens of percent within a run, so a budget fixed
    from a measurement taken at the start would judge the drift, not the model. An absolute
    budget ("4.2ms") has no reference and is judged on ``model`` alone.

    The ratio of one such session still moves from one session to the next (docs/budget-loop.md),
    so a relative budget is judged on ``PAIRED_SESSIONS`` sessions, the faster of each model kept,
    unless the first is decisive (:func:`second_session_needed`), as a MACs twin missing by 40 % or more is.
    """
    if budget.fraction is None:
        return Judged(measure(loaded, model, cfg), None, budget)

    pair = [loaded.timed_unpruned, deploy(loaded, model)]

    def session(settle: bool) -> Judged:
        unpruned, measured = _measure_rounds(loaded, pair, cfg, settle=settle)
        return Judged(measured, unpruned, budget)

    judged = session(settle=True)
    if not second_session_needed(judged.measured.median_ms, judged.budget_ms):
        return judged
    for _ in range(PAIRED_SESSIONS - 1):
        judged = judged.merge(session(settle=False))  # it follows the last session's timings, not other work
    return judged


def measure_final(
    loaded: Loaded, model: nn.Module, cfg: JobConfig, budget: Budget, *, tried_met: bool = True
) -> tuple[Judged, int]:
    """The fine-tuned model judged; a miss is measured again, up to ``max_tries`` times in all, the faster kept.

    A dense model's latency does not depend on its weights, so when the same architecture was judged
    under the budget before its fine-tune (``tried_met``), a miss here is the machine, not the model.
    A plan that already missed as tried (a MACs twin's) keeps its one judgement: measuring it again
    would only cost time. The verdict rests on this model's own measurements; the report records how
    many were taken.
    """
    judged, taken = measure_judged(loaded, model, cfg, budget), 1
    while not judged.met and tried_met and taken < cfg.max_tries:
        log.info(f"final model {judged.describe()}: over, measuring again (the machine may be busy)")
        judged, taken = judged.merge(measure_judged(loaded, model, cfg, budget)), taken + 1
    return judged, taken


def finish(
    cfg: JobConfig, loaded: Loaded, model: nn.Module, budget: Budget, *, tried_met: bool = True
) -> tuple[Judged, int]:
    """Long fine-tune ``model`` in place, then judge it (:func:`measure_final`)."""
    long_finetune(cfg, loaded, model)
    judged, taken = measure_final(loaded, model, cfg, budget, tried_met=tried_met)
    log.info(f"final model {judged.describe()}: {'met' if judged.met else 'NOT met'}")
    return judged, taken


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_of(graph: ModelGraph, plan: PruningPlan | None) -> int:
    return sum(layer.macs for layer in graph.layer_shapes(plan.keep if plan else None))


def long_finetune(cfg: JobConfig, loaded: Loaded, model: nn.Module, what: str = "the pruned model") -> None:
    """``what``: the model as the log names it (a compare's control is the unpruned one)."""
    if loaded.user is not None:
        if loaded.user.finetune is not None and cfg.finetune_steps:
            log.info(f"fine-tuning {what} for {cfg.finetune_steps} steps (your finetune function)")
        loaded.user.fine_tune(model, cfg.finetune_steps, cfg.seed)
        return
    if loaded.data is None:  # load_inputs let it through: --finetune-steps 0
        log.info(f"no dataset: {what} is not fine-tuned, and its accuracy is unknown")
        return
    taught = f", taught by the unpruned model (distillation weight {cfg.distill:g})" if cfg.distill else ""
    log.info(f"fine-tuning {what} for {cfg.finetune_steps} steps{taught}")
    fine_tune(
        model,
        loaded.data.train,
        cfg.finetune_steps,
        lr=cfg.finetune_lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
        augment=loaded.data.augment,
        precision=cfg.precision,
        teacher=loaded.model if cfg.distill else None,
        distill=cfg.distill,
    )


def check_distill(cfg: JobConfig, loaded: Loaded) -> None:
    """Distillation is a loss of hwprune's own fine-tune: refused in one line where the user's functions train."""
    if cfg.distill and loaded.user is not None:
        raise ConfigError(
            "distill= is a loss of hwprune's own fine-tune (data= a built-in dataset), and this run trains with "
            "your functions: distil inside your finetune= function, or pass data= instead"
        )


def summarize_model(loaded: Loaded, model: nn.Module, plan: PruningPlan | None, m: Measurement) -> dict[str, Any]:
    """A model's line of the report: latency, accuracy on the test split (or the user's score), size."""
    quality = loaded.unpruned_quality if model is loaded.model else quality_of(loaded, model)
    return {"measured": m.to_dict(), **quality, "params": params_of(model), "macs": macs_of(loaded.graph, plan)}


def quality_of(loaded: Loaded, model: nn.Module) -> dict[str, Any]:
    if loaded.user is not None:
        return {"test_accuracy": None, "score": loaded.user.evaluate(model)}
    return {"test_accuracy": None if loaded.data is None else evaluate(model, loaded.data.test)}
