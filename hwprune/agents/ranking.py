"""LeGR's learned global ranking: an affine map per group over its channels' L2 norms, and one threshold.

A channel's global score is ``alpha_l * z_i + kappa_l``, where ``z_i`` is its L2 norm (the one
``apply_plan`` ranks by) *standardised within its group*: minus the group's mean norm, over the
group's standard deviation of norms. Raw norms are not comparable across groups (a residual
group's channels sum several convs' filters: 2.3 against 1.2 in ResNet-20), and dividing by the
mean alone is not enough: the spread inside a group differs tenfold (coefficient of variation 0.02
in MobileNetV2's projection groups, 0.23 in its first), so a global threshold on mean-normalised
norms empties the low-spread groups all at once. Standardised, every group spreads alike, the
identity map (alpha = 1, kappa = 0) cuts every group by about the same share, close to uniform
pruning, and the learned pairs say where to depart from it. alpha stays positive, so inside a
group the kept channels are always its largest-L2 ones: LeGR decides how many, never which.

Pruning to a budget is one global threshold on the scores, with the context's minimum keep (and
``round_to``) as the safeguard. Every distinct score is a candidate threshold, and the plan taken
is the one that keeps the most channels among those the predictor puts under the budget: the
candidates are priced from the widest down and the first that fits is taken. Bisection would
assume latency grows with width, which it does not on SIMD backends (see ``uniform.py``). The
price is one prediction per plan wider than the answer (~130 for ResNet-20 at 0.5x, thousands for
MobileNetV2), and successive plans differ in a group or two, so the latency table's predictor
reprices only the layers those groups touch (``SearchContext.predict_ms``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from hwprune.agents.base import SearchContext
from hwprune.errors import ArtifactError, BudgetError, ConfigError
from hwprune.io import read_json, write_json
from hwprune.pruning import ModelGraph, PruningPlan, channel_norms

RANKING_KIND = "legr-ranking"
RANKING_SCHEMA = 1
CRITERION = "l2-standardised"
"""Channel L2 norm (summed over the filters a group removes together), standardised within its group."""

Pairs = dict[str, tuple[float, float]]
"""Per group: (alpha > 0, kappa)."""


def standardised_norms(model: nn.Module, graph: ModelGraph) -> dict[str, np.ndarray]:
    """Each group's channel L2 norms, minus the group mean, over the group's standard deviation (0 if all equal)."""
    out = {}
    for name, norms in channel_norms(model, graph).items():
        n = norms.numpy().astype(np.float64)
        std = float(n.std())
        out[name] = (n - n.mean()) / std if std > 0 else np.zeros_like(n)
    return out


def identity_pairs(graph: ModelGraph) -> Pairs:
    return {g.name: (1.0, 0.0) for g in graph.groups}


def scores_of(norms: dict[str, np.ndarray], pairs: Pairs) -> dict[str, np.ndarray]:
    """Global scores: ``alpha * z + kappa`` per group."""
    return {name: pairs[name][0] * z + pairs[name][1] for name, z in norms.items()}


class Thresholder:
    """Plans from one global threshold on channel scores, for one search context.

    A group keeps its channels scoring at least the threshold, at least its minimum keep, and the
    nearest allowed count to that (``SearchContext.clamp_keep``); the lookup from "channels over
    the threshold" to the kept count is tabulated once per group.
    """

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.names = [g.name for g in ctx.graph.groups]
        self._keep = {g.name: self._keep_table(g.name, g.channels) for g in ctx.graph.groups}

    def _keep_table(self, name: str, channels: int) -> list[int]:
        allowed = self.ctx.allowed_keeps(name)
        table = []
        for count in range(channels + 1):
            k = max(count, self.ctx.min_keep(name))
            i = bisect.bisect_left(allowed, k)
            near = allowed[max(i - 1, 0) : i + 1]
            table.append(min(near, key=lambda a: (abs(a - k), -a)))  # ties to the larger, as clamp_keep
        return table

    def plans(self, scores: dict[str, np.ndarray]) -> Iterator[PruningPlan]:
        """Every distinct plan a threshold on ``scores`` gives, widest first, ending at the minimal plan.

        The threshold runs over every distinct score, lowest first: at each, the channels scoring
        under it are gone. Plans are nested (each keeps no more in any group than the one before).
        """
        flat = np.concatenate([scores[n] for n in self.names])
        owner = np.concatenate([np.full(len(scores[n]), i) for i, n in enumerate(self.names)])
        order = np.argsort(flat, kind="stable")
        ordered, owners = flat[order], owner[order]
        removed = [0] * len(self.names)
        plan = self.ctx.full_plan()
        yield plan
        i = 0
        while i < len(ordered):
            j, changed = i, set()
            while j < len(ordered) and ordered[j] == ordered[i]:  # the threshold passes every equal score at once
                removed[owners[j]] += 1
                changed.add(int(owners[j]))
                j += 1
            i = j
            updates = {}
            for g in changed:
                name = self.names[g]
                keep = self._keep[name][len(scores[name]) - removed[g]]
                if keep != plan.keep[name]:
                    updates[name] = keep
            if updates:
                plan = plan.with_keep(updates)
                yield plan

    def fit(self, scores: dict[str, np.ndarray], budget_ms: float) -> tuple[PruningPlan, float, int]:
        """The widest threshold plan predicted at most ``budget_ms``, its prediction, and how many plans were priced."""
        ms = math.inf
        for priced, plan in enumerate(self.plans(scores), start=1):
            ms = self.ctx.predict_ms(plan)
            if ms <= budget_ms:
                return plan, ms, priced
        raise BudgetError(
            f"no threshold meets {budget_ms:.3f} ms: with every group at its minimum keep the plan is predicted "
            f"at {ms:.3f} ms; raise the budget or lower --min-keep-ratio"
        )

    def require_reachable(self, budget_ms: float) -> None:
        """Refuse a budget the narrowest threshold plan (every group at its minimum keep) misses: no ranking fits."""
        ms = self.ctx.predict_ms(self.ctx.min_plan())
        if ms > budget_ms:
            raise BudgetError(
                f"budget {budget_ms:.3f} ms is out of LeGR's reach: its narrowest plan (every group at its minimum "
                f"keep) is predicted at {ms:.3f} ms; raise the budget, lower --min-keep-ratio, or use --agent netadapt"
            )


@dataclass(frozen=True)
class Ranking:
    """A learned ranking, reusable for any budget on the same model: the artifact ``ranking.json``.

    ``budget_ms`` (and ``budget``, the run's budget text) is where it was learned; ``table``
    identifies the latency table it was learned against (device fingerprint, setting, sha256),
    stamped by the job; ``cost`` is what the search spent, so a reuse can amortise it.
    """

    model: str
    groups: tuple[tuple[str, int], ...]
    pairs: Pairs
    seed: int
    budget_ms: float
    cost: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    min_keep_ratio: float | None = None
    round_to: int | None = None
    budget: str | None = None
    table: dict[str, Any] | None = None
    criterion: str = CRITERION

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": RANKING_KIND,
            "schema_version": RANKING_SCHEMA,
            "model": self.model,
            "criterion": self.criterion,
            "groups": [[name, channels] for name, channels in self.groups],
            "pairs": {name: {"alpha": a, "kappa": k} for name, (a, k) in self.pairs.items()},
            "seed": self.seed,
            "budget_ms": self.budget_ms,
            "budget": self.budget,
            "min_keep_ratio": self.min_keep_ratio,
            "round_to": self.round_to,
            "options": self.options,
            "table": self.table,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "ranking") -> Ranking:
        if not isinstance(data, dict) or data.get("kind") != RANKING_KIND:
            raise ArtifactError(f"{source} is not a hwprune {RANKING_KIND}")
        if data.get("schema_version") != RANKING_SCHEMA:
            raise ArtifactError(
                f"{source} has {RANKING_KIND} schema_version {data.get('schema_version')!r}; this hwprune reads "
                f"version {RANKING_SCHEMA}: learn it again with this version (--agent legr)"
            )
        try:
            pairs = {str(n): (float(p["alpha"]), float(p["kappa"])) for n, p in data["pairs"].items()}
            ranking = cls(
                model=str(data["model"]),
                groups=tuple((str(n), int(c)) for n, c in data["groups"]),
                pairs=pairs,
                seed=int(data["seed"]),
                budget_ms=float(data["budget_ms"]),
                cost=dict(data.get("cost") or {}),
                options=dict(data.get("options") or {}),
                min_keep_ratio=data.get("min_keep_ratio"),
                round_to=data.get("round_to"),
                budget=data.get("budget"),
                table=data.get("table"),
                criterion=str(data["criterion"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{source} is malformed ({exc!r}): learn it again with --agent legr") from None
        if ranking.criterion != CRITERION:
            raise ArtifactError(
                f"{source} ranks channels by '{ranking.criterion}'; this hwprune ranks by '{CRITERION}': "
                "learn it again with --agent legr"
            )
        bad = [n for n, (a, k) in pairs.items() if not (math.isfinite(a) and a > 0 and math.isfinite(k))]
        if bad or sorted(pairs) != sorted(n for n, _ in ranking.groups):
            what = (
                f"group '{bad[0]}' has alpha <= 0 or a non-finite pair" if bad else "its pairs do not name its groups"
            )
            raise ArtifactError(f"{source} is malformed ({what}): learn it again with --agent legr")
        return ranking

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Ranking:
        return cls.from_dict(read_json(path, RANKING_KIND, RANKING_SCHEMA), source=str(path))

    def check(self, model: str, graph: ModelGraph, source: str = "ranking") -> None:
        """Refuse, in one line, a ranking learned for another model or another set of channel groups."""
        if self.model != model:
            raise ConfigError(
                f"{source} was learned for model '{self.model}', not '{model}': learn a ranking for this model "
                "with --agent legr"
            )
        theirs, ours = dict(self.groups), {g.name: g.channels for g in graph.groups}
        if theirs != ours:
            diff = sorted(set(theirs.items()) ^ set(ours.items()))
            name = diff[0][0] if diff else "?"
            raise ConfigError(
                f"{source} does not match this model's channel groups (group '{name}': {theirs.get(name)} channels "
                f"there, {ours.get(name)} here): it was learned on another variant of '{model}'; learn it again "
                "with --agent legr"
            )
