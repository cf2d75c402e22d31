"""LatencyTable: measured block latencies on one device + backend, keyed by layer signature and widths.

A table is a *record of measurements*, not a model of them: it keeps every raw sample, the
device fingerprint and the settings it was built under, and a sha256 over its payload so a
hand-edited or truncated file is refused instead of silently mis-predicting. Values between
measured widths are read by interpolation on rectangular grids (see ``interp.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hwprune import __version__
from hwprune.errors import ArtifactError, TableError
from hwprune.io import read_json, write_json
from hwprune.latency.interp import Grid, interpolate
from hwprune.profilers.blocks import BlockSpec
from hwprune.profilers.fingerprint import device_key
from hwprune.profilers.measurement import Measurement, keep_faster
from hwprune.pruning.graph import LayerShape

TABLE_KIND = "latency-table"
TABLE_SCHEMA = 1

OFF_GRID_PRIOR = 2
"""Points of evidence the prior "interpolation is unbiased" is worth in ``off_grid_factor``'s shrinkage."""


@dataclass(frozen=True)
class Signature:
    """Everything about a layer that changes its latency except its channel counts."""

    kind: str
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    in_hw: tuple[int, int]
    batch: int
    dtype: str = "float32"
    groups: int = 1  # a grouped (not depthwise) conv's groups: pruning never changes them

    @classmethod
    def of(cls, layer: LayerShape, batch: int, dtype: str = "float32") -> Signature:
        groups = layer.groups if layer.kind == "conv" and not layer.depthwise else 1
        return cls(
            layer.kind,
            layer.kernel,
            layer.stride,
            layer.padding,
            layer.depthwise,
            tuple(layer.in_hw),
            batch,
            dtype,
            groups,
        )

    def key(self) -> str:
        """Readable, stable string: it is the JSON key and what error messages show."""
        dw = "-dw" if self.depthwise else (f"-g{self.groups}" if self.groups > 1 else "")
        h, w = self.in_hw
        return f"{self.kind}{dw}-k{self.kernel}s{self.stride}p{self.padding}-{h}x{w}-b{self.batch}-{self.dtype}"

    def block(self, c_in: int, c_out: int) -> BlockSpec:
        return BlockSpec(
            self.kind,
            c_in,
            c_out,
            self.kernel,
            self.stride,
            self.padding,
            self.depthwise,
            self.in_hw,
            self.batch,
            self.groups,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self) | {"in_hw": list(self.in_hw)}
        if self.groups == 1:
            del data["groups"]  # tables of dense layers read and hash as they always did
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            str(data["kind"]),
            int(data["kernel"]),
            int(data["stride"]),
            int(data["padding"]),
            bool(data["depthwise"]),
            (int(data["in_hw"][0]), int(data["in_hw"][1])),
            int(data["batch"]),
            str(data.get("dtype", "float32")),
            int(data.get("groups", 1)),
        )


