"""A user's own data and training loop, handed to hwprune as two callables.

A library user has a trained network, their own data and their own training loop; hwprune never
needs to see the data. ``score(model) -> float`` (higher is better, e.g. validation accuracy) is
what a search ranks candidate plans by and what the report gives beside the latency;
``finetune(model, steps) -> None`` trains a pruned model in place for ``steps`` steps (the short
fine-tune before each candidate is scored, and the long one after pruning). Both are called with
the global RNGs seeded, so a plan's score is as repeatable as the user's loop allows, which is
what lets the evaluator cache scores per plan.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwprune.errors import ConfigError
from hwprune.train import seed_everything

ScoreFn = Callable[[nn.Module], float]
FinetuneFn = Callable[[nn.Module, int], None]


@dataclass(frozen=True)
class UserTraining:
    """``score`` and ``finetune`` as the user wrote them; either may be None (nothing to rank by / no fine-tune).

    ``batches``: optional ``(inputs, targets)`` batches (e.g. the user's training ``DataLoader``), read
    only by the ``taylor`` criterion, which needs gradients of the loss.
    """

    score: ScoreFn | None = None
    finetune: FinetuneFn | None = None
    batches: Iterable[Any] | None = None

    def __post_init__(self) -> None:
        for name in ("score", "finetune"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name}= must be a function, got {type(value).__name__}")

    def fine_tune(self, model: nn.Module, steps: int, seed: int) -> None:
        """``finetune(model, steps)`` in train mode with the RNGs seeded; nothing without steps or a function."""
        if steps < 0:
            raise ConfigError(f"fine-tune steps must be >= 0, got {steps}")
        if not steps or self.finetune is None:
            return
        was_training = model.training
        seed_everything(seed)
        model.train()
        try:
            self.finetune(model, steps)
        finally:
            model.train(was_training)

    def evaluate(self, model: nn.Module) -> float | None:
        """``score(model)`` in eval mode, checked to be a finite number; None without a score function."""
        if self.score is None:
            return None
        was_training = model.training
        model.eval()
        try:
            value = self.score(model)
        finally:
            model.train(was_training)
        return as_score(value)

    def score_pair(self, model: nn.Module) -> tuple[float, float]:
        """(score, -score): the (accuracy, loss) pair agents rank by, from one number that is higher-better."""
        value = self.evaluate(model)
        if value is None:
            raise ConfigError("a search ranks plans by a score: pass score=(a function of the model)")
        return value, -value


def as_score(value: Any) -> float:
    """A score function's result as a float: a number or a one-element tensor, finite; else one clear line."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"score(model) must return a number (higher is better, e.g. validation accuracy), "
            f"got {type(value).__name__} {value!r:.60}"
        )
    if not math.isfinite(float(value)):
        raise ConfigError(f"score(model) returned {value}: it must be a finite number (did training diverge?)")
    return float(value)
