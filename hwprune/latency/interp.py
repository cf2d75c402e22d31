"""Channel grids and the interpolation that reads a latency between measured widths.

Bilinear interpolation in (c_in, c_out) is the natural base: a convolution's work is
c_in * c_out * const, itself bilinear, so on an ideal device it would be exact on any grid.
Bilinear weights are non-negative, so monotone data give monotone predictions. A depthwise conv
has c_in == c_out and is a 1-D grid (``diagonal``).

Real SIMD backends are not ideal: they reward *aligned* widths, in tiers (the larger the power
of two dividing a width, the faster per MAC, up to the SIMD width; ONNX Runtime and oneDNN
alike). A pruned layer's width is odd half the time and a multiple of 8 one time in 8, so a grid
on "nice" widths predicts the common case wrong, and a grid on odd widths the rarer aligned
ones. The top tier follows the host's SIMD width (``build.default_quantum``). With ``quantum``
q > 1 the grid therefore holds:

- a base grid on odd widths (plus the full width, so the unpruned layer is read exactly), and
- per axis, one probe per alignment tier (2, 4, ... q: the largest power of two dividing the width),
  timed next to the grid's reference point; its ratio to the base prediction there is the tier's
  factor for that axis;
- one *joint* probe with both widths multiples of q. When both are, ONNX Runtime switches to its
  blocked (NCHWc) kernels, a different code path whose speed-up is not the product of the two
  one-axis factors.

A query is the base interpolation times the factors of its two widths' tiers, or times the joint
factor when both widths are in the top tier. One exception: a width that is itself a base
point (the full width above all) is read along its measured row or column, without factors.
That row already holds the runtime's behaviour at that width, and factors measured beside an odd
partner do not carry over (a runtime may pad the other axis to its block size at that width).
Within a tier the prediction is monotone; across tiers an aligned width may honestly be cheaper
than its odd neighbour, which is the hardware's truth and lets a search agent prefer aligned
widths. The measurements behind each choice: docs/latency.md, "Alignment tiers".

Outside the grid: below the smallest width the value is held flat (a layer pruned to almost
nothing is dominated by fixed overhead, which the lowest point measures); above the largest it
continues the last segment's slope.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

Value = Callable[[int, int], float]


def tier(c: int, quantum: int) -> int:
    """The largest power of two dividing ``c``, capped at ``quantum`` (1 for odd widths)."""
    t = 1
    while t < quantum and c % (2 * t) == 0:
        t *= 2
    return t


@dataclass(frozen=True)
class Grid:
    """A layer's measured channel widths: a base grid plus, with ``quantum`` > 1, alignment probes."""

    c_in: tuple[int, ...]
    c_out: tuple[int, ...]
    diagonal: bool = False  # depthwise: only (c, c) points, c_in is c_out
    quantum: int = 1
    probes_in: tuple[int, ...] = ()  # c_in widths of tiers 2..quantum, timed at c_out = ref[1]
    probes_out: tuple[int, ...] = ()  # c_out widths of tiers 2..quantum, timed at c_in = ref[0]
    ref: tuple[int, int] = (0, 0)
    joint: tuple[int, int] | None = None  # both widths multiples of quantum, near ref

    def __post_init__(self) -> None:
        for axis in (self.c_in, self.c_out):
            if not axis or list(axis) != sorted(set(axis)) or axis[0] < 1:
                raise ValueError(f"grid axis must be strictly increasing positive ints, got {axis}")
        if self.diagonal and self.c_in != self.c_out:
            raise ValueError("a diagonal (depthwise) grid needs identical axes")
        if self.quantum < 1:
            raise ValueError(f"grid quantum must be >= 1, got {self.quantum}")

    def points(self) -> list[tuple[int, int]]:
        base = [(c, c) for c in self.c_in] if self.diagonal else [(i, o) for i in self.c_in for o in self.c_out]
        if self.diagonal:
            extra = [(c, c) for c in self.probes_in]
        else:
            extra = [(c, self.ref[1]) for c in self.probes_in] + [(self.ref[0], c) for c in self.probes_out]
            extra += [self.joint] if self.joint else []
        return base + [p for p in extra if p not in base]

    @cached_property
    def measured(self) -> frozenset[tuple[int, int]]:
        return frozenset(self.points())

    def covers(self, c_in: int, c_out: int) -> bool:
        return c_in <= self.c_in[-1] and c_out <= self.c_out[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "c_in": list(self.c_in),
            "c_out": list(self.c_out),
            "diagonal": self.diagonal,
            "quantum": self.quantum,
            "probes_in": list(self.probes_in),
            "probes_out": list(self.probes_out),
            "ref": list(self.ref),
            "joint": list(self.joint) if self.joint else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(
            tuple(int(v) for v in data["c_in"]),
            tuple(int(v) for v in data["c_out"]),
            bool(data.get("diagonal", False)),
            int(data.get("quantum", 1)),
            tuple(int(v) for v in data.get("probes_in", ())),
            tuple(int(v) for v in data.get("probes_out", ())),
            (int(data.get("ref", (0, 0))[0]), int(data.get("ref", (0, 0))[1])),
            (int(data["joint"][0]), int(data["joint"][1])) if data.get("joint") else None,
        )


def axis_points(full: int, fractions: Sequence[float], quantum: int = 1) -> tuple[int, ...]:
    """Base grid widths for a layer of ``full`` channels: each fraction of it, rounded, at least 1.

    With ``quantum`` > 1 each is moved to the nearest odd width (one below ``full`` at the top),
    the tier every alignment factor is relative to; ``full`` itself is always a point.
    """
    plain = {min(full, max(1, round(f * full))) for f in fractions}
    if quantum > 1:
        plain = {c if c % 2 else (c + 1 if c + 1 < full else c - 1) for c in plain}
    return tuple(sorted({c for c in plain if c >= 1} | {full}))


def tier_probes(axis: tuple[int, ...], full: int, quantum: int) -> tuple[int, tuple[int, ...]]:
    """The reference width (the base point nearest half the axis) and one probe width per tier near it."""
    odd = [c for c in axis if tier(c, quantum) == 1] or list(axis)
    ref = min(odd, key=lambda c: abs(c - full / 2))
    probes = []
    t = 2
    while t <= quantum:
        candidates = [c for c in range(max(1, ref - 4 * t), min(full, ref + 4 * t) + 1) if tier(c, quantum) == t]
        if candidates:
            probes.append(min(candidates, key=lambda c: (abs(c - ref), c)))
        t *= 2
    return ref, tuple(probes)


def _odd_axis(axis: tuple[int, ...], quantum: int) -> tuple[int, ...]:
    """The base points the interpolation reads: odd widths only, when there are enough of them."""
    if quantum <= 1:
        return axis
    odd = tuple(c for c in axis if tier(c, quantum) == 1)
    return odd if len(odd) >= 2 else axis


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


def _base(grid: Grid, c_in: float, c_out: float, value: Value) -> float:
    if grid.diagonal:
        axis = _odd_axis(grid.c_in, grid.quantum)
        lo, hi, t = _bracket(axis, c_in)
        return (1 - t) * value(axis[lo], axis[lo]) + t * value(axis[hi], axis[hi])
    ax_in, ax_out = _odd_axis(grid.c_in, grid.quantum), _odd_axis(grid.c_out, grid.quantum)
    i0, i1, u = _bracket(ax_in, c_in)
    j0, j1, v = _bracket(ax_out, c_out)
    a0, a1, b0, b1 = ax_in[i0], ax_in[i1], ax_out[j0], ax_out[j1]
    return (
        (1 - u) * (1 - v) * value(a0, b0)
        + u * (1 - v) * value(a1, b0)
        + (1 - u) * v * value(a0, b1)
        + u * v * value(a1, b1)
    )


def _factor(grid: Grid, probes: tuple[int, ...], c: int, at: Callable[[int], tuple[int, int]], value: Value) -> float:
    """Measured / base-predicted latency of the probe sharing ``c``'s tier (1.0 for odd widths)."""
    t = tier(int(round(c)), grid.quantum)
    for p in probes:
        if tier(p, grid.quantum) == t:
            ci, co = at(p)
            base = _base(grid, ci, co, value)
            return value(ci, co) / base if base > 0 else 1.0
    return 1.0


def interpolate(grid: Grid, c_in: float, c_out: float, value: Value) -> float:
    """Value at (c_in, c_out) from the grid's measured points; exact at every measured point."""
    point = (int(c_in), int(c_out))
    if point == (c_in, c_out) and point in grid.measured:
        return value(*point)
    base = _base(grid, c_in, c_out, value)
    if grid.quantum <= 1:
        return base
    if grid.diagonal:
        return base * _factor(grid, grid.probes_in, int(c_in), lambda p: (p, p), value)
    q = grid.quantum
    if grid.joint and tier(int(c_in), q) == q and tier(int(c_out), q) == q:
        joint_base = _base(grid, *grid.joint, value)
        return base * (value(*grid.joint) / joint_base if joint_base > 0 else 1.0)
    if len(grid.c_in) > 1 and int(c_in) in grid.c_in:  # a measured row: read along it, as measured
        j0, j1, v = _bracket(grid.c_out, c_out)
        return (1 - v) * value(int(c_in), grid.c_out[j0]) + v * value(int(c_in), grid.c_out[j1])
    if len(grid.c_out) > 1 and int(c_out) in grid.c_out:  # a measured column
        i0, i1, u = _bracket(grid.c_in, c_in)
        return (1 - u) * value(grid.c_in[i0], int(c_out)) + u * value(grid.c_in[i1], int(c_out))
    f_in = _factor(grid, grid.probes_in, int(c_in), lambda p: (p, grid.ref[1]), value) if len(grid.c_in) > 1 else 1.0
    f_out = (
        _factor(grid, grid.probes_out, int(c_out), lambda p: (grid.ref[0], p), value) if len(grid.c_out) > 1 else 1.0
    )
    return base * f_in * f_out
