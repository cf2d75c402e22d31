"""PruningPlan: how many channels each group keeps (and, once applied, which ones)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwprune.errors import ArtifactError, ConfigError, PlanError
from hwprune.io import read_json, write_json
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.importance import CRITERIA, DEFAULT_CRITERION

PLAN_KIND = "pruning-plan"
PLAN_SCHEMA = 1


def round_channels(keep: float, original: int, round_to: int = 1) -> int:
    """Round a channel count to a multiple of ``round_to`` (hardware-friendly widths), within [1, original]."""
    k = int(round(keep / round_to)) * round_to if round_to > 1 else int(round(keep))
    return int(min(original, max(k, min(round_to, original), 1)))


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy's ints are Integral
        raise ArtifactError(f"{what} must be a whole number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class GroupPlan:
    original: int
    keep: int
    kept_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PruningPlan:
    """Per-group channel counts for one model; immutable so agents can cache results by ``key``.

    ``criterion`` names the filter-importance criterion that chose the kept indices (None while a
    plan holds channel counts only): a plan re-applied later keeps its filters without rescoring.
    """

    model: str
    groups: dict[str, GroupPlan] = field(default_factory=dict)
    criterion: str | None = None

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def full(cls, model: str, graph: ModelGraph) -> PruningPlan:
        return cls(model, {g.name: GroupPlan(g.channels, g.channels) for g in graph.groups})

    @classmethod
    def uniform(cls, model: str, graph: ModelGraph, ratio: float, round_to: int = 1) -> PruningPlan:
        if not 0 < ratio <= 1:
            raise ConfigError(f"keep ratio must be in (0, 1], got {ratio}")
        return cls(
            model,
            {
                g.name: GroupPlan(
                    g.channels, round_channels(ratio * g.channels, g.channels, math.lcm(round_to, g.step))
                )
                for g in graph.groups
            },
        )

    @classmethod
    def random(
        cls,
        model: str,
        graph: ModelGraph,
        rng: np.random.Generator,
        low: float = 0.2,
        high: float = 1.0,
        round_to: int = 1,
    ) -> PruningPlan:
        keep = {}
        for g in graph.groups:
            draw = rng.uniform(low, high)  # one draw per group whatever its step, so seeds give the same plans
            keep[g.name] = GroupPlan(
                g.channels, round_channels(draw * g.channels, g.channels, math.lcm(round_to, g.step))
            )
        return cls(model, keep)

    def fit_steps(self, graph: ModelGraph) -> PruningPlan:
        """This plan with each unchosen keep count moved to the nearest multiple of its group's ``step``.

        A grouped convolution needs every one of its groups to keep as many channels; ties go to the
        larger count. Counts that already fit, and groups with chosen indices, are left as they are.
        """
        updates = {}
        for name, g in self.groups.items():
            group = graph.group_by_name.get(name)
            if group is None or g.kept_indices is not None or g.keep % group.step == 0:
                continue
            updates[name] = round_channels(g.keep + 1e-9, g.original, group.step)
        return self.with_keep(updates) if updates else self

    def with_keep(self, updates: dict[str, int]) -> PruningPlan:
        groups = dict(self.groups)
        for name, k in updates.items():
            groups[name] = GroupPlan(groups[name].original, int(k))
        chosen = any(g.kept_indices is not None for g in groups.values())
        return PruningPlan(self.model, groups, self.criterion if chosen else None)

    # ---- views -----------------------------------------------------------------------
    @property
    def keep(self) -> dict[str, int]:
        return {name: g.keep for name, g in self.groups.items()}

    def key(self) -> tuple[int, ...]:
        """Hashable identity of the channel counts (indices aside), for caching evaluations."""
        return tuple(g.keep for g in self.groups.values())

    def keep_ratio(self) -> float:
        """Overall fraction of prunable channels kept."""
        total = sum(g.original for g in self.groups.values())
        return sum(g.keep for g in self.groups.values()) / max(total, 1)

    # ---- validation ------------------------------------------------------------------
    def validate(self, graph: ModelGraph, model: str | None = None) -> None:
        if model is not None and self.model != model:
            raise PlanError(f"plan was made for model '{self.model}', not '{model}'")
        for name, g in self.groups.items():
            if name not in graph.group_by_name:
                raise PlanError(
                    f"plan names group '{name}', which model '{self.model}' does not have: "
                    "was the plan made for another model?"
                )
            expected = graph.group_by_name[name].channels
            if g.original != expected:
                raise PlanError(f"group '{name}' has {expected} channels, plan says {g.original}")
            if not 1 <= g.keep <= g.original:
                raise PlanError(
                    f"group '{name}' keeps {g.keep} of {g.original} channels: keep must be in [1, original]"
                )
            group = graph.group_by_name[name]
            if g.keep % group.step:
                raise PlanError(
                    f"group '{name}' keeps {g.keep} of {g.original} channels, but its grouped convolution splits "
                    f"them into {group.step} equal parts: keep a multiple of {group.step}"
                )
            if g.kept_indices is not None and (
                len(g.kept_indices) != g.keep
                or len(set(g.kept_indices)) != g.keep
                or min(g.kept_indices) < 0
                or max(g.kept_indices) >= g.original
            ):
                raise PlanError(f"group '{name}' has invalid kept_indices")
            cells = graph.cells.get(name)
            if g.kept_indices is not None and cells is not None:
                per_cell = np.bincount(cells[list(g.kept_indices)].numpy(), minlength=group.step)
                if len(set(per_cell.tolist())) != 1:
                    raise PlanError(
                        f"group '{name}' keeps unequal numbers of channels in its grouped convolution's "
                        f"{group.step} parts ({per_cell.tolist()}): re-create the plan with hwprune"
                    )

    # ---- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        groups = []
        for name, g in self.groups.items():
            entry: dict[str, Any] = {"name": name, "original": g.original, "keep": g.keep}
            if g.kept_indices is not None:
                entry["kept_indices"] = list(g.kept_indices)
            groups.append(entry)
        data: dict[str, Any] = {"kind": PLAN_KIND, "schema_version": PLAN_SCHEMA, "model": self.model}
        if self.criterion is not None:
            data["criterion"] = self.criterion
        return data | {"groups": groups}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plan") -> PruningPlan:
        """Read a plan strictly: channel counts are JSON integers, never coerced ('8' or 7.5 is refused).

        A plan can be written by hand or by another tool; coercing would turn 7.5 into 7 silently.
        """
        groups_in = data.get("groups") if isinstance(data, dict) else None
        if not isinstance(groups_in, list) or not isinstance(data.get("model"), str):
            raise ArtifactError(
                f"{source} is malformed: it needs a 'model' name and 'groups' as a list of "
                '{"name": ..., "original": N, "keep": K} objects; re-create it with hwprune'
            )
        groups = {}
        for i, entry in enumerate(groups_in):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ArtifactError(f"{source} is malformed: group {i} is not an object with a 'name'")
            name = entry["name"]
            counts = [_whole(entry.get(key), f"{source}: group '{name}' {key}") for key in ("original", "keep")]
            idx = entry.get("kept_indices")
            if idx is not None and not isinstance(idx, list):
                raise ArtifactError(f"{source}: group '{name}' kept_indices must be a list of whole numbers")
            kept = tuple(_whole(v, f"{source}: group '{name}' kept_indices") for v in idx) if idx is not None else None
            groups[name] = GroupPlan(counts[0], counts[1], kept)
        criterion = data.get("criterion")
        if criterion is None and any(g.kept_indices is not None for g in groups.values()):
            criterion = DEFAULT_CRITERION  # written before criteria existed: its filters were chosen by L2 norm
        if criterion is not None and criterion not in CRITERIA:
            raise ArtifactError(
                f"{source} names criterion '{criterion}', which this hwprune does not know ({', '.join(CRITERIA)})"
            )
        return cls(data["model"], groups, criterion)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        return cls.from_dict(read_json(path, PLAN_KIND, PLAN_SCHEMA), source=str(path))
