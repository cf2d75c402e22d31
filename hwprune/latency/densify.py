"""Densify on use: time a chosen plan's own layer widths and add them to the table as exact points.

A sparse grid cannot see every step a runtime takes between its points (one channel more can
cost a third more time; docs/latency.md, "The off-grid factor"), and a search agent is drawn to
exactly such spots: it keeps the widest layer the table says fits, which is where the table
under-prices. So before a plan is built and measured, the widths it chose are timed as blocks
and stored beside the grid; ``LatencyTable.lookup_ms`` returns a measured point before it
interpolates. The measurements land where the search goes, and a plan whose prediction moves
over its target is searched again on the corrected table.

The new points are timed minutes or hours after the grid, and a shared host's speed drifts
between hours. Like the grid, every point is timed in :meth:`LatencyTable.block_rounds` passes,
the faster run kept; and each densify round also re-times one grid point per signature (the
*anchor*, the measured point nearest the new ones) and scales the new points by the median ratio
of stored to current anchor times, so they are read on the grid's clock. The raw medians,
anchors and scale are returned for the run's record, with each signature's ``off_grid_factor``:
how far its measured widths sit from the interpolation, which the next search reads its other
off-grid widths scaled by.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from hwprune.latency.load import timing_like
from hwprune.latency.table import LatencyTable, Signature
from hwprune.profilers.base import Profiler, counting_unstable
from hwprune.profilers.measurement import Measurement, keep_faster
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan

Point = tuple[str, int, int]


def unmeasured_points(table: LatencyTable, graph: ModelGraph, plan: PruningPlan) -> list[Point]:
    """The plan's (signature, c_in, c_out) blocks the table holds no measurement of, each once, in layer order."""
    batch, dtype = int(table.settings["batch"]), str(table.settings.get("dtype", "float32"))
    out: list[Point] = []
    for shape in graph.layer_shapes(plan.keep):
        point = (Signature.of(shape, batch, dtype).key(), shape.c_in, shape.c_out)
        if (point[1], point[2]) not in table.entries.get(point[0], {}) and point not in out:
            out.append(point)
    return out


def _anchor(table: LatencyTable, sig: str, points: list[Point]) -> tuple[int, int]:
    """The grid point of ``sig`` nearest (in channels) to the mean of the new ones (grid points carry the clock)."""
    ci = statistics.fmean(p[1] for p in points)
    co = statistics.fmean(p[2] for p in points)
    grid = {p for g in table.grids[sig] for p in g.points()} & table.entries[sig].keys()
    return min(grid, key=lambda e: (abs(e[0] - ci) + abs(e[1] - co), e))


def densify(
    table: LatencyTable, graph: ModelGraph, plan: PruningPlan, profiler: Profiler, out: Path | None = None
) -> dict[str, Any]:
    """Measure the plan's unmeasured blocks into ``table`` (saved to ``out`` once, at the end).

    The blocks are timed with the table's own protocol (:func:`timing_like`), whatever ``profiler``'s.
    Returns what was done: the points with their raw and stored medians, the anchors, the scale,
    the touched signatures' off-grid factors, and the seconds spent. A plan whose widths are all measured costs nothing.
    """
    points = unmeasured_points(table, graph, plan)
    if not points:
        return {"points": [], "anchors": [], "scale": 1.0, "unstable_blocks": 0, "off_grid_factors": {}, "seconds": 0.0}
    start = time.perf_counter()
    profiler = timing_like(table.settings, profiler)
    unstable = 0

    def timed(sig: str, c_in: int, c_out: int) -> Measurement:
        nonlocal unstable
        m, shaky = counting_unstable(profiler.measure_block, table.signatures[sig].block(c_in, c_out))
        unstable += shaky
        return m

    # Each signature's anchor first, then its new points; every one timed in the table's number of
    # passes and its faster run kept, as the grid was (one pass reads a third of them in a slow spell).
    order: list[Point] = []
    anchor_of: dict[str, tuple[int, int]] = {}
    for sig in dict.fromkeys(p[0] for p in points):
        mine = [p for p in points if p[0] == sig]
        anchor_of[sig] = _anchor(table, sig, mine)
        order += [(sig, *anchor_of[sig]), *mine]
    runs: dict[Point, Measurement] = {}
    for _ in range(table.block_rounds()):
        for p in order:
            runs[p] = keep_faster(runs.get(p), timed(*p))
    anchors = [
        {
            "signature": sig,
            "c_in": a[0],
            "c_out": a[1],
            "stored_ms": table.value_ms(sig, *a),
            "now_ms": runs[(sig, *a)].median_ms,
        }
        for sig, a in anchor_of.items()
    ]
    raw = {p: runs[p] for p in points}
    ratios = [a["stored_ms"] / a["now_ms"] for a in anchors if a["now_ms"] > 0]
    scale = statistics.median(ratios) if ratios else 1.0
    for (sig, ci, co), m in raw.items():
        table.add(sig, ci, co, m.scaled(scale))
    if out is not None:
        table.save(out)
    return {
        "points": [
            {"signature": s, "c_in": ci, "c_out": co, "raw_ms": m.median_ms, "stored_ms": m.median_ms * scale}
            for (s, ci, co), m in raw.items()
        ],
        "anchors": anchors,
        "scale": scale,
        "unstable_blocks": unstable,
        "off_grid_factors": {a["signature"]: table.off_grid_factor(a["signature"]) for a in anchors},
        "seconds": time.perf_counter() - start,
    }