@dataclass
class LatencyTable:
    """Block latencies for one model setting on one device + backend.

    ``grids[sig]`` lists the rectangular channel grids planned for that signature (one per
    distinct full width of the layers sharing it); ``entries[sig][(c_in, c_out)]`` holds what has
    been measured so far, and ``rounds`` how many times: each point is timed :meth:`block_rounds`
    times, in separate passes over the grid, and the run with the lowest median is kept (see
    ``keep_faster``). A table is *complete* when every planned point has all its rounds.
    ``calibration`` (optional) holds whole-model measurements and the fit made from them.
    """

    backend: str
    fingerprint: dict[str, Any]
    settings: dict[str, Any]
    signatures: dict[str, Signature]
    grids: dict[str, list[Grid]]
    entries: dict[str, dict[tuple[int, int], Measurement]]
    calibration: dict[str, Any] | None = None
    rounds: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)
    created: str = ""
    hwprune_version: str = __version__
    _off_grid: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---- queries -----------------------------------------------------------------------
    def planned_points(self) -> list[tuple[str, int, int]]:
        """Every (signature, c_in, c_out) the grids ask for, in a stable order, each once."""
        seen: set[tuple[str, int, int]] = set()
        out = []
        for sig, grids in self.grids.items():
            for grid in grids:
                for ci, co in grid.points():
                    if (sig, ci, co) not in seen:
                        seen.add((sig, ci, co))
                        out.append((sig, ci, co))
        return out

    def required_rounds(self) -> int:
        """Times each whole-model plan is measured (calibration, ``lut-check``), the faster kept."""
        return max(1, int(self.settings.get("rounds", 1)))

    def block_rounds(self) -> int:
        """Passes over the grid, each timing every point once; the faster run of a point is kept.

        Separate from :meth:`required_rounds` (tables before it used one count for both): a block's
        runs last milliseconds and all fall inside one of the host's slow spells, so only passes
        seconds apart see it at different speeds (docs/latency.md).
        """
        return max(1, int(self.settings.get("block_rounds", self.settings.get("rounds", 1))))

    def rounds_done(self, sig: str, c_in: int, c_out: int) -> int:
        if (c_in, c_out) not in self.entries.get(sig, {}):
            return 0
        return self.rounds.get(sig, {}).get((c_in, c_out), 1)

    def missing_points(self, round_: int | None = None) -> list[tuple[str, int, int]]:
        """Points with fewer than ``round_`` rounds (default: all required rounds)."""
        need = self.block_rounds() if round_ is None else round_
        return [p for p in self.planned_points() if self.rounds_done(*p) < need]

    def is_complete(self) -> bool:
        return not self.missing_points()

    def num_entries(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def add(self, sig: str, c_in: int, c_out: int, m: Measurement) -> None:
        """Record one more round of a point; the faster of the old and new runs is kept."""
        old = self.entries.get(sig, {}).get((c_in, c_out))
        self.entries.setdefault(sig, {})[(c_in, c_out)] = keep_faster(old, m)
        self.rounds.setdefault(sig, {})[(c_in, c_out)] = self.rounds_done(sig, c_in, c_out) + (old is not None)
        self._off_grid.pop(sig, None)

    def value_ms(self, sig: str, c_in: int, c_out: int) -> float:
        """The median of one measured grid point (no interpolation)."""
        return self.entries[sig][(c_in, c_out)].median_ms

    def lookup_ms(
        self, sig: Signature | str, c_in: int, c_out: int, full: tuple[int, int] | None = None, corrected: bool = True
    ) -> float:
        """Latency of a block: interpolated on a grid, or as measured for a width timed off the grids.

        ``full`` (the layer's unpruned widths) makes a layer always read its own grid (exact at
        its points, monotone between them on monotone data; another grid's point is not read
        exactly, which would put a step in this grid's curve); without it the smallest grid that
        covers the point is used. A width no grid holds but a plan has used is read as measured.
        An interpolated value is scaled by the signature's ``off_grid_factor`` unless ``corrected``
        is false (the calibration fit reads the table uncorrected, see ``fit.fit``).
        """
        key = sig.key() if isinstance(sig, Signature) else sig
        if key not in self.grids:
            raise TableError(
                f"latency table has no entries for layer signature {key}: it was profiled for "
                f"{self.settings.get('model')!r} at another setting; re-run `hwprune profile` for this model"
            )
        point = (c_in, c_out)
        if point in self.entries.get(key, {}) and not self.on_grid(key, point):
            return self.value_ms(key, c_in, c_out)  # measured off every grid, for a plan that uses it (densify.py)
        grid = self._pick_grid(key, c_in, c_out, full)
        value = self._interpolated(key, grid, c_in, c_out)
        return value * self.off_grid_factor(key) if corrected and point not in grid.measured else value

    def off_grid_factor(self, key: str) -> float:
        """How far this signature's measured off-grid widths sit from what the grid interpolates there.

        Densify (``densify.py``) times the widths a search chose, and those are where the grid
        under-prices: a search keeps the widest layer the table says fits, so it is drawn to the
        widths the interpolation gets lowest (a winner's curse). The factor is the median ratio
        measured / interpolated over the signature's densified widths, shrunk towards 1 by
        ``n / (n + OFF_GRID_PRIOR)`` in the log so one or two points do not swing it; on widths
        left out it removes most of the interpolation's bias (docs/latency.md, "The off-grid
        factor"). The next search of a run reads every still-unmeasured width of the signature
        scaled by it; 1.0 until densify has measured one.
        """
        if key not in self._off_grid:
            ratios = [
                m.median_ms / self._interpolated(key, self._pick_grid(key, ci, co, None), ci, co)
                for (ci, co), m in self.entries.get(key, {}).items()
                if not self.on_grid(key, (ci, co))
            ]
            n = len(ratios)
            self._off_grid[key] = math.exp(n / (n + OFF_GRID_PRIOR) * math.log(statistics.median(ratios))) if n else 1.0
        return self._off_grid[key]

    def on_grid(self, key: str, point: tuple[int, int]) -> bool:
        """Whether ``point`` is one of the signature's planned grid points (not a width densify added)."""
        return any(point in g.measured for g in self.grids[key])

    def _interpolated(self, key: str, grid: Grid, c_in: int, c_out: int) -> float:
        values = self.entries.get(key, {})
        try:
            return interpolate(grid, c_in, c_out, lambda ci, co: values[(ci, co)].median_ms)
        except KeyError:
            raise TableError(
                f"latency table is incomplete for signature {key}: resume it with `hwprune profile --resume`"
            ) from None

    def _pick_grid(self, key: str, c_in: int, c_out: int, full: tuple[int, int] | None) -> Grid:
        grids = self.grids[key]
        if full is not None:
            for g in grids:
                if (g.c_in[-1], g.c_out[-1]) == tuple(full):
                    return g
        covering = [g for g in grids if g.covers(c_in, c_out)]
        pool = covering or grids
        return (
            min(pool, key=lambda g: g.c_in[-1] * g.c_out[-1])
            if covering
            else max(pool, key=lambda g: g.c_in[-1] * g.c_out[-1])
        )

    # ---- JSON --------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        """The checksummed part: what the numbers are and what they were measured on."""
        return {
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "signatures": {k: s.to_dict() for k, s in self.signatures.items()},
            "grids": {k: [g.to_dict() for g in gs] for k, gs in self.grids.items()},
            "entries": {
                k: [
                    {"c_in": ci, "c_out": co, "rounds": self.rounds_done(k, ci, co), "measurement": m.to_dict()}
                    for (ci, co), m in sorted(v.items())
                ]
                for k, v in self.entries.items()
            },
            "calibration": self.calibration,
        }

    def to_dict(self) -> dict[str, Any]:
        payload = self._payload()
        return {
            "kind": TABLE_KIND,
            "schema_version": TABLE_SCHEMA,
            "hwprune_version": self.hwprune_version,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sha256": checksum(payload),
            **payload,
        }

    def save(self, path: str | Path) -> None:
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "latency table") -> LatencyTable:
        payload_keys = ("backend", "fingerprint", "settings", "signatures", "grids", "entries", "calibration")
        payload = {k: data.get(k) for k in payload_keys}
        where = nonfinite_number(payload)
        if where is not None:  # JSON readers accept NaN and Infinity; no timing or setting may be one
            raise TableError(
                f"{source} holds a number that is not finite at {where}; re-profile with `hwprune profile`"
            )
        if data.get("sha256") != checksum(payload):
            raise TableError(
                f"{source} is corrupt: its sha256 does not match its entries (edited or truncated?); "
                "re-profile with `hwprune profile`"
            )
        try:
            entries: dict[str, dict[tuple[int, int], Measurement]] = {}
            rounds: dict[str, dict[tuple[int, int], int]] = {}
            for k, rows in data["entries"].items():
                entries[k] = {(int(r["c_in"]), int(r["c_out"])): Measurement.from_dict(r["measurement"]) for r in rows}
                rounds[k] = {(int(r["c_in"]), int(r["c_out"])): int(r.get("rounds", 1)) for r in rows}
            return cls(
                backend=str(data["backend"]),
                fingerprint=dict(data["fingerprint"]),
                settings=dict(data["settings"]),
                signatures={k: Signature.from_dict(s) for k, s in data["signatures"].items()},
                grids={k: [Grid.from_dict(g) for g in gs] for k, gs in data["grids"].items()},
                entries=entries,
                calibration=data.get("calibration"),
                rounds=rounds,
                created=str(data.get("created", "")),
                hwprune_version=str(data.get("hwprune_version", "")),
            )
        except (ArtifactError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise TableError(f"{source} is malformed ({exc}); re-profile with `hwprune profile`") from None

    @classmethod
    def load(cls, path: str | Path, expected_key: str | None = None, allow_foreign: bool = False) -> LatencyTable:
        """Read and verify a table; ``expected_key`` is ``device_key`` of the profiler about to use it."""
        try:
            data = read_json(path, TABLE_KIND, TABLE_SCHEMA)
        except ArtifactError as exc:
            raise TableError(str(exc)) from None
        table = cls.from_dict(data, source=str(path))
        if expected_key is not None:
            table.verify_device(expected_key, allow_foreign, source=str(path))
        return table

    def verify_device(self, expected_key: str, allow_foreign: bool = False, source: str = "latency table") -> None:
        """Refuse a table made on another device/backend: its numbers would silently mislead every agent."""
        found = self.device_key()
        if found != expected_key and not allow_foreign:
            raise TableError(
                f"{source} was profiled on another device/backend ({found}), not this one ({expected_key}): "
                "re-profile here, or pass --allow-foreign-table to use it anyway"
            )

    def device_key(self) -> str:
        return device_key(self.fingerprint)


def nonfinite_number(value: Any, where: str = "") -> str | None:
    """Where the first NaN or infinity in a JSON value sits (``entries.conv-k3s1p1-32x32-b1-float32[c_in=8,
    c_out=16].measurement.samples_ms[2]``), or None. Table entries are named by signature and widths."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the top level"
    if isinstance(value, dict):
        for key, item in value.items():
            found = nonfinite_number(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            label = (
                f"[c_in={item.get('c_in')},c_out={item.get('c_out')}]"
                if isinstance(item, dict) and "c_in" in item
                else f"[{i}]"
            )
            found = nonfinite_number(item, f"{where}{label}")
            if found:
                return found
    return None


def checksum(payload: dict[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, fixed separators), so key order and whitespace do not matter."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
