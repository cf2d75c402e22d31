"""Open a latency table for use on this machine: verify the device, rebuild its profiler and predictor.

Every consumer (``lut-check``, ``prune``, benchmarks) goes through here so the foreign-table check
cannot be forgotten: the profiler is rebuilt from the table's own settings (backend, threads,
repeats), its device key is compared with the table's, and only then is the table handed out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from hwprune.latency.allocator import pin_allocator
from hwprune.latency.predictor import Predictor
from hwprune.latency.table import LatencyTable
from hwprune.profilers import Profiler, get_profiler
from hwprune.pruning.graph import ModelGraph


def _protocol(s: Mapping[str, Any]) -> dict[str, Any]:
    """How a table's points were timed, from its settings: warm-up (runs and seconds), samples per run, runs."""
    return {
        "warmup": int(s["warmup"]),
        "warmup_s": float(s["warmup_s"]),
        "repeats": int(s["repeats"]),
        "runs": int(s.get("runs", 1)),
    }


def profiler_for(table: LatencyTable, **overrides: Any) -> Profiler:
    """A profiler measuring the way the table was measured (``overrides`` e.g. repeats=50)."""
    pin_allocator()  # the table was measured under it (see allocator.py)
    kwargs: dict[str, Any] = {"threads": int(table.settings["threads"])} | _protocol(table.settings)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return get_profiler(table.backend, **kwargs)


def timing_like(settings: Mapping[str, Any], profiler: Profiler) -> Profiler:
    """A copy of ``profiler`` (same device and threads) that times the way a table of ``settings`` is timed.

    A prune job warms up 1 s before each whole-model measurement (after an idle pause the first
    runs are slow), but a block it adds to the table joins points timed with the table's own
    protocol (``hwprune profile``'s warm-up is 20 ms), and must be timed like them; timed with the
    job's, densifying a few dozen sub-millisecond blocks would be nearly all warm-up.
    """
    timed = copy.copy(profiler)
    vars(timed).update(_protocol(settings))
    return timed


def load_table(path: str | Path, allow_foreign: bool = False, **overrides: Any) -> tuple[LatencyTable, Profiler]:
    """Load and verify ``path`` against this machine; returns the table and a matching profiler."""
    table = LatencyTable.load(path)
    profiler = profiler_for(table, **overrides)
    table.verify_device(profiler.device_key(), allow_foreign, source=str(path))
    return table, profiler


def model_for(table: LatencyTable) -> tuple[nn.Module, ModelGraph]:
    """The (randomly initialised) model the table was made for, and its graph at the table's input size."""
    from hwprune.models import create_model

    s = table.settings
    model = create_model(str(s["model"]), int(s["in_channels"]), int(s["num_classes"]))
    return model, ModelGraph(model, (int(s["in_channels"]), *[int(v) for v in s["input_size"]]))


def load_predictor(path: str | Path, graph: ModelGraph | None = None, allow_foreign: bool = False) -> Predictor:
    """The calibrated predictor of the table at ``path``, for ``graph`` (default: the table's own model)."""
    table, _ = load_table(path, allow_foreign)
    return Predictor(table, graph if graph is not None else model_for(table)[1])
