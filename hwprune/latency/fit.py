"""The calibration's features and fit: the table sum over a model's layers, and a small linear fit of it to
whole-model measurements (what ``calibrate`` stores in a table and ``Predictor`` reads back).

The predictor and the calibration both need these; keeping them here lets each import them
without importing the other.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from hwprune.errors import TableError
from hwprune.latency.table import LatencyTable, Signature
from hwprune.profilers.measurement import Measurement
from hwprune.pruning.graph import LayerShape, ModelGraph
from hwprune.pruning.plan import PruningPlan


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
        model pays none (all-aligned plans run well under their table sum; docs/latency.md).
        """
        keep = plan.keep if plan is not None else None
        shapes = self.graph.layer_shapes(keep)
        return self.total([self.layer_terms(i, shape) for i, shape in enumerate(shapes)])

    def layer_terms(self, index: int, shape: LayerShape) -> tuple[float, float, float, float]:
        """Layer ``index``'s share of each feature under ``shape``: block ms, activation, weight and aligned volume."""
        _, sig, full = self._layers[index]
        out_vol = shape.c_out * shape.out_hw[0] * shape.out_hw[1]
        weights = shape.c_out * (1 if shape.depthwise else shape.c_in // shape.groups) * shape.kernel**2
        aligned = out_vol + shape.c_in * shape.in_hw[0] * shape.in_hw[1] if self._aligned(shape) else 0
        ms = self.table.lookup_ms(sig, shape.c_in, shape.c_out, full=full, corrected=self.corrected)
        return ms, out_vol, weights, aligned

    def total(self, terms: list[tuple[float, float, float, float]]) -> dict[str, float]:
        """The features from every layer's terms, summed in layer order."""
        ms, act, weights, aligned = (sum(column, 0.0) for column in zip(*terms, strict=True))
        return {
            "lut_sum_ms": ms,
            "act_melems": act * self.batch / 1e6,
            "weight_melems": weights / 1e6,
            "aligned_melems": aligned * self.batch / 1e6,
        }

    def _aligned(self, shape: LayerShape) -> bool:
        """A convolution the runtime can run in its blocked layout (the stem reads fewer channels than a block)."""
        q = self.quantum
        return q > 1 and shape.kind == "conv" and shape.c_out % q == 0 and (shape.c_in % q == 0 or shape.c_in < q)


class IncrementalSum:
    """:meth:`TableSum.features` for plans that each move a few groups from the last (a threshold sweep).

    Only the layers tied to a moved group are looked up again; the rest keep their terms. The result
    equals ``TableSum.features`` of the same plan bit for bit (the same terms, summed in the same
    order), so a sweep chooses exactly the plan that pricing each plan afresh would.
    """

    def __init__(self, tsum: TableSum) -> None:
        self.tsum = tsum
        self._index = {name: i for i, name in enumerate(tsum.graph.layer_names())}
        self._keep: dict[str, int] | None = None
        self._terms: list[tuple[float, float, float, float]] = []

    def features(self, plan: PruningPlan) -> dict[str, float]:
        graph, keep = self.tsum.graph, plan.keep  # ``keep`` is built afresh on each read: read it once
        if self._keep is None:
            self._terms = [self.tsum.layer_terms(i, s) for i, s in enumerate(graph.layer_shapes(keep))]
        else:
            moved = [g for g in keep.keys() | self._keep.keys() if keep.get(g) != self._keep.get(g)]
            for layer in set().union(*(graph.layers_of(g) for g in moved)):
                i = self._index[layer]
                self._terms[i] = self.tsum.layer_terms(i, graph.layer_shape(layer, keep))
        self._keep = keep
        return self.tsum.total(self._terms)


def apply_fit(coef: dict[str, float], offset_ms: float, features: dict[str, float]) -> float:
    """A calibration fit evaluated on one plan's features: ``offset_ms + sum_f coef[f] * features[f]``."""
    return offset_ms + sum(c * features[k] for k, c in coef.items())


# name -> (features, with an offset, fitted). "identity" is the plain table sum: nothing fitted.
FORMS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "identity": (("lut_sum_ms",), False, False),
    "scale": (("lut_sum_ms",), False, True),
    "sum": (("lut_sum_ms",), True, True),
    "sum+act": (("lut_sum_ms", "act_melems"), True, True),
    "sum+act+weights": (("lut_sum_ms", "act_melems", "weight_melems"), True, True),
    "scale+aligned": (("lut_sum_ms", "aligned_melems"), False, True),
    "sum+aligned": (("lut_sum_ms", "aligned_melems"), True, True),
}
#: what "auto" chooses among, simplest first (a tie goes to the simpler form)
AUTO_FORMS = ("identity", "scale", "sum", "sum+act", "scale+aligned", "sum+aligned")
#: backends that run op by op, each op on plain-layout tensors: no layout is carried across layers, so
#: the aligned-volume term (reorders a graph runtime skips between aligned layers) describes nothing there
EAGER_BACKENDS = ("torch-cpu", "torch-cuda")


def auto_forms(backend: str) -> tuple[str, ...]:
    """The forms "auto" may choose for a table of ``backend``.

    An eager backend carries no layout between ops, so there the aligned term can only fit the
    noise of a few calibration plans: it can win leave-one-out and still miss held-out plans
    (docs/latency.md, "Calibration plans and forms").
    """
    return tuple(f for f in AUTO_FORMS if "aligned" not in f) if backend in EAGER_BACKENDS else AUTO_FORMS


