"""Uniform baseline: one keep ratio for every group, the largest whose predicted latency fits.

It is the reference every other agent must beat: it uses the same predictor and minimum keep,
but spends nothing on deciding *where* to prune.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from hwprune.agents.base import CostMeter, SearchAgent, SearchContext, SearchResult, register_agent
from hwprune.agents.state import SearchState, begin_search
from hwprune.errors import BudgetError
from hwprune.pruning import PruningPlan, round_channels


@register_agent
class UniformAgent(SearchAgent):
    """The widest uniform plan whose predicted latency fits: every distinct one is predicted.

    Each group keeps ``round_channels(r * channels, round_to)``, clamped to its minimum keep, so
    as r runs over [min_keep_ratio, 1] there are only as many distinct plans as there are steps
    in the groups' widths (100 for ResNet-20, 3,486 for MobileNetV2), each a cheap prediction.
    Bisection on r would need the predicted latency to grow with r, and on a real table it does
    not: on ONNX Runtime aligned widths are cheaper than odd ones, so a narrower uniform plan can
    be predicted slower than a wider one and a bisection can pass over the plan that fits
    (docs/benchmarks.md, "What we learned"). ``evaluate_final`` scores the chosen plan once with
    the evaluator (off by default: the job measures the baseline after the long fine-tune anyway).
    """

    name = "uniform"
    resume_neutral = frozenset({"evaluate_final"})

    def __init__(self, *, evaluate_final: bool = False) -> None:
        self.evaluate_final = evaluate_final

    @staticmethod
    def plan_at(ctx: SearchContext, ratio: float) -> PruningPlan:
        keep = {}
        for g in ctx.graph.groups:
            k = round_channels(ratio * g.channels, g.channels, ctx.step(g.name))
            keep[g.name] = max(k, ctx.min_keep(g.name))
        return ctx.full_plan().with_keep(keep)

    @classmethod
    def ladder(cls, ctx: SearchContext) -> list[tuple[float, PruningPlan]]:
        """Every distinct uniform plan, narrowest first, each with the largest ratio tried that gives it.

        A group's keep changes only where ``ratio * channels / round_to`` crosses a half, so the
        edges and the midpoints between them reach every plan.
        """
        lo = ctx.min_keep_ratio
        steps = {g.name: ctx.step(g.name) for g in ctx.graph.groups}
        edges = {lo, 1.0} | {
            (j + 0.5) * steps[g.name] / g.channels
            for g in ctx.graph.groups
            for j in range(g.channels // steps[g.name] + 1)
        }
        edges = sorted(e for e in edges if lo <= e <= 1.0)
        ratios = sorted(set(edges) | {(a + b) / 2 for a, b in pairwise(edges)})
        plans: dict[tuple[int, ...], tuple[float, PruningPlan]] = {}
        for r in ratios:
            plan = cls.plan_at(ctx, r)
            plans[plan.key()] = (r, plan)  # later (larger) ratios overwrite: the largest that gives the plan
        return sorted(plans.values(), key=lambda rp: rp[0])

    def search(
        self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None, start: SearchResult | None = None
    ) -> SearchResult:
        """Predicting every uniform plan is cheap: an earlier search (``start``) is not needed."""
        header, state, finished = begin_search(self, ctx, budget_ms, state_path)
        if finished is not None:
            return finished
        meter = CostMeter(ctx)
        ladder = self.ladder(ctx)
        predicted = [ctx.predict_ms(plan) for _, plan in ladder]
        fitting = [i for i, ms in enumerate(predicted) if ms <= budget_ms]
        if not fitting:
            fastest = min(range(len(ladder)), key=predicted.__getitem__)
            raise BudgetError(
                f"no uniform keep ratio meets {budget_ms:.3f} ms: the fastest uniform plan (ratio "
                f"{ladder[fastest][0]:.3f}) is predicted at {predicted[fastest]:.3f} ms; "
                "try --agent netadapt, or --round-to 8 (hardware-friendly widths)"
            )
        ratio, plan = ladder[fitting[-1]]
        ms = predicted[fitting[-1]]
        history: list[dict[str, Any]] = [
            {"iteration": i + 1, "ratio": r, "predicted_ms": p_ms, "meets": p_ms <= budget_ms}
            for i, ((r, _), p_ms) in enumerate(zip(ladder, predicted, strict=True))
        ]
        final: dict[str, Any] = {
            "iteration": len(history),
            "final": True,
            "ratio": ratio,
            "predicted_ms": ms,
            "budget_ms": budget_ms,
            "keep": plan.keep,
        }
        if self.evaluate_final:
            final["accuracy"] = ctx.evaluate(plan)
        history.append(final)
        if state_path is not None:
            SearchState(header, len(history), plan, history, meter.total(), True, {}).save(state_path)
        return SearchResult(plan, history, meter.total(), ms)
