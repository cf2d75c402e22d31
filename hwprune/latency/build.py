"""Planning and filling a latency table: which blocks to time, timing them, and surviving interruptions.

Layers that share a signature share measurements: each distinct (signature, c_in, c_out) point
is timed once however many layers need it. Each layer asks for a grid of its own widths
(fractions of its unpruned c_in and c_out; an axis that no group can prune, such as the stem's
image channels or the classifier's classes, stays a single point). As blocks complete the whole
table is rewritten atomically (at most once a second, and always on the way out), so Ctrl-C
or an error loses at most the block being timed, a hard kill at most a second of work, and
``--resume`` picks up at the first missing point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from hwprune.errors import ConfigError, TableError
from hwprune.latency.interp import Grid, axis_points, tier, tier_probes
from hwprune.latency.table import LatencyTable, Signature
from hwprune.profilers.base import Profiler, counting_unstable
from hwprune.profilers.fingerprint import device_key
from hwprune.progress import bars_off
from hwprune.pruning.graph import ModelGraph

SAVE_EVERY_S = 1.0
"""Rewrite the table at most this often while profiling (and always on exit, Ctrl-C or error):
rewriting a 500-entry JSON after every 5 ms block would cost more than the blocks."""

DEFAULT_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0)
"""Grid widths as fractions of each layer's full width; chosen by measurement (docs/latency.md)."""

GPU_QUANTUM = 8
"""Channel alignment NVIDIA GPUs reward: tensor-core tiles are multiples of 8 channels (FP16/TF32)."""


def default_quantum(backend: str) -> int:
    """The widest channel alignment ``backend`` rewards here: the host's SIMD width in floats on CPUs.

    ONNX Runtime's blocked (NCHWc) convolutions and oneDNN's blocked layouts use one SIMD register
    of floats per channel block: 16 with AVX-512, 8 with AVX2. A table built for 8 on an AVX-512
    host would put widths 40 and 48 in one tier, though the runtime runs 48 much faster per MAC
    (docs/latency.md, "Alignment tiers").
    """
    if backend in ("torch-cuda", "tensorrt"):
        return GPU_QUANTUM
    import torch

    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


BLOCK_WARMUP_S = 0.02
"""Warm-up seconds before a block's samples (besides ``warmup`` runs), chosen by measurement.

A table times hundreds of sub-millisecond blocks back to back, so a long warm-up is most of its
cost. 20 ms reads level with 0.1 s, within the noise, at about a third of the time per block;
the warm-up runs alone read slow on the smallest blocks (docs/latency.md, "Block warm-up")."""

DEFAULT_BLOCK_ROUNDS = 4
"""Passes over the grid (each point's fastest run is kept), chosen by measurement.

A block's runs last a few milliseconds, so all of them fall inside whatever speed state the
host is in, and a shared host has slow spells longer than that; only passes seconds apart see a
point at different speeds. With 4 passes, tables built back to back agree within ~0.2 % on plan
sums (docs/latency.md, "Block passes")."""


@dataclass(frozen=True)
class TableSetting:
    """What a table is *for*: two builds with equal settings measure the same points the same way."""

    model: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    batch: int
    backend: str
    threads: int
    repeats: int
    warmup: int
    warmup_s: float
    grid: tuple[float, ...] = DEFAULT_FRACTIONS
    quantum: int | None = None  # None: default_quantum(backend)
    dtype: str = "float32"
    calib_plans: int = 13
    calib_seed: int = 1234
    calib_form: str = "auto"
    rounds: int = 2
    runs: int = 5
    block_rounds: int = DEFAULT_BLOCK_ROUNDS

    def __post_init__(self) -> None:
        if self.quantum is None:
            object.__setattr__(self, "quantum", default_quantum(self.backend))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "batch": self.batch,
            "backend": self.backend,
            "threads": self.threads,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "warmup_s": self.warmup_s,
            "grid": list(self.grid),
            "quantum": self.quantum,
            "dtype": self.dtype,
            "calib_plans": self.calib_plans,
            "calib_seed": self.calib_seed,
            "calib_form": self.calib_form,
            "rounds": self.rounds,
            "runs": self.runs,
            "block_rounds": self.block_rounds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSetting:
        try:
            return cls(
                str(data["model"]),
                int(data["in_channels"]),
                int(data["num_classes"]),
                (int(data["input_size"][0]), int(data["input_size"][1])),
                int(data["batch"]),
                str(data["backend"]),
                int(data["threads"]),
                int(data["repeats"]),
                int(data["warmup"]),
                float(data["warmup_s"]),
                tuple(float(f) for f in data["grid"]),
                int(data.get("quantum", 1)),
                str(data.get("dtype", "float32")),
                int(data.get("calib_plans", 0)),
                int(data.get("calib_seed", 0)),
                str(data.get("calib_form", "sum")),
                int(data.get("rounds", 1)),
                int(data.get("runs", 1)),
                int(data.get("block_rounds", data.get("rounds", 1))),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TableError(f"latency table settings are malformed ({exc!r}); re-profile") from None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.input_size)

    def profiler(self) -> Profiler:
        """The backend, configured to measure the way this setting says (raises if unavailable here)."""
        from hwprune.latency.allocator import pin_allocator
        from hwprune.profilers import get_profiler

        pin_allocator()
        return get_profiler(
            self.backend,
            threads=self.threads,
            warmup=self.warmup,
            warmup_s=self.warmup_s,
            repeats=self.repeats,
            runs=self.runs,
        )


