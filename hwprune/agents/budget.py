"""Latency budgets: parse what the user typed, and refuse budgets that make no sense up front.

A budget is a *measured* target: "0.5x" is half the unpruned model's measured median on the
device, "4.2ms" is absolute. A relative budget is a ratio and is judged as one (the unpruned model
is measured alongside the pruned one, see ``hwprune.job.measure_judged``). Refusing an
already-met or impossible budget before searching saves a user from a long search that can only
end in "nothing to do" or failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hwprune.errors import BudgetError

_BUDGET = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(x|ms)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """What the user asked for. ``ms`` is fixed when the run starts; ``fraction`` is set for "0.5x"."""

    text: str
    ms: float
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str, reference_ms: float | None) -> Budget:
        return cls(str(text), parse_budget(text, reference_ms), budget_fraction(text))

    def against(self, unpruned_ms: float | None) -> float:
        """The budget in ms judged against an unpruned median measured alongside (relative budgets only)."""
        return self.fraction * unpruned_ms if self.fraction is not None and unpruned_ms is not None else self.ms


def _split(text: str) -> tuple[float, str]:
    match = _BUDGET.match(str(text))
    if match is None:
        raise BudgetError(
            f"malformed budget '{text}': write a fraction of the unpruned latency like 0.5x, or a time like 4.2ms"
        )
    value, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"budget '{text}' must be positive (e.g. 0.5x or 4.2ms)")
    return value, unit


def budget_fraction(text: str) -> float | None:
    """The fraction of a relative budget (``"0.5x"`` -> 0.5); None for an absolute one (``"4.2ms"``)."""
    value, unit = _split(text)
    return value if unit == "x" else None


def parse_budget(text: str, reference_ms: float | None) -> float:
    """Budget in ms from ``"0.5x"`` (fraction of ``reference_ms``, the measured unpruned latency) or ``"4.2ms"``."""
    value, unit = _split(text)
    if unit == "ms":
        return value
    if reference_ms is None or not math.isfinite(reference_ms) or reference_ms <= 0:
        raise BudgetError(f"budget '{text}' is relative, but there is no measured unpruned latency to scale")
    return value * reference_ms


def check_budget(budget_ms: float, measured_full_ms: float, predicted_min_ms: float) -> None:
    """Refuse a budget the unpruned model already meets, or one even the smallest allowed model misses.

    ``predicted_min_ms`` is the predictor's floor (``SearchContext.floor_ms``): the fastest of
    every group at its minimum keep and that minimum rounded up to an aligned width.
    """
    if budget_ms >= measured_full_ms:
        raise BudgetError(
            f"budget {budget_ms:.3f} ms is already met: the unpruned model measures {measured_full_ms:.3f} ms "
            f"(median); ask for less, e.g. 0.5x"
        )
    check_feasible(budget_ms, predicted_min_ms, f"unpruned measures {measured_full_ms:.3f} ms")


def check_feasible(budget_ms: float, floor_ms: float, detail: str) -> None:
    """Refuse a non-positive budget, or one under ``floor_ms``: no plan any agent may return meets it."""
    if not (math.isfinite(budget_ms) and budget_ms > 0):
        raise BudgetError(f"budget must be a positive number of ms, got {budget_ms}")
    if floor_ms > budget_ms:
        raise BudgetError(
            f"budget {budget_ms:.3f} ms is impossible: even with every group at (or just above) its minimum keep "
            f"the predicted latency is {floor_ms:.3f} ms ({detail})"
        )
