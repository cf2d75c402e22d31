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

from typing import Any, Protocol

from hwprune.errors import TableError
from hwprune.latency.table import LatencyTable, Signature
from hwprune.pruning.graph import LayerShape, ModelGraph
from hwprune.pruning.plan import PruningPlan


class LatencyPredictor(Protocol):
    """What agents see of latency: a number of milliseconds for a plan."""

    name: str

    def predict_ms(self, plan: PruningPlan) -> float: ...


class TableSum:
    """Sum of the table's interpolated block latencies over a model's layers (the raw LUT estimate)."""

    def __init__(self, table: LatencyTable, graph: ModelGraph, corrected: bool = True) -> None:
        self.table = table
        self.graph = graph
        self.corrected = corrected  # off-grid lookups scaled by the table's off_grid_factor
        self.batch = int(table.settings["batch"])
        self.dtype = str(table.settings.get("dtype", "float32"))
        self.quantum = int(table.settings.get("quantum", 1))
        self._layers = [
            (s.name, Signature.of(s, self.batch, self.dtype).key(), (s.c_in, s.c_out)) for s in graph.layer_shapes()
        ]
        missing = sorted({sig for _, sig, _ in self._layers if sig not in table.grids})
        if missing:
            raise TableError(
                f"latency table ({table.settings.get('model')!r}, batch {self.batch}) has no entries for "
                f"{len(missing)} layer signature(s) of this model, e.g. {missing[0]}: profile this model and setting"
            )

    def sum_ms(self, plan: PruningPlan | None) -> float:
        return self.features(plan)["lut_sum_ms"]

    def features(self, plan: PruningPlan | None) -> dict[str, float]:
        """The calibration's inputs for a plan: the table sum and three volumes, in millions of elements.

        The activation volume (sum over layers of batch * c_out * out H * out W) stands for the
        work that grows with a layer's *width* rather than its width squared: residual adds,
        pooling, memory traffic between layers. The weight volume stands for weights streamed from
        memory in a whole model, which an isolated block keeps in cache. The aligned volume (input
        plus output tensors of convolutions whose widths are multiples of the table's quantum)
        stands for layout reorders: ONNX Runtime runs such a convolution in a blocked layout, so
        the block timed alone pays a reorder in and out, while a run of aligned layers in a whole
        model pays none (we measured all-aligned ResNet-20 plans at 0.72x their table sum).
        """
        keep = plan.keep if plan is not None else None
        total = act = weights = aligned = 0.0
        for (_, sig, full), shape in zip(self._layers, self.graph.layer_shapes(keep), strict=True):
            total += self.table.lookup_ms(sig, shape.c_in, shape.c_out, full=full, corrected=self.corrected)
            out_vol = shape.c_out * shape.out_hw[0] * shape.out_hw[1]
            act += out_vol
            weights += shape.c_out * (1 if shape.depthwise else shape.c_in) * shape.kernel**2
            if self._aligned(shape):
                aligned += out_vol + shape.c_in * shape.in_hw[0] * shape.in_hw[1]
        return {
            "lut_sum_ms": total,
            "act_melems": act * self.batch / 1e6,
            "weight_melems": weights / 1e6,
            "aligned_melems": aligned * self.batch / 1e6,
        }

    def _aligned(self, shape: LayerShape) -> bool:
        """A convolution the runtime can run in its blocked layout (the stem reads fewer channels than a block)."""
        q = self.quantum
        return q > 1 and shape.kind == "conv" and shape.c_out % q == 0 and (shape.c_in % q == 0 or shape.c_in < q)


def apply_fit(coef: dict[str, float], offset_ms: float, features: dict[str, float]) -> float:
    """A calibration fit evaluated on one plan's features: ``offset_ms + sum_f coef[f] * features[f]``."""
    return offset_ms + sum(c * features[k] for k, c in coef.items())


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
            from hwprune.latency.calibrate import fit as fit_calibration

            fit = fit_calibration(table, graph, calibration["plans"], str(table.settings.get("calib_form", "auto")))
        self.calibrated = bool(fit)
        self.coef: dict[str, float] = {k: float(v) for k, v in fit["coef"].items()} if fit else {"lut_sum_ms": 1.0}
        self.offset_ms = float(fit["offset_ms"]) if fit else 0.0

    def predict_ms(self, plan: PruningPlan) -> float:
        return self.apply(self._sum.features(plan))

    def apply(self, features: dict[str, float]) -> float:
        return apply_fit(self.coef, self.offset_ms, features)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "calibrated": self.calibrated, "coef": self.coef, "offset_ms": self.offset_ms}
