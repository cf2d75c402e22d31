"""Fit the table sum to whole-model latency on a few measured plans, and keep the evidence.

The plans are deterministic (seeded), span the range an agent explores (from the unpruned model
down to about a fifth of each group) and are saved in the table with their measurements, so
anyone can see what the fit rests on and ``lut-check`` can make sure it never validates on them.
Each measured plan is written into the table as soon as it completes, like the blocks, so
``--resume`` does not repeat them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from hwprune.errors import ConfigError, TableError
from hwprune.latency.fit import fit
from hwprune.latency.table import LatencyTable
from hwprune.profilers.base import Profiler, counting_unstable
from hwprune.profilers.measurement import Measurement, keep_faster
from hwprune.progress import bars_off
from hwprune.pruning.apply import apply_plan
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan

MIN_PLANS = 3  # two parameters and at least one degree of freedom to expose a bad fit


def check_plan_count(count: int, flag: str) -> None:
    """Refuse a calibration size the fit cannot use (0 turns calibration off), naming the option that set it."""
    if count < 0 or 0 < count < MIN_PLANS:
        raise ConfigError(f"{flag} must be 0 (no calibration) or >= {MIN_PLANS}, got {count}")


NARROW_RATIO = 0.15
"""Keep ratio of the narrow calibration plan, near the agents' floor (minimum keep ratio 0.1)."""


