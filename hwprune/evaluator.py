"""Evaluator: the only way a search agent sees accuracy.

Every agent ranks candidate plans by the same numbers (validation accuracy and loss after the same
short, seeded fine-tune), so agents are compared on the same footing. By default a plan is cut
from the *original* weights (keeping the filters its ``criterion`` ranks highest, L2 norm unless
told) and fine-tuned with the same seed, so its score is a pure function of its channel counts,
cacheable per ``plan.key()``. Filter scores are computed once per model state a plan is cut from
(the original, then each parent of a lineage), not per candidate: Taylor's costs gradients.

A search that shrinks a model step by step (NetAdapt) can pass the ``lineage`` of plans it chose:
the candidate is then cut from the model that lineage produced, each step cut from the one before
and fine-tuned in turn, as the NetAdapt paper does. Deep into a search this is what keeps scores
informative: a deep cut from the original weights scores near chance after a short fine-tune,
and a search would choose among such candidates by noise (docs/benchmarks.md). A lineage is
replayed from the original weights when its model is no longer held, with the same seed, so a
resumed search scores exactly as the interrupted one did. :meth:`Evaluator.carried` hands the
job the model a lineage produced, so the final model is long fine-tuned from the adapted
weights, as the paper does, rather than cut afresh from the original ones.

The test split is never touched here: searching on it would leak it into the model selection.

A library user's own data and loop come in as :class:`~hwprune.user_training.UserTraining` (``user=``):
the short fine-tune is their ``finetune(model, steps)`` and the score their ``score(model)``, seeded
the same way, so the rest (cutting, lineages, the cache) is shared with the built-in path.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from torch import nn

from hwprune import train
from hwprune.data import DataBundle
from hwprune.errors import ConfigError
from hwprune.pruning import (
    DEFAULT_CRITERION,
    TAYLOR_BATCHES,
    FilterImportance,
    ModelGraph,
    PruningPlan,
    apply_plan,
    check_criterion,
    filter_importance,
)
from hwprune.pruning.plan import GroupPlan
from hwprune.user_training import UserTraining


class Evaluator:
    """Validation accuracy of ``model`` pruned by a plan, after ``finetune_steps`` seeded SGD steps.

    ``val_samples`` caps the validation samples used (the first N, in order): a search scores
    hundreds of candidates, and ranking them needs far fewer samples than reporting a final number.
    ``augment`` is off by default: a short fine-tune mostly re-fits BN statistics and the
    remaining filters; augmentation regularises long training and only adds noise here.
    ``precision`` ("fp32" or "bf16", see :func:`hwprune.train.resolve_precision`) is the arithmetic
    of the short fine-tune and the score; part of what a cached score means, so fixed per evaluator.
    ``criterion`` chooses the filters each plan keeps (:mod:`hwprune.pruning.importance`); ``taylor``
    reads ``taylor_batches`` seeded minibatches of the training split.
    ``user`` replaces ``data`` by the user's own score and fine-tune (``data`` may then be None).
    """

    def __init__(
        self,
        model: nn.Module,
        graph: ModelGraph,
        data: DataBundle | None,
        finetune_steps: int = 0,
        lr: float = 0.01,
        batch_size: int = 64,
        seed: int = 0,
        val_samples: int | None = None,
        augment: bool = False,
        precision: str = "fp32",
        criterion: str = DEFAULT_CRITERION,
        taylor_batches: int = TAYLOR_BATCHES,
        *,
        bn_batches: int = 0,
        user: UserTraining | None = None,
    ) -> None:
        if data is None and (user is None or user.score is None):
            raise ConfigError("an evaluator needs a dataset or a score function (score=) to rank plans by")
        if finetune_steps < 0:
            raise ConfigError(f"fine-tune steps must be >= 0, got {finetune_steps}")
        if bn_batches < 0:
            raise ConfigError(f"BN recalibration batches must be >= 0, got {bn_batches}")
        if bn_batches and data is None and (user is None or user.batches is None):
            raise ConfigError(
                "re-estimating BN statistics needs training batches: pass your training batches (taylor_data= in "
                "hwprune.prune) or a dataset"
            )
        if val_samples is not None and val_samples < 1:
            raise ConfigError(f"val_samples must be >= 1, got {val_samples}")
        self.model = model
        self.graph = graph
        self.data = data
        self.finetune_steps = finetune_steps
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self.val_samples = val_samples
        self.augment = augment
        self.precision = precision
        self.criterion = check_criterion(criterion)
        self.taylor_batches = taylor_batches
        self.bn_batches = bn_batches
        self.user = user
        self._importances: dict[Lineage, FilterImportance] = {}  # the original model's and the last parent's
        self._cache: dict[tuple[Any, ...], tuple[float, float]] = {}
        self._models: OrderedDict[Lineage, Held] = OrderedDict()
        self._parent_graph: tuple[Lineage, ModelGraph] = ((), graph)  # the last parent's, for its candidates
        self.evaluations = 0  # plans actually pruned, fine-tuned and scored (cache misses)
        self.cache_hits = 0
        self.finetune_steps_done = 0
        self.seconds = 0.0

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        """(accuracy, loss) on the validation split after the short fine-tune; cached per channel counts.

        ``lineage``: the plans a step-by-step search chose so far; ``plan`` is then cut from the
        model they produced (every channel count of ``plan`` at most that model's).
        """
        steps = _keys(lineage)
        key = (steps, plan.key()) if steps else plan.key()
        if key in self._cache:
            self.cache_hits += 1
            return self._cache[key]
        start = time.perf_counter()
        try:
            pruned, _ = self._trained(self._parent(lineage), plan, (*steps, plan.key()))
            result = self._score(pruned)
        finally:
            self.seconds += time.perf_counter() - start
        self.evaluations += 1
        self._cache[key] = result
        return result

    def cut(self, plan: PruningPlan) -> tuple[nn.Module, PruningPlan]:
        """``plan`` cut from the original weights by the evaluator's criterion (no fine-tune): the job's
        final model when the search carried no weights; the scores are the ones the search used."""
        return apply_plan(self.model, plan, self.graph, self._importance((), self.model, self.graph))

    def carried(self, lineage: tuple[PruningPlan, ...]) -> tuple[nn.Module, PruningPlan]:
        """A copy of the model ``lineage`` produced, and its last plan with the kept filters as indices
        of the *original* model (each step's choice composed), as ``apply_plan`` returns them."""
        if not lineage:
            raise ValueError("carried() needs a lineage of at least one plan")
        model, _, kept = self._parent(lineage)
        assert kept is not None  # set by every step of a non-empty lineage
        last = lineage[-1]
        groups = {name: GroupPlan(g.original, len(kept[name]), kept[name]) for name, g in last.groups.items()}
        return copy.deepcopy(model), PruningPlan(last.model, groups, self.criterion)

    def _parent(self, lineage: tuple[PruningPlan, ...]) -> tuple[nn.Module, ModelGraph, Kept | None]:
        """The model ``lineage`` produced, from the longest prefix still held, replayed step by step,
        with the original-model indices of its filters (``None`` for the original model itself)."""
        steps = _keys(lineage)
        held = max((n for n in range(1, len(steps) + 1) if steps[:n] in self._models), default=0)
        model, kept = self._models[steps[:held]] if held else (self.model, None)
        for n in range(held, len(steps)):
            model, kept = self._trained((model, self._graph(steps[:n], model), kept), lineage[n], steps[: n + 1])
        return model, self._graph(steps, model), kept

    def _graph(self, steps: Lineage, model: nn.Module) -> ModelGraph:
        """The channel groups of the model ``steps`` produced: traced once while it is the parent, not per candidate."""
        if not steps:
            return self.graph
        if self._parent_graph[0] != steps:
            self._parent_graph = (steps, ModelGraph(model, self.graph.input_shape))
        return self._parent_graph[1]

    def _trained(self, parent: tuple[nn.Module, ModelGraph, Kept | None], plan: PruningPlan, steps: Lineage) -> Held:
        """``plan`` cut from ``parent`` and fine-tuned, held for a while: a search's winner is the next parent.

        Held with the original-model indices of the filters it kept (``None`` in a parent: the original).
        """
        model, graph, kept = parent
        if steps in self._models:
            self._models.move_to_end(steps)
            return self._models[steps]
        if graph is not self.graph:  # the parent is itself pruned: plan its own groups (same names)
            plan = PruningPlan(plan.model, {g.name: GroupPlan(g.channels, plan.keep[g.name]) for g in graph.groups})
        pruned, applied = apply_plan(model, plan, graph, self._importance(steps[:-1], model, graph))
        if self.bn_batches:
            self._recalibrate(pruned)
        if self.finetune_steps:
            self._fine_tune(pruned)
            self.finetune_steps_done += self.finetune_steps
        chosen = {n: g.kept_indices or () for n, g in applied.groups.items()}
        self._models[steps] = (pruned, {n: tuple(kept[n][i] for i in ix) if kept else ix for n, ix in chosen.items()})
        while len(self._models) > HELD_MODELS:
            self._models.popitem(last=False)
        return self._models[steps]

    def _importance(self, steps: Lineage, model: nn.Module, graph: ModelGraph) -> FilterImportance:
        """Filter scores of the model ``steps`` produced, computed once while it is a parent."""
        if steps not in self._importances:
            for held in [k for k in self._importances if k]:
                del self._importances[held]  # a search moves on from a parent; the original stays
            data = self.user.batches if self.user is not None else self.data.train  # type: ignore[union-attr]
            self._importances[steps] = filter_importance(
                model, graph, self.criterion, data, seed=self.seed, batches=self.taylor_batches
            )
        return self._importances[steps]

    def _recalibrate(self, model: nn.Module) -> None:
        """Adaptive BN on the first ``bn_batches`` seeded training batches (the user's, in their order)."""
        if self.user is not None and self.user.batches is not None:
            batches: Iterable[Any] = self.user.batches
        else:
            assert self.data is not None  # checked in __init__
            batches = train.cycle(self.data.train, self.batch_size, self.seed)
        train.recalibrate_bn(model, batches, self.bn_batches, precision=self.precision)

    def _fine_tune(self, model: nn.Module) -> None:
        """The short, seeded fine-tune before a score: the user's loop, or SGD on the training split."""
        if self.user is not None:
            self.user.fine_tune(model, self.finetune_steps, self.seed)
            return
        assert self.data is not None  # checked in __init__
        train.fine_tune(
            model,
            self.data.train,
            self.finetune_steps,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
            augment=self.data.augment if self.augment else None,
            precision=self.precision,
        )

    def _score(self, model: nn.Module) -> tuple[float, float]:
        """(accuracy, loss) on the validation split, or (score, -score) from the user's function."""
        if self.user is not None and self.user.score is not None:
            return self.user.score_pair(model)
        assert self.data is not None  # checked in __init__
        return train.score(model, self.data.val, max_samples=self.val_samples, precision=self.precision)

    def cost(self) -> dict[str, Any]:
        """Work done so far; agents report the difference over their search."""
        return {
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "finetune_steps": self.finetune_steps_done,
            "eval_seconds": self.seconds,
        }


Lineage = tuple[tuple[int, ...], ...]
Kept = dict[str, tuple[int, ...]]
Held = tuple[nn.Module, Kept]
HELD_MODELS = 32
"""Fine-tuned candidates kept in memory: one iteration's (a winner becomes the next parent) and a few more."""


def _keys(lineage: tuple[PruningPlan, ...]) -> Lineage:
    return tuple(p.key() for p in lineage)
