"""Channel grids and the interpolation that reads a latency between measured widths.

Bilinear interpolation in (c_in, c_out) is the natural choice for convolutions: their work is
c_in * c_out * const, which is itself bilinear, so on an ideal device the interpolation would be
exact on any grid; the measured deviations (SIMD tail effects, cache steps, fixed per-call
overhead) are what the grid density trades against profiling time. Bilinear weights are
non-negative, so monotone data give monotone predictions. A depthwise conv has c_in == c_out and
is a 1-D grid (``diagonal``).

SIMD backends reward *aligned* widths: on this CPU (AVX2, 8 floats) ONNX Runtime runs a 3x3 conv
with 24 or 32 input channels ~40 % faster than with 25 or 33, and PyTorch's oneDNN path has a
similar step on output channels. A pruned layer lands on an aligned width only 1 time in 8, so
one grid cannot serve both: with ``quantum`` q > 1 every axis holds two interleaved sets of
points, multiples of q and non-multiples, and a query reads only the set of its own class. The
prediction is then monotone within a class, and an aligned width may honestly be cheaper than
its unaligned neighbour, which is the hardware's truth and lets an agent exploit it.

Outside the grid: below the smallest width the value is held flat (a pruned-to-almost-nothing
layer is dominated by fixed overhead, which the lowest point already measures); above the largest
it continues the last segment's slope, which only happens with a table made for a wider model.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Grid:
    """Sorted channel counts along each axis; every (c_in, c_out) pair is a measured point."""

    c_in: tuple[int, ...]
    c_out: tuple[int, ...]
    diagonal: bool = False  # depthwise: only (c, c) points, c_in is c_out
    quantum: int = 1  # > 1: aligned and unaligned widths are interpolated separately

    def __post_init__(self) -> None:
        for axis in (self.c_in, self.c_out):
            if not axis or list(axis) != sorted(set(axis)) or axis[0] < 1:
                raise ValueError(f"grid axis must be strictly increasing positive ints, got {axis}")
        if self.diagonal and self.c_in != self.c_out:
            raise ValueError("a diagonal (depthwise) grid needs identical axes")
        if self.quantum < 1:
            raise ValueError(f"grid quantum must be >= 1, got {self.quantum}")

    def points(self) -> list[tuple[int, int]]:
        if self.diagonal:
            return [(c, c) for c in self.c_in]
        return [(ci, co) for ci in self.c_in for co in self.c_out]

    def covers(self, c_in: int, c_out: int) -> bool:
        return c_in <= self.c_in[-1] and c_out <= self.c_out[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"c_in": list(self.c_in), "c_out": list(self.c_out), "diagonal": self.diagonal,
                "quantum": self.quantum}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(tuple(int(v) for v in data["c_in"]), tuple(int(v) for v in data["c_out"]),
                   bool(data.get("diagonal", False)), int(data.get("quantum", 1)))


def axis_points(full: int, fractions: Sequence[float], quantum: int = 1) -> tuple[int, ...]:
    """Grid widths for a layer of ``full`` channels: each fraction of it, rounded, at least 1, deduplicated.

    With ``quantum`` q > 1 each fraction yields two points: the nearest multiple of q, and the
    nearest width in the *middle* of a step (q*k + q/2 + 1, odd). Backends whose unaligned cost is
    a staircase (pad to the next multiple) are then interpolated without bias, and those whose
    cost grows smoothly between aligned widths are sampled where no partial alignment helps.
    """
    plain = {min(full, max(1, round(f * full))) for f in fractions} | {full}
    if quantum <= 1 or full < 2 * quantum:  # too narrow for two classes to be worth their points
        return tuple(sorted(plain))
    points: set[int] = {full}
    mid = quantum // 2 + 1
    for c in plain:
        points.add(min(full - full % quantum, max(quantum, round(c / quantum) * quantum)))
        unaligned = round((c - mid) / quantum) * quantum + mid
        points.add(max(mid, min(unaligned, full - quantum + mid if full % quantum == 0 else full)))
    return tuple(sorted(points))


def _sub_axis(axis: tuple[int, ...], x: float, quantum: int) -> tuple[int, ...]:
    """The points of ``axis`` in the same alignment class as ``x`` (all of them when that class is empty)."""
    if quantum <= 1 or len(axis) == 1:
        return axis
    aligned = round(x) % quantum == 0
    sub = tuple(v for v in axis if (v % quantum == 0) == aligned)
    return sub or axis


def _bracket(axis: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices (lo, hi) and weight t of ``x`` on ``axis``: flat below, linear beyond the top."""
    if len(axis) == 1 or x <= axis[0]:
        return 0, 0, 0.0
    if x >= axis[-1]:
        lo, hi = len(axis) - 2, len(axis) - 1
    else:
        hi = bisect.bisect_left(axis, x)
        lo = hi - 1
    return lo, hi, (x - axis[lo]) / (axis[hi] - axis[lo])


def interpolate(grid: Grid, c_in: float, c_out: float, value: Callable[[int, int], float]) -> float:
    """Value at (c_in, c_out) from the grid's measured points; exact at every grid point."""
    if grid.diagonal:
        axis = _sub_axis(grid.c_in, c_in, grid.quantum)
        lo, hi, t = _bracket(axis, c_in)
        a, b = axis[lo], axis[hi]
        return (1 - t) * value(a, a) + t * value(b, b)
    ax_in, ax_out = _sub_axis(grid.c_in, c_in, grid.quantum), _sub_axis(grid.c_out, c_out, grid.quantum)
    i0, i1, u = _bracket(ax_in, c_in)
    j0, j1, v = _bracket(ax_out, c_out)
    a0, a1, b0, b1 = ax_in[i0], ax_in[i1], ax_out[j0], ax_out[j1]
    return ((1 - u) * (1 - v) * value(a0, b0) + u * (1 - v) * value(a1, b0)
            + (1 - u) * v * value(a0, b1) + u * v * value(a1, b1))
