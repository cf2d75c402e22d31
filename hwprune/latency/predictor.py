"""Predict a model's latency under any PruningPlan: the calibrated predictor and two references.

The sum of per-layer block timings misses what a whole model adds (residual adds, pooling,
the head, framework overhead per op, memory traffic between layers, fusion across blocks). Most
of that scales with the same work the blocks do or is a constant, so a small least-squares fit
on a few whole-model measurements, ``measured ~ a * sum + b``, removes it; the calibration lives
in the table, so every later prediction on that device reuses it.

The two references exist to show what the calibration buys: the plain sum of isolated block
timings (NetAdapt's estimate) and a FLOPs-proportional estimate (measured full-model latency
scaled by the plan's share of MACs), which is what FLOPs-based pruning implicitly assumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hwprune.latency.fit import IncrementalSum, TableSum, apply_fit
from hwprune.latency.fit import fit as fit_calibration
from hwprune.latency.table import LatencyTable
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan


class LatencyPredictor(Protocol):
    """What agents see of latency: a number of milliseconds for a plan."""

    name: str

    def predict_ms(self, plan: PruningPlan) -> float: ...


class SumPredictor:
    """NetAdapt-style reference: the plain, uncalibrated sum of isolated block timings."""

    name = "lut-sum"

    def __init__(self, table: LatencyTable, graph: ModelGraph) -> None:
        self._sum = TableSum(table, graph)

    def predict_ms(self, plan: PruningPlan) -> float:
        return self._sum.sum_ms(plan)


class FlopsPredictor:
    """FLOPs-proportional reference: measured full-model latency times the plan's share of MACs."""

    name = "flops"

    def __init__(self, graph: ModelGraph, full_ms: float) -> None:
        self.graph = graph
        self.full_ms = full_ms
        self._full_macs = sum(s.macs for s in graph.layer_shapes())

    def predict_ms(self, plan: PruningPlan) -> float:
        macs = sum(s.macs for s in self.graph.layer_shapes(plan.keep))
        return self.full_ms * macs / self._full_macs

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "full_ms": self.full_ms, "full_macs": self._full_macs}


class Predictor:
    """The calibrated predictor: a linear function of the table sum (and the volume features) fitted per table.

    Without a calibration in the table it falls back to the plain sum and says so through
    ``calibrated``; callers that need honest numbers should check it.
    """

    name = "calibrated"

    def __init__(self, table: LatencyTable, graph: ModelGraph) -> None:
        self.table = table
        self.graph = graph
        self._sum = TableSum(table, graph)
        calibration = table.calibration or {}
        fit = calibration.get("fit")
        if fit and calibration.get("plans"):
            # Refitted from the stored measurements: a table profiled by an earlier version is then read
            # with this version's interpolation and features (the file's fit is what that version found).
            fit = fit_calibration(table, graph, calibration["plans"], str(table.settings.get("calib_form", "auto")))
        self.calibrated = bool(fit)
        self.coef: dict[str, float] = {k: float(v) for k, v in fit["coef"].items()} if fit else {"lut_sum_ms": 1.0}
        self.offset_ms = float(fit["offset_ms"]) if fit else 0.0

    def predict_ms(self, plan: PruningPlan) -> float:
        return self.apply(self._sum.features(plan))

    def sweep(self) -> Callable[[PruningPlan], float]:
        """``predict_ms`` for a run of plans that each move a few groups from the last (LeGR's threshold
        sweep prices thousands): only the layers a moved group touches are looked up again."""
        features = IncrementalSum(self._sum).features
        return lambda plan: self.apply(features(plan))

    def apply(self, features: dict[str, float]) -> float:
        return apply_fit(self.coef, self.offset_ms, features)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "calibrated": self.calibrated, "coef": self.coef, "offset_ms": self.offset_ms}
