"""Validate predictors against measured end-to-end latency on held-out random plans.

The held-out plans are i.i.d. random (each group keeps a uniform 20..100 % of its channels,
optionally rounded to a multiple, as ``--round-to`` searches produce), drawn from a seed of
their own; any plan that coincides with a calibration plan is skipped, so
the figures never grade the fit on its own data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from hwprune.errors import TableError
from hwprune.latency.calibrate import PairedMeter, PlanMeter, measure_rounds
from hwprune.latency.fit import apply_fit
from hwprune.latency.predictor import FlopsPredictor, LatencyPredictor, Predictor, SumPredictor
from hwprune.latency.table import LatencyTable
from hwprune.profilers.base import Profiler
from hwprune.profilers.measurement import Measurement
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan

WITHIN_PCT = 10.0


def heldout_plans(
    table: LatencyTable,
    graph: ModelGraph,
    count: int,
    seed: int,
    low: float = 0.2,
    high: float = 1.0,
    round_to: int = 1,
) -> list[PruningPlan]:
    """``count`` distinct random plans, none a calibration plan; ``round_to`` rounds every width (aligned plans)."""
    model_name = str(table.settings["model"])
    used = {
        tuple(sorted((k, int(v)) for k, v in r["keep"].items())) for r in (table.calibration or {}).get("plans", [])
    }
    rng = np.random.default_rng(seed)
    plans: list[PruningPlan] = []
    seen = set(used)
    for _ in range(count * 20):
        if len(plans) == count:
            break
        plan = PruningPlan.random(model_name, graph, rng, low=low, high=high, round_to=round_to)
        key = tuple(sorted(plan.keep.items()))
        if key not in seen:
            seen.add(key)
            plans.append(plan)
    return plans


def error_stats(predicted: list[float], measured: list[float]) -> dict[str, float]:
    """Median / p95 absolute percentage error, the share within +-10 %, and the mean signed error (bias)."""
    p, m = np.asarray(predicted), np.asarray(measured)
    signed = (p - m) / m * 100
    err = np.abs(signed)
    return {
        "median_abs_pct": float(np.median(err)),
        "p95_abs_pct": float(np.percentile(err, 95)),
        "max_abs_pct": float(err.max()),
        "within_10pct": float(np.mean(err <= WITHIN_PCT)),
        "mean_signed_pct": float(signed.mean()),
    }


def check(
    table: LatencyTable,
    model: nn.Module,
    graph: ModelGraph,
    profiler: Profiler,
    plans: list[PruningPlan],
    progress: bool = True,
    measure: Callable[[PruningPlan], Measurement] | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Measure every plan end to end (``rounds`` times, default the table's) and score all three predictors.

    ``measure`` defaults to timing each plan alone; pass :func:`paired_meter` to read every plan at
    the table's reference speed, as the calibration was (``lut-check``'s default).
    """
    s = table.settings
    measure = measure or PlanMeter.for_table(table, model, graph, profiler)
    calibrated = Predictor(table, graph)
    full_ms = calibrated_full_ms(table, graph) or measure(PruningPlan.full(str(s["model"]), graph)).median_ms
    predictors: list[LatencyPredictor] = [calibrated, SumPredictor(table, graph), FlopsPredictor(graph, full_ms)]
    start = time.perf_counter()
    rounds = rounds or table.required_rounds()
    results = measure_rounds(plans, measure, rounds, "measuring held-out plans", progress)
    rows = [
        {
            "keep": plan.keep,
            "keep_ratio": plan.keep_ratio(),
            "measured_ms": m.median_ms,
            "measured_iqr_ms": m.iqr_ms,
            "rounds": n,
            "predicted_ms": {p.name: p.predict_ms(plan) for p in predictors},
        }
        for plan, (m, n, _) in zip(plans, results, strict=True)
    ]
    unstable = sum(u for _, _, u in results)
    measured = [r["measured_ms"] for r in rows]
    return {
        "model": s["model"],
        "backend": table.backend,
        "batch": s["batch"],
        "input_size": s["input_size"],
        "plans": len(rows),
        "rounds": rounds,
        "calibrated": calibrated.calibrated,
        "calibration": calibrated.describe(),
        "full_model_measured_ms": full_ms,
        "protocol": "paired" if isinstance(measure, PairedMeter) else "alone",
        "unpruned_alongside": measure.summary() if isinstance(measure, PairedMeter) else None,
        "unstable_measurements": unstable,
        "seconds": time.perf_counter() - start,
        "predictors": {p.name: error_stats([r["predicted_ms"][p.name] for r in rows], measured) for p in predictors},
        "rows": rows,
    }


def check_table(
    table: LatencyTable,
    model: nn.Module,
    graph: ModelGraph,
    profiler: Profiler,
    *,
    plans: int = 20,
    seed: int = 0,
    round_to: int = 1,
    paired: bool = True,
    rounds: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole ``lut-check``: ``plans`` held-out random plans of ``model`` measured and predicted.

    ``paired`` reads each plan right after the unpruned model, at the speed the table was calibrated
    at (so drift of the machine since profiling is not graded as the table's error); without it each
    plan is timed alone, at whatever speed the machine runs now.
    """
    held = heldout_plans(table, graph, plans, seed, round_to=round_to)
    measure = paired_meter(table, model, graph, profiler) if paired else None
    report = check(table, model, graph, profiler, held, progress=progress, rounds=rounds, measure=measure)
    return report | {"seed": seed, "round_to": round_to, "device_key": profiler.device_key()}


def paired_meter(table: LatencyTable, model: nn.Module, graph: ModelGraph, profiler: Profiler) -> PairedMeter:
    """Times plans right after the unpruned model and reads them at the speed the table was calibrated at."""
    full = PruningPlan.full(str(table.settings["model"]), graph)
    return PairedMeter(PlanMeter.for_table(table, model, graph, profiler), full, calibrated_full_ms(table, graph))


def calibrated_full_ms(table: LatencyTable, graph: ModelGraph) -> float | None:
    """The unpruned model's latency at calibration: the paired reference, or (older tables) its own row.

    None for a table without calibration.
    """
    if (table.calibration or {}).get("reference_ms"):
        return float(table.calibration["reference_ms"])
    full = PruningPlan.full(str(table.settings["model"]), graph).keep
    for r in (table.calibration or {}).get("plans", []):
        if {k: int(v) for k, v in r["keep"].items()} == full:
            return Measurement.from_dict(r["measurement"]).median_ms
    return None


def compare_forms(table: LatencyTable, graph: ModelGraph, report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Held-out error of every calibration form, refitted on the table's own calibration plans.

    Costs no measurement: the held-out rows already hold measured latencies, so this is how the
    default form was chosen (docs/latency.md).
    """
    from hwprune.latency.fit import FORMS, TableSum, fit

    rows = (table.calibration or {}).get("plans", [])
    sums = TableSum(table, graph)
    model_name = str(table.settings["model"])
    feats = [sums.features(PruningPlan.full(model_name, graph).with_keep(r["keep"])) for r in report["rows"]]
    measured = [r["measured_ms"] for r in report["rows"]]
    out: dict[str, dict[str, Any]] = {}
    for form in ("auto", *FORMS):
        try:
            f = fit(table, graph, rows, form)
        except TableError as exc:
            out[form] = {"failed": str(exc)}
            continue
        predicted = [apply_fit(f["coef"], f["offset_ms"], x) for x in feats]
        out[form] = {
            "chosen": f["form"],
            "coef": f["coef"],
            "offset_ms": f["offset_ms"],
            **error_stats(predicted, measured),
        }
    return out
