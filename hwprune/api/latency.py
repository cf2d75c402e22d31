"""Latency from Python: profile a device for a model, predict a plan, check a table against the device.

The same code as ``hwprune profile`` and ``hwprune lut-check``, for a model in memory: the table
is built by :func:`hwprune.latency.profile_model`, predictions come from the calibrated
:class:`~hwprune.latency.Predictor`, the check is :func:`hwprune.latency.validate.check_table`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from hwprune.api.model import model_spec
from hwprune.errors import ConfigError, ModelError
from hwprune.io import write_json
from hwprune.latency import LatencyTable, Predictor, TableSetting, model_for, parse_grid, profile_model, profiler_for
from hwprune.latency.build import BLOCK_WARMUP_S, DEFAULT_BLOCK_ROUNDS, DEFAULT_FRACTIONS
from hwprune.latency.calibrate import check_plan_count
from hwprune.latency.validate import check_table as _check_table
from hwprune.options import AT_LEAST_1, NON_NEGATIVE, REPEATS, Range
from hwprune.profilers import Profiler, available_profilers
from hwprune.pruning import ModelGraph, PruningPlan

log = logging.getLogger(__name__)

BACKEND_ALIASES = {"torch": "torch-cpu", "ort": "onnxruntime"}
"""Short names a Python user may type for the registered backends."""


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    backend: str | Profiler = "onnxruntime",
    threads: int | None = None,
    batch: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    grid: str | Sequence[float] = DEFAULT_FRACTIONS,
    quantum: int | None = None,
    repeats: int = 10,
    runs: int = 5,
    warmup: int = 10,
    warmup_s: float = BLOCK_WARMUP_S,
    calib_plans: int = 13,
    calib_seed: int = 1234,
    rounds: int = 2,
    block_rounds: int = DEFAULT_BLOCK_ROUNDS,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> LatencyTable:
    """Build the latency lookup table of ``model`` on this device (what ``hwprune profile`` does).

    ``input_shape`` is (C, H, W) or (N, C, H, W), N being the deployment batch (else ``batch``, default 1).
    ``backend`` names a profiler (``onnxruntime``, ``torch-cpu`` or ``torch``, ``torch-cuda``,
    ``tensorrt``) or is a :class:`~hwprune.profilers.Profiler` instance, which then times everything as
    it is configured. ``out`` writes the table as it fills (``resume=True`` continues an interrupted
    one). ``name`` is the model's name in the table (default: its class name). The other options are
    ``hwprune profile``'s. Returns the table; :func:`predictor` prices plans with it.
    """
    spec, batch = model_spec(model, input_shape, batch, name)
    _check_numbers(
        threads=(AT_LEAST_1, threads),
        repeats=(REPEATS, repeats),
        runs=(AT_LEAST_1, runs),
        warmup=(NON_NEGATIVE, warmup),
        warmup_s=(NON_NEGATIVE, warmup_s),
        quantum=(AT_LEAST_1, quantum),
        calib_seed=(NON_NEGATIVE, calib_seed),
        rounds=(AT_LEAST_1, rounds),
        block_rounds=(AT_LEAST_1, block_rounds),
    )
    check_plan_count(calib_plans, "calib_plans=")
    if out is None and resume:
        raise ConfigError("resume=True continues the table at out=: give out=")
    given = backend if isinstance(backend, Profiler) else None
    backend_name = given.name if given else backend_name_of(str(backend))
    fractions = parse_grid(grid if isinstance(grid, str) else ",".join(str(float(f)) for f in grid))
    setting = TableSetting(
        model=spec.name,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
        input_size=spec.input_size,
        batch=batch,
        backend=backend_name,
        threads=given.threads if given else (threads or os.cpu_count() or 1),
        repeats=given.repeats if given else repeats,
        runs=given.runs if given else runs,
        warmup=given.warmup if given else warmup,
        warmup_s=given.warmup_s if given else warmup_s,
        grid=fractions,
        quantum=quantum,
        calib_plans=calib_plans,
        calib_seed=calib_seed,
        rounds=rounds,
        block_rounds=block_rounds,
    )
    path = Path(out) if out is not None else None
    table, seconds = profile_model(
        setting, path, resume=resume, overwrite=overwrite, progress=progress, profiler=given, model=model
    )
    log.info(
        "%s on %s (batch %d, %dx%d): %d blocks over %d signatures in %.0fs + %.0fs calibration%s",
        spec.name,
        table.device_key(),
        batch,
        *spec.input_size,
        table.num_entries(),
        len(table.grids),
        seconds["blocks_s"],
        seconds["calibration_s"],
        f"; wrote {path}" if path else "",
    )
    return table


def backend_name_of(name: str) -> str:
    """A registered backend name (or one of :data:`BACKEND_ALIASES`), else one line naming the choices."""
    name = BACKEND_ALIASES.get(name, name)
    if name not in available_profilers():
        raise ConfigError(
            f"unknown backend {name!r}: choose one of {', '.join(available_profilers())} (or pass a Profiler)"
        )
    return name


def _check_numbers(**values: tuple[Range, Any]) -> None:
    """Each option's value is a number in its range (None: unset), or one line naming it as typed."""
    for flag, (allowed, value) in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{flag}= must be a number, got {value!r}")
        allowed.check(f"{flag}=", value)


