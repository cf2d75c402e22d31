"""Fit the table sum to whole-model latency on a few measured plans, and keep the evidence.

The plans are deterministic (seeded), span the range an agent explores (from the unpruned model
down to about a fifth of each group) and are saved in the table with their measurements, so
anyone can see what the fit rests on and ``lut-check`` can make sure it never validates on them.
Each measured plan is written into the table as soon as it completes, like the blocks, so
``--resume`` does not repeat them.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from hwprune.errors import TableError
from hwprune.latency.predictor import TableSum
from hwprune.latency.table import LatencyTable
from hwprune.profilers.base import Profiler
from hwprune.profilers.measurement import Measurement
from hwprune.pruning.apply import apply_plan
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan

MIN_PLANS = 3  # two parameters and at least one degree of freedom to expose a bad fit


def calibration_plans(model_name: str, graph: ModelGraph, count: int, seed: int) -> list[PruningPlan]:
    """The unpruned model plus ``count - 1`` random plans at evenly spread overall levels.

    I.i.d. per-group ratios would cluster every plan around the same total latency; drawing each
    plan around its own level (0.2 .. 1.0) spreads them over the whole range the fit must cover.
    """
    rng = np.random.default_rng(seed)
    plans = [PruningPlan.full(model_name, graph)]
    for i in range(count - 1):
        level = 0.2 + 0.8 * (i + 0.5) / max(count - 1, 1)
        low, high = max(0.1, level - 0.25), min(1.0, level + 0.25)
        plans.append(PruningPlan.random(model_name, graph, rng, low=low, high=high))
    return plans


def measure_plan(model: nn.Module, graph: ModelGraph, plan: PruningPlan, profiler: Profiler,
                 input_shape: tuple[int, ...]) -> Measurement:
    """End-to-end latency of the physically pruned model, as deployed on ``profiler``'s backend."""
    pruned, _ = apply_plan(model, plan, graph)
    return profiler.measure_model(pruned, input_shape)


def calibrate(table: LatencyTable, model: nn.Module, graph: ModelGraph, profiler: Profiler,
              out: Path | None = None, progress: bool = True,
              measure: Callable[..., Measurement] | None = None) -> dict[str, Any]:
    """Measure the calibration plans not yet in the table, then fit and store ``scale``/``offset_ms``."""
    s = table.settings
    count, seed = int(s.get("calib_plans", 0)), int(s.get("calib_seed", 0))
    if count < MIN_PLANS:
        raise TableError(f"calibration needs at least {MIN_PLANS} plans, got {count}")
    plans = calibration_plans(str(s["model"]), graph, count, seed)
    shape = (int(s["batch"]), int(s["in_channels"]), *[int(v) for v in s["input_size"]])
    record = table.calibration or {"plans": []}
    done = {tuple(sorted(r["keep"].items())) for r in record["plans"]}
    measure = measure or (lambda plan: measure_plan(model, graph, plan, profiler, shape))
    todo = [p for p in plans if tuple(sorted(p.keep.items())) not in done]
    for plan in tqdm(todo, desc="calibrating on whole models", unit="plan", disable=not progress or not todo):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = measure(plan)
        record["plans"].append({"keep": plan.keep, "unstable": bool(caught), "measurement": m.to_dict()})
        table.calibration = {"plans": record["plans"]}
        if out is not None:
            table.save(out)
    form = str(s.get("calib_form", "sum"))
    table.calibration = {"plans": record["plans"], "fit": fit(table, graph, record["plans"], form)}
    if out is not None:
        table.save(out)
    return table.calibration


FORMS: dict[str, tuple[str, ...]] = {
    "sum": ("lut_sum_ms",),
    "sum+act": ("lut_sum_ms", "act_melems"),
}


def fit(table: LatencyTable, graph: ModelGraph, rows: list[dict[str, Any]], form: str = "sum") -> dict[str, Any]:
    """Least squares on *relative* error: ``measured ~ offset + sum_f coef_f * feature_f``.

    Weighting each residual by 1/measured makes a 1 ms miss on a 5 ms plan count as much as a
    10 ms miss on a 50 ms plan, which is what "within 10 %" grades.
    """
    names = FORMS[form]
    sums = TableSum(table, graph)
    feats = [sums.features(_plan(table, graph, r["keep"])) for r in rows]
    x = np.array([[f[n] for n in names] + [1.0] for f in feats])
    y = np.array([Measurement.from_dict(r["measurement"]).median_ms for r in rows])
    sol, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    coef = {n: float(c) for n, c in zip(names, sol[:-1], strict=True)}
    if not coef["lut_sum_ms"] > 0:
        raise TableError(
            f"calibration failed: whole-model latency does not grow with the table sum (coefficient "
            f"{coef['lut_sum_ms']:.3g}); the machine was probably busy: re-measure it on a quiet machine with "
            "`hwprune profile ... --resume --recalibrate`"
        )
    errors = np.abs(x @ sol - y) / y * 100
    return {
        "form": "measured_ms = offset_ms + " + " + ".join(f"coef[{n}] * {n}" for n in names),
        "coef": coef,
        "offset_ms": float(sol[-1]),
        "in_sample_median_abs_pct": float(statistics.median(errors)),
        "in_sample_max_abs_pct": float(errors.max()),
        "features": feats,
        "measured_ms": [float(v) for v in y],
    }


def _plan(table: LatencyTable, graph: ModelGraph, keep: dict[str, int]) -> PruningPlan:
    return PruningPlan.full(str(table.settings["model"]), graph).with_keep({k: int(v) for k, v in keep.items()})