def _solve(x: np.ndarray, y: np.ndarray, offset: bool, fitted: bool = True, iterations: int = 20) -> np.ndarray:
    """Least *absolute* relative error; returns coefficients, then the offset (0 without one).

    Relative: a 1 ms miss on a 5 ms plan counts as much as a 10 ms miss on a 50 ms plan, which is
    what "within 10 %" grades. Absolute (L1, by iteratively reweighted least squares) rather than
    squared: one calibration plan caught by a slow spell of the host would otherwise tilt the
    whole line, while the L1 fit follows the majority of plans and ignores it. An unfitted form
    keeps every coefficient at 1 and no offset.
    """
    if not fitted:
        return np.append(np.ones(x.shape[1]), 0.0)
    design = (np.hstack([x, np.ones((len(y), 1))]) if offset else x) / y[:, None]
    target = np.ones_like(y)
    weights = np.ones_like(y)
    for _ in range(iterations):
        sol, *_ = np.linalg.lstsq(design * weights[:, None], target * weights, rcond=None)
        weights = 1.0 / np.sqrt(np.maximum(np.abs(design @ sol - target), 1e-4))
    return sol if offset else np.append(sol, 0.0)


def _predict(x: np.ndarray, sol: np.ndarray) -> np.ndarray:
    return x @ sol[:-1] + sol[-1]


def loo_errors(x: np.ndarray, y: np.ndarray, offset: bool, fitted: bool = True) -> np.ndarray:
    """Leave-one-out absolute % errors: each calibration plan predicted by a fit on the others."""
    out = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred = _predict(x[i : i + 1], _solve(x[keep], y[keep], offset, fitted))[0]
        out.append(abs(pred - y[i]) / y[i] * 100)
    return np.array(out)


def fit(table: LatencyTable, graph: ModelGraph, rows: list[dict[str, Any]], form: str = "auto") -> dict[str, Any]:
    """Fit ``measured ~ offset + sum_f coef_f * feature_f`` on the calibration plans.

    ``auto`` picks, among :func:`auto_forms` (the plain table sum, a pure scale, scale + offset, and
    those plus an activation-volume or, off eager backends, aligned-volume term), the form with the lowest
    leave-one-out median error on the calibration plans. A
    parameter is worth fitting only when it predicts plans it was not fitted on: on ONNX Runtime
    the blocks are timed as deployed and the plain sum is already unbiased, so a scale + offset
    fitted on ten plans measured on a noisy host only adds the noise of those ten measurements
    (docs/latency.md).

    The table is read without its off-grid correction: the calibration plans are random, and
    the correction measures where *searches* land (``LatencyTable.off_grid_factor``); fitted
    through it, the fit would scale back out the bias it exists to add.
    """
    sums = TableSum(table, graph, corrected=False)
    feats = [sums.features(_plan(table, graph, r["keep"])) for r in rows]
    y = np.array([Measurement.from_dict(r["measurement"]).median_ms for r in rows])

    def design(names: tuple[str, ...]) -> np.ndarray:
        return np.array([[f[n] for n in names] for f in feats])

    loo: dict[str, float] = {}
    if form == "auto":
        candidates = auto_forms(table.backend)
        for name in candidates:
            names, offset, fitted = FORMS[name]
            loo[name] = float(np.median(loo_errors(design(names), y, offset, fitted)))
        form = min(candidates, key=lambda n: (round(loo[n], 6), candidates.index(n)))
    if form not in FORMS:
        raise TableError(f"unknown calibration form {form!r}: choose auto or one of {', '.join(FORMS)}")
    names, offset, fitted = FORMS[form]
    x = design(names)
    sol = _solve(x, y, offset, fitted)
    fallback = None
    if not sol[0] > 0:
        # Latency not growing with the table sum means the runs were disturbed; a negative slope
        # would make pruning look like slowing down, so fit a pure scale instead (always > 0).
        fallback = (
            f"the {form} fit had a non-positive slope ({sol[0]:.3g}): the machine was probably "
            "busy; fitted a pure scale instead. Re-measure on a quiet machine with "
            "`hwprune profile ... --resume --recalibrate`"
        )
        x, names, form = x[:, :1], names[:1], "scale"
        sol = _solve(x, y, False)
    coef = {n: float(c) for n, c in zip(names, sol[:-1], strict=True)}
    if not coef["lut_sum_ms"] > 0:
        raise TableError("calibration failed: the table sum is zero or negative; re-profile the table")
    errors = np.abs(_predict(x, sol) - y) / y * 100
    return {
        "form": form,
        "equation": "measured_ms = offset_ms + " + " + ".join(f"coef[{n}] * {n}" for n in coef),
        "coef": coef,
        "offset_ms": float(sol[-1]),
        "loo_median_abs_pct": loo or None,
        "in_sample_median_abs_pct": float(statistics.median(errors)),
        "in_sample_max_abs_pct": float(errors.max()),
        "fallback": fallback,
        "features": feats,
        "measured_ms": [float(v) for v in y],
    }


def _plan(table: LatencyTable, graph: ModelGraph, keep: dict[str, int]) -> PruningPlan:
    return PruningPlan.full(str(table.settings["model"]), graph).with_keep({k: int(v) for k, v in keep.items()})