def as_table(table: LatencyTable | str | Path) -> LatencyTable:
    """A table object, or the one at a path (read and checked for its kind and version, not its device)."""
    if isinstance(table, LatencyTable):
        return table
    if isinstance(table, (str, Path)):
        return LatencyTable.load(table)
    raise ConfigError(f"table must be a LatencyTable or the path of one, got {type(table).__name__}")


def graph_for(table: LatencyTable, model: nn.Module) -> ModelGraph:
    """``model``'s channel groups at the input the table was profiled for."""
    s = table.settings
    return ModelGraph(model, (int(s["in_channels"]), *(int(v) for v in s["input_size"])))


def predictor(table: LatencyTable | str | Path, model: nn.Module) -> Predictor:
    """The calibrated predictor of ``table`` for ``model`` (the model the table was profiled for).

    A model with layers the table has no entries for is refused in one line (re-profile it).
    """
    table = as_table(table)
    result = Predictor(table, graph_for(table, model))
    result.predict_ms(PruningPlan.full(str(table.settings["model"]), result.graph))  # missing layers fail now
    return result


def predict_ms(table: LatencyTable | str | Path, model: nn.Module, plan: PruningPlan | None = None) -> float:
    """Predicted milliseconds per batch of ``model`` pruned by ``plan`` (default: unpruned) on the table's device."""
    p = predictor(table, model)
    if plan is None:
        plan = PruningPlan.full(str(p.table.settings["model"]), p.graph)
    plan.validate(p.graph)
    return p.predict_ms(plan)


def check_table(
    table: LatencyTable | str | Path,
    model: nn.Module | None = None,
    *,
    plans: int = 20,
    seed: int = 0,
    round_to: int = 1,
    paired: bool = True,
    repeats: int | None = None,
    runs: int | None = None,
    rounds: int | None = None,
    backend: Profiler | None = None,
    allow_foreign: bool = False,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``plans`` random pruned variants of ``model`` and score the table's predictions (``lut-check``).

    ``model`` defaults to the table's own (a built-in model name); a table of your own model needs it.
    The device is checked against the table's (``allow_foreign`` to check a table from elsewhere);
    ``backend`` may be a :class:`~hwprune.profilers.Profiler` to time with instead of the table's own
    backend. Returns the report (``report["predictors"]["calibrated"]["median_abs_pct"]`` is the
    headline figure) and writes it as JSON to ``out`` when given.
    """
    source = str(table) if isinstance(table, (str, Path)) else "latency table"
    table = as_table(table)
    _check_numbers(
        plans=(AT_LEAST_1, plans),
        seed=(NON_NEGATIVE, seed),
        round_to=(AT_LEAST_1, round_to),
        repeats=(REPEATS, repeats),
        runs=(AT_LEAST_1, runs),
        rounds=(AT_LEAST_1, rounds),
    )
    profiler = backend if backend is not None else profiler_for(table, repeats=repeats, runs=runs)
    table.verify_device(profiler.device_key(), allow_foreign, source=source)
    if model is None:
        try:
            model, graph = model_for(table)
        except ModelError as exc:
            raise ConfigError(f"{exc}: a table of your own model is checked with check_table(table, model)") from None
    else:
        graph = graph_for(table, model)
    report = _check_table(
        table,
        model,
        graph,
        profiler,
        plans=plans,
        seed=seed,
        round_to=round_to,
        paired=paired,
        rounds=rounds,
        progress=progress,
    )
    if out is not None:
        write_json(out, report)
    calibrated = report["predictors"]["calibrated"]
    log.info(
        "%s: %d held-out plans, calibrated table median |error| %.1f%% (p95 %.1f%%)",
        report["model"],
        report["plans"],
        calibrated["median_abs_pct"],
        calibrated["p95_abs_pct"],
    )
    return report


__all__ = ["backend_name_of", "check_table", "predict_ms", "predictor", "profile"]