def parse_grid(text: str) -> tuple[float, ...]:
    """``"0.25,0.5,1"`` (fractions of each layer's width) or ``"4"`` (1/4, 2/4, 3/4, 1)."""
    try:
        if "," not in text and "." not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            fractions = tuple(round(i / n, 4) for i in range(1, n + 1))
        else:
            fractions = tuple(sorted({float(f) for f in text.split(",") if f.strip()}))
    except ValueError:
        raise ConfigError(
            f"--grid must be a count >= 1 or comma-separated fractions like 0.25,0.5,1; got {text!r}"
        ) from None
    if not all(math.isfinite(f) for f in fractions) or not fractions or fractions[0] <= 0 or fractions[-1] != 1.0:
        raise ConfigError(f"--grid fractions must lie in (0, 1] and include 1; got {text!r}")
    return fractions


def plan_grids(
    graph: ModelGraph, batch: int, fractions: Sequence[float], dtype: str = "float32", quantum: int = 1
) -> tuple[dict[str, Signature], dict[str, list[Grid]]]:
    """The signatures of a model's layers and, per signature, one grid per distinct full width."""
    full = graph.layer_shapes()
    # An axis is prunable iff some group moves it: compare against every group pruned to 1.
    narrow = {s.name: s for s in graph.layer_shapes({g.name: 1 for g in graph.groups})}
    signatures: dict[str, Signature] = {}
    grids: dict[str, list[Grid]] = {}
    for layer in full:
        sig = Signature.of(layer, batch, dtype)
        key = sig.key()
        signatures[key] = sig
        low = narrow[layer.name]
        if sig.groups > 1:  # a grouped conv: widths stay multiples of its groups, no alignment tiers below them
            c_in = split_axis(layer.c_in, fractions, sig.groups) if low.c_in != layer.c_in else (layer.c_in,)
            c_out = split_axis(layer.c_out, fractions, sig.groups) if low.c_out != layer.c_out else (layer.c_out,)
            if (grid := Grid(c_in, c_out)) not in grids.setdefault(key, []):
                grids[key].append(grid)
            continue
        c_out = axis_points(layer.c_out, fractions, quantum) if low.c_out != layer.c_out else (layer.c_out,)
        c_in = (
            c_out
            if layer.depthwise
            else (axis_points(layer.c_in, fractions, quantum) if low.c_in != layer.c_in else (layer.c_in,))
        )
        grid = Grid(c_in, c_out, diagonal=layer.depthwise)
        if quantum > 1:
            ref_in, probes_in = tier_probes(c_in, layer.c_in, quantum) if len(c_in) > 1 else (c_in[0], ())
            ref_out, probes_out = tier_probes(c_out, layer.c_out, quantum) if len(c_out) > 1 else (c_out[0], ())
            if layer.depthwise:
                ref_in, probes_out = ref_out, ()
                probes_in = tier_probes(c_out, layer.c_out, quantum)[1]
            top_in = [p for p in probes_in if tier(p, quantum) == quantum]
            top_out = [p for p in probes_out if tier(p, quantum) == quantum]
            joint = (top_in[0], top_out[0]) if top_in and top_out and not layer.depthwise else None
            grid = Grid(c_in, c_out, layer.depthwise, quantum, probes_in, probes_out, (ref_in, ref_out), joint)
        if grid not in grids.setdefault(key, []):
            grids[key].append(grid)
    return signatures, grids


def split_axis(full: int, fractions: Sequence[float], groups: int) -> tuple[int, ...]:
    """Grid widths of a grouped conv's axis: each fraction of ``full`` rounded to a multiple of ``groups``."""
    return tuple(sorted({min(full, groups * max(1, round(f * full / groups))) for f in fractions} | {full}))


def new_table(setting: TableSetting, graph: ModelGraph, profiler: Profiler) -> LatencyTable:
    signatures, grids = plan_grids(graph, setting.batch, setting.grid, setting.dtype, setting.quantum)
    return LatencyTable(
        backend=setting.backend,
        fingerprint=profiler.fingerprint(),
        settings=setting.to_dict(),
        signatures=signatures,
        grids=grids,
        entries={},
    )