def calibration_plans(model_name: str, graph: ModelGraph, count: int, seed: int, quantum: int = 1) -> list[PruningPlan]:
    """The unpruned model, ``count - 2`` random plans cycling three kinds, and one narrow uniform plan.

    Plans drawn around a level (every group within +-0.25 of 0.2 .. 1.0) spread the fit over
    the whole latency range an agent searches; i.i.d. plans (each group 20..100 %) cover the
    uneven widths agents and ``lut-check`` produce; aligned plans (i.i.d. widths rounded to the
    table's ``quantum``) cover the hardware-friendly widths of ``--round-to`` searches and uniform
    plans, which ONNX Runtime runs well under their table sum. A fit on one kind alone biases
    the others, aligned plans most (docs/latency.md, "Calibration plans and forms").
    The narrow plan (every group at 15 %) anchors the low end, where a 0.3x budget lands and random
    plans never reach: without it the fit extrapolates there, and isolated blocks each pay the
    runtime's per-call overhead that a whole model pays once, so the table over-prices narrow models
    (docs/latency.md, "What we learned").
    """
    rng = np.random.default_rng(seed)
    plans = [PruningPlan.full(model_name, graph)]
    kinds = 3 if quantum > 1 else 2
    levels = max((count - 2 + kinds - 1) // kinds, 1)
    for i in range(count - 2):
        if i % kinds == 0:
            level = 0.2 + 0.8 * (i // kinds + 0.5) / levels
            low, high = max(0.1, level - 0.25), min(1.0, level + 0.25)
            plans.append(PruningPlan.random(model_name, graph, rng, low=low, high=high))
        else:
            round_to = quantum if i % kinds == 2 else 1
            plans.append(PruningPlan.random(model_name, graph, rng, low=0.2, high=1.0, round_to=round_to))
    if count > 1:
        plans.append(PruningPlan.uniform(model_name, graph, NARROW_RATIO))
    return plans


class PlanMeter:
    """Measures pruned variants of one model end to end, pruning (and deploying) each variant once.

    Rounds re-measure the same variants minutes apart; pruning a torchvision model takes ~2 s and
    exporting it to ONNX ~5 s, so both are done once per plan (``Profiler.deploy``) and kept for the
    later rounds.
    """

    def __init__(self, model: nn.Module, graph: ModelGraph, profiler: Profiler, input_shape: tuple[int, ...]) -> None:
        self.model, self.graph, self.profiler, self.input_shape = model, graph, profiler, tuple(input_shape)
        self._deployed: dict[tuple[int, ...], Callable[[], Measurement]] = {}

    @classmethod
    def for_table(cls, table: LatencyTable, model: nn.Module, graph: ModelGraph, profiler: Profiler) -> PlanMeter:
        """A meter at the table's deployment setting (batch, channels, input size)."""
        s = table.settings
        return cls(model, graph, profiler, (int(s["batch"]), int(s["in_channels"]), *[int(v) for v in s["input_size"]]))

    def __call__(self, plan: PruningPlan) -> Measurement:
        key = plan.key()
        if key not in self._deployed:
            pruned, _ = apply_plan(self.model, plan, self.graph)
            self._deployed[key] = self.profiler.deploy(pruned, self.input_shape)
        return self._deployed[key]()


SPELL = 0.15
"""An unpruned reading this far over the recent ones is taken again (twice at most), the fastest kept."""


class PairedMeter:
    """Times each plan right after the unpruned model and reads it at one reference speed of the machine.

    A shared host moves between speed states that last seconds to minutes and slow every model
    alike, so a calibration measured in one state and checked in another is off by the
    difference. The unpruned model timed just before a plan shares the plan's state, so the plan's
    samples are scaled by ``reference_ms / unpruned now``: what is left is the noise of two
    measurements, not the drift (docs/latency.md, "Pairing"). ``reference_ms`` is a table's
    (``lut-check``) or, while calibrating, the first unpruned reading, re-based on the median of
    all of them at the end.

    Shorter spells slow a single measurement. Caught on the unpruned reading, a spell would scale
    its plan down as much, and the faster of a plan's rounds then *prefers* that round. So an
    unpruned reading more than ``SPELL`` over the median of the last five is taken again, up to
    twice, and the fastest is the one used and kept in ``alongside_ms``; the first, with nothing to
    judge it by, is always taken twice.
    """

    def __init__(
        self,
        meter: Callable[[PruningPlan], Measurement],
        full: PruningPlan,
        reference_ms: float | None = None,
        alongside_ms: list[float] | None = None,
        retaken: int = 0,
    ) -> None:
        self.meter, self.full, self.reference_ms = meter, full, reference_ms
        self.alongside_ms = list(alongside_ms or [])  # every unpruned reading used: the machine's speed
        self.retaken = retaken  # unpruned readings taken again because they looked like a spell

    def unpruned_now(self) -> float:
        """The unpruned model's median now, taken again while it sits a spell over the recent readings."""
        readings = [self.meter(self.full).median_ms]
        if not self.alongside_ms:  # nothing recent to judge the first reading by: take two
            readings.append(self.meter(self.full).median_ms)
        recent = statistics.median(self.alongside_ms[-5:]) if self.alongside_ms else None
        while recent is not None and len(readings) < 3 and min(readings) > (1 + SPELL) * recent:
            readings.append(self.meter(self.full).median_ms)
            self.retaken += 1
        self.alongside_ms.append(min(readings))
        return min(readings)

    def __call__(self, plan: PruningPlan) -> Measurement:
        now = self.unpruned_now()
        if self.reference_ms is None:
            self.reference_ms = now
        return self.meter(plan).scaled(self.reference_ms / now)

    def summary(self) -> dict[str, float | int | None]:
        """The reference and the unpruned readings beside the plans (their spread is the drift taken out)."""
        a = self.alongside_ms
        return {
            "reference_ms": self.reference_ms,
            "readings": len(a),
            "retaken": self.retaken,
            "min_ms": min(a, default=None),
            "median_ms": statistics.median(a) if a else None,
            "max_ms": max(a, default=None),
        }


def measure_rounds(
    plans: list[PruningPlan],
    measure: Callable[[PruningPlan], Measurement],
    rounds: int,
    desc: str,
    progress: bool = True,
    done: list[tuple[Measurement | None, int]] | None = None,
    on_result: Callable[[int, Measurement, int, bool], None] | None = None,
) -> list[tuple[Measurement, int, bool]]:
    """Measure every plan ``rounds`` times, round-robin so a plan's runs are minutes apart; keep the faster.

    ``done`` carries (measurement, rounds) already recorded (resume); ``on_result(i, kept, rounds,
    unstable)`` is called after every run so callers can save as they go.
    """
    state: list[tuple[Measurement | None, int]] = list(done) if done is not None else [(None, 0)] * len(plans)
    unstable = [False] * len(plans)
    todo = [(r, i) for r in range(1, rounds + 1) for i in range(len(plans)) if state[i][1] < r]
    for _, i in tqdm(todo, desc=desc, unit="run", disable=bars_off(progress) or not todo):
        m, shaky = counting_unstable(measure, plans[i])
        kept = keep_faster(state[i][0], m)
        state[i] = (kept, state[i][1] + 1)
        unstable[i] = unstable[i] or shaky
        if on_result is not None:
            on_result(i, kept, state[i][1], unstable[i])
    return [(m, n, u) for (m, n), u in zip(state, unstable, strict=True) if m is not None]


def calibrate(
    table: LatencyTable,
    model: nn.Module,
    graph: ModelGraph,
    profiler: Profiler,
    out: Path | None = None,
    progress: bool = True,
    measure: Callable[..., Measurement] | None = None,
) -> dict[str, Any]:
    """Measure the calibration plans (each ``rounds`` times, paired) not yet in the table, then fit and store the fit.

    Every plan is timed right after the unpruned model (:class:`PairedMeter`) and stored at the
    machine speed of ``calibration["reference_ms"]``, the median unpruned reading; the readings
    themselves are kept in ``calibration["alongside_ms"]``.
    """
    s = table.settings
    count, seed = int(s.get("calib_plans", 0)), int(s.get("calib_seed", 0))
    if count < MIN_PLANS:
        raise TableError(f"calibration needs at least {MIN_PLANS} plans, got {count}")
    plans = calibration_plans(str(s["model"]), graph, count, seed, int(s.get("quantum", 1)))
    cal = table.calibration or {}
    old = {tuple(sorted(r["keep"].items())): r for r in cal.get("plans", [])}
    rows: list[dict[str, Any] | None] = [old.get(tuple(sorted(p.keep.items()))) for p in plans]
    done = [(Measurement.from_dict(r["measurement"]), int(r.get("rounds", 1))) if r else (None, 0) for r in rows]
    # plans[0] is the unpruned model; every row is stored at the speed of ``reference_ms``
    paired = PairedMeter(
        measure or PlanMeter.for_table(table, model, graph, profiler),
        plans[0],
        cal.get("reference_ms"),
        cal.get("alongside_ms"),
        int(cal.get("retaken", 0)),
    )

    def store(extra: dict[str, Any] | None = None) -> None:
        table.calibration = {
            "plans": [r for r in rows if r is not None],
            "reference_ms": paired.reference_ms,
            "alongside_ms": paired.alongside_ms,
            "retaken": paired.retaken,
        } | (extra or {})
        if out is not None:
            table.save(out)

    def record(i: int, kept: Measurement, rounds: int, unstable: bool) -> None:
        rows[i] = {"keep": plans[i].keep, "rounds": rounds, "unstable": unstable, "measurement": kept.to_dict()}
        store()

    measure_rounds(plans, paired, table.required_rounds(), "calibrating on whole models", progress, done, record)
    if paired.alongside_ms and paired.reference_ms:
        # Re-base from the first unpruned reading to the median of all of them: one reading is one state.
        median = statistics.median(paired.alongside_ms)
        factor, paired.reference_ms = median / paired.reference_ms, median
        for r in rows:
            if r is not None:
                r["measurement"] = Measurement.from_dict(r["measurement"]).scaled(factor).to_dict()
    finished = [r for r in rows if r is not None]
    store({"fit": fit(table, graph, finished, str(s.get("calib_form", "auto")))})
    return table.calibration
