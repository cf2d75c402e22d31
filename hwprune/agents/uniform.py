"""Uniform baseline: one keep ratio for every group, the largest whose predicted latency fits.

It is the reference every other agent must beat: it uses the same predictor and minimum keep,
but spends nothing on deciding *where* to prune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.agents.base import CostMeter, SearchAgent, SearchContext, SearchResult, register_agent
from hwprune.agents.state import SearchState, load_state, state_header
from hwprune.errors import BudgetError, ConfigError
from hwprune.pruning import PruningPlan, round_channels


@register_agent
class UniformAgent(SearchAgent):
    """Bisection on the keep ratio r in [min_keep_ratio, 1].

    Each group keeps ``round_channels(r * channels, round_to)``, clamped to its minimum keep. The
    bisection keeps the invariant "plan(lo) meets the budget, plan(hi) does not" and stops when
    the interval is narrower than ``tolerance`` (or after ``max_iterations`` halvings), returning
    plan(lo). With a predictor that grows with channel counts this is the largest ratio that
    meets the budget, up to ``tolerance``; with a noisy table it is still a ratio that meets it.
    ``evaluate_final`` scores the chosen plan once with the evaluator (off by default: the job
    measures the baseline after the long fine-tune anyway).
    """

    name = "uniform"
    resume_neutral = frozenset({"evaluate_final"})  # max_iterations can bound the bisection, so it counts

    def __init__(self, *, tolerance: float = 1e-4, max_iterations: int = 60, evaluate_final: bool = False) -> None:
        if not 0 < tolerance < 1:
            raise ConfigError(f"uniform tolerance must be in (0, 1), got {tolerance}")
        if max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {max_iterations}")
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.evaluate_final = evaluate_final

    def options(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "max_iterations": self.max_iterations,
                "evaluate_final": self.evaluate_final}

    @staticmethod
    def plan_at(ctx: SearchContext, ratio: float) -> PruningPlan:
        keep = {}
        for g in ctx.graph.groups:
            k = round_channels(ratio * g.channels, g.channels, ctx.round_to)
            keep[g.name] = max(k, ctx.min_keep(g.name))
        return ctx.full_plan().with_keep(keep)

    def search(self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None) -> SearchResult:
        full_ms = ctx.predict_ms(ctx.full_plan())
        header = state_header(self, ctx, budget_ms, full_ms)
        state = load_state(state_path, header) if state_path is not None else None
        if state is not None and state.done:
            return state.result(ctx.predict_ms(state.plan))
        ctx.require_feasible(budget_ms)
        smallest_ms = ctx.predict_ms(self.plan_at(ctx, ctx.min_keep_ratio))
        if smallest_ms > budget_ms:
            raise BudgetError(
                f"no uniform keep ratio meets {budget_ms:.3f} ms: the smallest uniform plan is predicted at "
                f"{smallest_ms:.3f} ms, slower than some aligned plans; use --round-to 8 (hardware-friendly widths)"
            )
        if state is None:
            lo, hi, step, history = ctx.min_keep_ratio, 1.0, 0, []
            meter = CostMeter(ctx)
        else:
            lo, hi, step, history = state.extra["lo"], state.extra["hi"], state.iteration, state.history
            meter = CostMeter(ctx, state.cost | {"resumes": state.cost.get("resumes", 0) + 1})

        def checkpoint(done: bool, plan: PruningPlan) -> None:
            if state_path is not None:
                SearchState(header, step, plan, history, meter.total(), done, {"lo": lo, "hi": hi}).save(state_path)

        if step == 0 and full_ms <= budget_ms:
            lo = hi = 1.0  # nothing to prune under the predictor: the full model is the answer
        while hi - lo > self.tolerance and step < self.max_iterations:
            mid = (lo + hi) / 2
            ms = ctx.predict_ms(self.plan_at(ctx, mid))
            meets = ms <= budget_ms
            lo, hi = (mid, hi) if meets else (lo, mid)
            step += 1
            history.append({"iteration": step, "ratio": mid, "predicted_ms": ms, "meets": meets})
            checkpoint(False, self.plan_at(ctx, lo))
        plan = self.plan_at(ctx, lo)
        ms = ctx.predict_ms(plan)
        final: dict[str, Any] = {"iteration": step, "final": True, "ratio": lo, "predicted_ms": ms,
                                 "budget_ms": budget_ms, "keep": plan.keep}
        if self.evaluate_final:
            final["accuracy"] = ctx.evaluate(plan)
        history.append(final)
        checkpoint(True, plan)
        return SearchResult(plan, history, meter.total(), ms)