def open_table(
    out: Path, setting: TableSetting, graph: ModelGraph, profiler: Profiler, resume: bool, overwrite: bool = False
) -> LatencyTable:
    """A fresh table, or the partial one at ``out`` when resuming it is safe.

    Resuming a table made for another setting or on another device would mix incomparable
    numbers, so both are refused; without --resume an existing file is never clobbered silently.
    """
    if not out.exists() or overwrite:
        if resume and not out.exists():
            raise ConfigError(f"--resume given but {out} does not exist; drop --resume to start a new table")
        return new_table(setting, graph, profiler)
    if not resume:
        raise ConfigError(f"{out} already exists: pass --resume to continue it, or --overwrite to start over")
    table = LatencyTable.load(out)
    old = table.settings
    new = setting.to_dict()
    diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in new.items() if old.get(k) != v]
    if diff:
        raise TableError(f"cannot resume {out}: it was made for a different setting: {', '.join(diff)}")
    here = device_key(profiler.fingerprint())
    if table.device_key() != here:
        raise TableError(f"cannot resume {out}: it was profiled on {table.device_key()}, this is {here}")
    return table


def fill_table(
    table: LatencyTable,
    profiler: Profiler,
    out: Path | None,
    progress: bool = True,
    measure: Callable[..., Any] | None = None,
) -> dict[str, float]:
    """Time every missing grid point, saving after each; returns seconds spent and blocks timed / unstable.

    The progress bar is weighted by an estimate of each block's timing cost, not by count: a
    7x7 stem and a 1x1 conv at 7x7 differ by two orders of magnitude, and an ETA that treats
    them alike is wrong by as much.
    """
    # Round r times every point that has fewer than r runs, so a point's runs are minutes apart.
    todo = [p for r in range(1, table.block_rounds() + 1) for p in table.missing_points(r)]
    measure = measure or profiler.measure_block
    start = time.perf_counter()
    unstable = 0
    weights = [_estimate_s(table.signatures[s], ci, co, profiler) for s, ci, co in todo]
    last_save = time.perf_counter()
    with tqdm(
        total=sum(weights),
        disable=bars_off(progress) or not todo,
        unit="s",
        desc="profiling blocks",
        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]",
        dynamic_ncols=True,
    ) as bar:
        try:
            for (sig, ci, co), w in zip(todo, weights, strict=True):
                bar.set_postfix_str(
                    f"{sig} {ci}->{co}" + (f" ({unstable} unstable)" if unstable else ""), refresh=False
                )
                m, shaky = counting_unstable(measure, table.signatures[sig].block(ci, co))
                unstable += shaky
                table.add(sig, ci, co, m)
                if out is not None and time.perf_counter() - last_save >= SAVE_EVERY_S:
                    table.save(out)
                    last_save = time.perf_counter()
                bar.update(w)
        finally:  # Ctrl-C and errors included: every finished block reaches the disk
            if out is not None and todo:
                table.save(out)
    # A pass caught in a slow spell is what the passes are for; what matters is a point whose kept (fastest) run
    # is still unstable, so that is what the profile reports, beside the runs.
    kept = [table.entries[s][(ci, co)] for s, ci, co in table.planned_points() if (ci, co) in table.entries.get(s, {})]
    return {
        "blocks_s": time.perf_counter() - start,
        "blocks_timed": len(todo),
        "unstable_blocks": unstable,
        "points": len(kept),
        "unstable_points": sum(m.is_unstable(profiler.unstable_threshold) for m in kept),
    }


def _estimate_s(sig: Signature, c_in: int, c_out: int, profiler: Profiler) -> float:
    """Rough seconds to time one block (warm-up floor + samples at ~20 GMAC/s + call overhead); ETA only."""
    block = sig.block(c_in, c_out)
    h, w = block.out_hw
    macs = sig.batch * c_out * h * w * (1 if sig.depthwise else c_in // sig.groups) * sig.kernel * sig.kernel
    run_s = macs / 2e10 + 5e-5
    return max(profiler.warmup_s, profiler.warmup * run_s) + profiler.runs * profiler.repeats * run_s


def profile_model(
    setting: TableSetting,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    recalibrate: bool = False,
    progress: bool = True,
    profiler: Profiler | None = None,
    model: nn.Module | None = None,
) -> tuple[LatencyTable, dict[str, float]]:
    """The whole ``hwprune profile``: plan, time every block, then calibrate on whole models.

    ``recalibrate`` (with ``resume``) keeps the blocks but re-measures the whole-model plans, for
    when the calibration was taken on a busy machine. ``profiler`` and ``model`` are injectable so
    tests can interrupt a build or use a tiny model.
    Returns the table and the seconds each phase took in this run.
    """
    from hwprune.latency.calibrate import calibrate
    from hwprune.models import create_model

    profiler = profiler or setting.profiler()
    model = model if model is not None else create_model(setting.model, setting.in_channels, setting.num_classes)
    graph = ModelGraph(model, setting.input_shape)
    table = (
        open_table(out, setting, graph, profiler, resume, overwrite)
        if out is not None
        else new_table(setting, graph, profiler)
    )
    if recalibrate:
        table.calibration = None
    if out is not None and (recalibrate or not out.exists()):
        table.save(out)  # claim the path at once: a second run without --resume now refuses it
    seconds = fill_table(table, profiler, out, progress)
    start = time.perf_counter()
    if setting.calib_plans:
        calibrate(table, model, graph, profiler, out, progress)
    seconds["calibration_s"] = time.perf_counter() - start
    return table, seconds
