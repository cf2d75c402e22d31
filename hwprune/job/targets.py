"""Search targets: pure arithmetic on the budget, the table's prediction and what was measured."""

from __future__ import annotations

from typing import Any

from hwprune.agents import Budget
from hwprune.job.measure import Judged
from hwprune.job.tries import judged_from
from hwprune.latency import LatencyTable


def first_target(budget: Budget, predicted_full_ms: float, table: LatencyTable, margin: float) -> float:
    """The first search target: the budget, less ``margin``, in the table's milliseconds.

    A relative budget is a fraction of the unpruned latency as the table sees it: the lower of its
    prediction and the unpruned readings its calibration was paired with (``reference_ms``), so the
    target does not move with the machine's load and every agent searching one table starts from
    the same one. The lower, because a fit that over-prices the unpruned model loosens the target
    by as much (docs/budget-loop.md).
    """
    full = predicted_full_ms
    reference = (table.calibration or {}).get("reference_ms")
    if budget.fraction is not None and reference:
        full = min(full, float(reference))
    return budget.against(full) * (1 - margin)


def wider_target(target_ms: float, predicted_ms: float, judged: Judged, margin: float, slack: float) -> float | None:
    """The looser target to search for a wider plan when one measured more than ``slack`` under its budget.

    None when the plan used the budget within ``slack``, or when the loosened target
    (:func:`next_target`) is not over the one that found the plan: a search against it can only
    find the same plan or a narrower one, measured again for nothing.
    """
    if slack <= 0 or judged.measured.median_ms >= judged.budget_ms * (1 - slack):
        return None
    looser = next_target(target_ms, predicted_ms, judged.budget_ms, judged.measured.median_ms, margin)
    return looser if looser > target_ms else None


def under_misses(
    kept_target: float, target: float, tries: list[dict[str, Any]], budget: Budget, margin: float, reserve: float
) -> float | None:
    """``target`` held under every recorded miss, or None when that leaves it not over ``kept_target``.

    A miss is a try not under its budget by half the margin. Its error carries over
    (:func:`next_target`, less ``reserve``): a search between a kept plan and a wider one that
    missed aims as any search after a miss does; a looser target for a plan's slack (``reserve``
    0) stops where the miss's error puts the budget, so it cannot find the missed plan again but
    can find one between. A target not over the one that found the kept plan can only find that
    plan or a narrower one.
    """
    for t in tries:
        judged = judged_from(t, budget)
        if not judged.clears(margin):
            target = min(
                target,
                next_target(t["target_ms"], t["predicted_ms"], judged.budget_ms, judged.measured.median_ms, reserve),
            )
    return target if target > kept_target else None


def next_target(target_ms: float, predicted_ms: float, budget_ms: float, measured_ms: float, margin: float) -> float:
    """The search target after a plan predicted at ``predicted_ms`` measured ``measured_ms`` against ``budget_ms``.

    The table's error on that plan is assumed to carry over to the next one, so the next plan aims
    at the budget less the margin: a tighter target after a miss, a looser one after a plan that
    left the budget's slack unused. The error is scaled out of the plan, not out of the old target:
    a plan can sit far under its target (densify found it cheaper than the search thought), and a
    target tightened from the old one could admit the same plan again.
    """
    return min(target_ms, predicted_ms) * budget_ms * (1 - margin) / measured_ms
