"""Evaluator: the only way a search agent sees accuracy.

Every agent ranks candidate plans by the same numbers (validation accuracy and loss after the same
short, seeded fine-tune), so agents are compared on the same footing. An evaluation is a pure function
of the plan's channel counts: the pruned model is always cut from the *original* weights (keeping
the largest-L2 filters) and fine-tuned with the same seed. That makes results cacheable per
``plan.key()`` and makes a resumed search score a plan exactly as the interrupted one did.

The test split is never touched here: searching on it would leak it into the model selection.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from hwprune import train
from hwprune.data import DataBundle
from hwprune.errors import ConfigError
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan


class Evaluator:
    """Validation accuracy of ``model`` pruned by a plan, after ``finetune_steps`` seeded SGD steps.

    ``val_samples`` caps the validation samples used (the first N, in order): a search scores
    hundreds of candidates, and ranking them needs far fewer samples than reporting a final number.
    ``augment`` is off by default: a short fine-tune mostly re-fits BN statistics and the
    remaining filters; augmentation regularises long training and only adds noise here.
    """

    def __init__(
        self,
        model: nn.Module,
        graph: ModelGraph,
        data: DataBundle,
        finetune_steps: int = 0,
        lr: float = 0.01,
        batch_size: int = 64,
        seed: int = 0,
        val_samples: int | None = None,
        augment: bool = False,
    ) -> None:
        if finetune_steps < 0:
            raise ConfigError(f"fine-tune steps must be >= 0, got {finetune_steps}")
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
        self._cache: dict[tuple[int, ...], tuple[float, float]] = {}
        self.evaluations = 0  # plans actually pruned, fine-tuned and scored (cache misses)
        self.cache_hits = 0
        self.finetune_steps_done = 0
        self.seconds = 0.0

    def score(self, plan: PruningPlan) -> tuple[float, float]:
        """(accuracy, loss) on the validation split after the short fine-tune; cached per channel counts."""
        key = plan.key()
        if key in self._cache:
            self.cache_hits += 1
            return self._cache[key]
        start = time.perf_counter()
        try:
            pruned, _ = apply_plan(self.model, plan, self.graph)
            if self.finetune_steps:
                train.fine_tune(
                    pruned, self.data.train, self.finetune_steps, lr=self.lr, batch_size=self.batch_size,
                    seed=self.seed, augment=self.data.augment if self.augment else None,
                )
                self.finetune_steps_done += self.finetune_steps
            result = train.score(pruned, self.data.val, max_samples=self.val_samples)
        finally:
            self.seconds += time.perf_counter() - start
        self.evaluations += 1
        self._cache[key] = result
        return result

    def cost(self) -> dict[str, Any]:
        """Work done so far; agents report the difference over their search."""
        return {
            "evaluations": self.evaluations,
            "cache_hits": self.cache_hits,
            "finetune_steps": self.finetune_steps_done,
            "eval_seconds": self.seconds,
        }
