"""NetAdapt (Yang et al., ECCV 2018): greedy, latency-table-driven, one group per iteration.

Each iteration asks for a latency reduction that decays over iterations. For every group, the
predictor (the latency table) gives the largest keep count that achieves the reduction when only
that group shrinks (every smaller count is priced, not bisected: on a SIMD backend latency is not
monotone in width, and cutting an aligned width by one channel can make a layer slower); each
such candidate is pruned (largest-L2 filters kept), short-term fine-tuned and scored on the
validation split by the evaluator; the best candidate becomes the new plan. The loop ends when
the predicted latency meets the budget.

Each candidate is cut from the model the search has reached (the previous winners, each cut and
short-term fine-tuned in turn), as in the paper (``weights="carried"``). ``weights="original"``
cuts every candidate from the original weights instead, which makes a score a function of the
channel counts alone; but deep into a search, candidates cut that far from the original weights
all score near chance after a short fine-tune, and the search chooses by noise
(docs/benchmarks.md, "What we learned"). With carried weights the search also returns its lineage, and the job long
fine-tunes the model the search reached (the paper's final step) instead of cutting the plan
afresh from the original weights; the long fine-tune's steps and seed are every agent's.

Handed an earlier search of the same job (``start``: the table was corrected, or a new try has a
new target), the loop continues that path rather than walk it again from the full model
(:meth:`NetAdaptAgent.continued`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hwprune.agents.base import CostMeter, SearchAgent, SearchContext, SearchResult, check_choice, register_agent
from hwprune.agents.state import SearchState, begin_search
from hwprune.errors import BudgetError, ConfigError
from hwprune.progress import bars_off
from hwprune.pruning import PruningPlan

log = logging.getLogger(__name__)
SELECTIONS = ("loss", "accuracy", "accuracy_per_ms")
WEIGHTS = ("carried", "original")


@register_agent
class NetAdaptAgent(SearchAgent):
    """Options (defaults in brackets):

    - ``initial_reduction`` [0.1]: latency reduction asked for in the first iteration, as a fraction
      of the unpruned model's predicted latency. 0.1 with ``decay`` 0.9 reaches 0.5x in about 7
      iterations and 0.3x in about 12, which keeps a search over ResNet-20's 12 groups to a few
      hundred short fine-tunes; smaller steps prune more gently but cost proportionally more.
    - ``decay`` [0.9]: the reduction is multiplied by this every iteration (the paper's schedule
      shape), so early, easy cuts are coarse and late ones, near the budget, are fine.
    - ``min_reduction`` [0.01]: floor of the decayed reduction (fraction of unpruned latency), so the
      number of iterations stays bounded for any feasible budget. The candidate-share cap below
      never asks for less either (only the last iteration, asked for the remaining gap, does).
    - ``candidate_share`` [0.5]: an iteration never asks for more than this share of the remaining
      groups can deliver on their own (each at its minimum keep). A group that cannot reach the
      asked reduction is no candidate, and in a ResNet the groups that can reach a large one are
      the few residual stages whose channels run through every block (an inner group of
      ResNet-20 saves at most 4-8 %): with the schedule alone the search would cut only the
      residual stages. The cap keeps a real choice among groups; 1.0 asks for what every group
      can give, 0 switches it off. Late in a search half the groups are near their minimum and
      can give almost nothing, and a cap that followed them would ask for crumbs, cutting one
      layer a channel at a time; so it stops at ``min_reduction``, and the groups that cannot
      give that much sit out (docs/benchmarks.md, "What we learned").
    - ``selection`` ["loss"]: lowest validation cross-entropy after the short fine-tune. "accuracy"
      is the paper's rule, highest validation accuracy; on the ~1000 validation samples a search
      can afford, accuracy moves in 0.1 % steps and the candidates of one iteration often sit
      within a few samples of each other, so the winner is decided by noise; the loss of the same
      model ranks them on every sample's confidence. "accuracy_per_ms" picks the smallest
      accuracy drop per ms saved (it favours candidates that overshoot the asked reduction
      cheaply). Ties go to the lower predicted latency, then the group that comes first.
    - ``weights`` ["carried"]: what each candidate is cut from: the model the previous iterations
      produced, fine-tuned step by step (the paper), or the original weights (see the module notes).
    - ``max_iterations`` [200]: a safety bound (every iteration lowers the predicted latency, so the
      loop ends anyway); reaching it raises BudgetError, and a search given the same state file and a
      larger bound resumes (``hwprune prune`` removes a fresh run that fails, so there it is a new
      run with ``--agent-option max_iterations=N``). It is generous because late iterations ask
      for what half the groups can give, which is little: a search over many groups (MobileNetV2
      has 25) to a tight target after a re-search needs many of them.
    - ``progress`` [True]: a tqdm bar over iterations (silent when stderr is not a terminal).

    The short fine-tune (steps, lr, seed) is the evaluator's: every agent is scored the same way.
    The last iteration never asks for more than the remaining gap to the budget, so the final plan
    lands just under it instead of overshooting.
    """

    name = "netadapt"

    def __init__(
        self,
        *,
        initial_reduction: float = 0.1,
        decay: float = 0.9,
        min_reduction: float = 0.01,
        candidate_share: float = 0.5,
        selection: str = "loss",
        weights: str = "carried",
        max_iterations: int = 200,
        progress: bool = True,
    ) -> None:
        if not 0 < initial_reduction < 1:
            raise ConfigError(f"initial_reduction must be in (0, 1), got {initial_reduction}")
        if not 0 < decay <= 1:
            raise ConfigError(f"decay must be in (0, 1], got {decay}")
        if not 0 < min_reduction <= initial_reduction:
            raise ConfigError(f"min_reduction must be in (0, initial_reduction], got {min_reduction}")
        if max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {max_iterations}")
        if not 0 <= candidate_share <= 1:
            raise ConfigError(f"candidate_share must be in [0, 1], got {candidate_share}")
        self.candidate_share = candidate_share
        self.initial_reduction = initial_reduction
        self.decay = decay
        self.min_reduction = min_reduction
        self.selection = check_choice("selection", selection, SELECTIONS)
        self.weights = check_choice("weights", weights, WEIGHTS)
        self.max_iterations = max_iterations
        self.progress = progress

    def reduction_fraction(self, iteration: int) -> float:
        """Reduction asked for at ``iteration`` (0-based), as a fraction of the unpruned latency."""
        return max(self.initial_reduction * self.decay**iteration, self.min_reduction)

    # ---- the loop ----------------------------------------------------------------------------------
    def search(
        self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None, start: SearchResult | None = None
    ) -> SearchResult:
        """The greedy loop; given ``start`` (an earlier search of the job, on an older table or another
        target), it continues that search's path (see :meth:`continued`) instead of starting from the
        full model."""
        header, state, finished = begin_search(self, ctx, budget_ms, state_path)
        if finished is not None:
            return finished
        full_ms = header["full_predicted_ms"]
        if state is None:
            history = self.continued(ctx, start, budget_ms) if start is not None else []
            iteration, plan = len(history), self.path(ctx, history)[-1]
            meter = CostMeter(ctx)
            if history:
                log.info("netadapt: continuing an earlier search's path after its iteration %d", iteration)
        else:
            iteration, plan, history = state.iteration, state.plan, state.history
            meter = CostMeter(ctx, state.cost | {"resumes": state.cost.get("resumes", 0) + 1})
            log.info("netadapt: resuming after iteration %d", iteration)
        current_ms = ctx.predict_ms(plan)
        lineage = self.lineage(ctx, history)
        bar = tqdm(desc="netadapt", unit="iter", initial=iteration, disable=True if bars_off(self.progress) else None)
        try:
            while current_ms > budget_ms:
                if iteration >= self.max_iterations:
                    raise BudgetError(
                        f"NetAdapt stopped after {iteration} iterations at {current_ms:.3f} ms predicted, "
                        f"budget {budget_ms:.3f} ms: raise max_iterations or initial_reduction "
                        "(hwprune prune --agent-option max_iterations=N)"
                    )
                bar.set_postfix(predicted=f"{current_ms:.3f}ms", budget=f"{budget_ms:.3f}ms")
                want = min(self.reduction_fraction(iteration) * full_ms, current_ms - budget_ms)
                row = self.iterate(ctx, plan, current_ms, want, iteration, bar, lineage, self.min_reduction * full_ms)
                plan = plan.with_keep({row["group"]: row["keep"]})
                lineage += (plan,) if self.weights == "carried" else ()
                current_ms = row["predicted_ms"]
                iteration += 1
                history.append(row)
                bar.update(1)
                log.info(
                    "netadapt iteration %d: %s %d -> %d channels, %.3f ms predicted, val acc %.4f",
                    iteration,
                    row["group"],
                    row["from_keep"],
                    row["keep"],
                    current_ms,
                    row["accuracy"],
                )
                if state_path is not None:
                    SearchState(header, iteration, plan, history, meter.total()).save(state_path)
        finally:
            bar.close()
        cost = meter.total()
        if state_path is not None:
            extra = {"lineage": [p.to_dict() for p in lineage]}
            SearchState(header, iteration, plan, history, cost, done=True, extra=extra).save(state_path)
        return SearchResult(plan, history, cost, current_ms, lineage)

    @staticmethod
    def path(ctx: SearchContext, history: list[dict[str, Any]]) -> list[PruningPlan]:
        """The full plan, then the plan each iteration in ``history`` reached."""
        plans = [ctx.full_plan()]
        for row in history:
            plans.append(plans[-1].with_keep({row["group"]: row["keep"]}))
        return plans

    def lineage(self, ctx: SearchContext, history: list[dict[str, Any]]) -> tuple[PruningPlan, ...]:
        """The plans the iterations in ``history`` chose, in order: what carried weights are cut from."""
        return tuple(self.path(ctx, history)[1:]) if self.weights == "carried" else ()

    def continued(self, ctx: SearchContext, start: SearchResult, budget_ms: float) -> list[dict[str, Any]]:
        """The iterations of ``start`` this search keeps: its path up to the last plan the current table
        still prices over ``budget_ms``, where a search walking that path would not yet have stopped.

        The job searches again when timing a plan's own widths moves its prediction off the target,
        and at a new try after a measured miss or slack. Searching from the full model again would
        re-score most of the path for nothing: the corrected prices change which keep count
        achieves each asked reduction, so the candidates differ from the first step on and miss
        the evaluator's cache (docs/budget-loop.md, "Why each rule"). Kept, the earlier steps stand
        as they were chosen (their rows keep the prices of the older table); the path is cut where
        the current table puts it under the target (the plan was over-priced, or the target
        loosened: a wider one fits) or continued from its end (under-priced, or a tighter target),
        and the loop goes on from there.
        """
        plans = self.path(ctx, start.history)
        under = next((i for i, plan in enumerate(plans) if ctx.predict_ms(plan) <= budget_ms), len(plans))
        return [dict(row) for row in start.history[: max(under - 1, 0)]]

    def iterate(
        self,
        ctx: SearchContext,
        plan: PruningPlan,
        current_ms: float,
        want_ms: float,
        iteration: int,
        bar: tqdm,
        lineage: tuple[PruningPlan, ...] = (),
        floor_ms: float = 0.0,
    ) -> dict[str, Any]:
        """One NetAdapt iteration: propose one candidate per group, score them (cut from the model
        ``lineage`` produced), pick the best. The candidate-share cap asks for no less than ``floor_ms``."""
        tol = 1e-9 * max(current_ms, 1e-12)
        options: dict[str, dict[int, float]] = {}  # per group: predicted latency at each smaller keep
        skipped: list[str] = []
        for g in ctx.graph.groups:
            smaller = [k for k in ctx.allowed_keeps(g.name) if k < plan.keep[g.name]]
            if smaller:
                options[g.name] = {k: ctx.predict_ms(plan.with_keep({g.name: k})) for k in smaller}
            else:
                skipped.append(g.name)
        floors = {name: min(ms.values()) for name, ms in options.items()}  # the most each group can save
        cuts = sorted((current_ms - ms for ms in floors.values()), reverse=True)
        best_cut = cuts[0] if cuts else 0.0
        if best_cut <= tol:
            raise BudgetError(
                f"NetAdapt cannot lower the predicted latency below {current_ms:.3f} ms by shrinking any "
                "single group further: lower the minimum keep ratio or raise the budget"
            )
        asked = want_ms
        if self.candidate_share > 0:
            shared = cuts[max(1, math.ceil(self.candidate_share * len(cuts))) - 1]
            if shared > tol:
                asked = min(asked, max(shared, floor_ms))  # at least that share of the groups can deliver it
        while asked > best_cut + tol:  # no group alone can give that much: ask for less (halving)
            asked /= 2
        target = current_ms - asked
        candidates: list[dict[str, Any]] = []
        for index, g in enumerate(ctx.graph.groups):
            if g.name not in floors:
                continue
            if floors[g.name] > target + tol:
                skipped.append(g.name)
                continue
            k = max(k for k, ms in options[g.name].items() if ms <= target + tol)  # the largest that delivers
            cand = plan.with_keep({g.name: k})
            bar.set_postfix_str(f"scoring {g.name} {plan.keep[g.name]}->{k}")
            accuracy, loss = ctx.score(cand, lineage)
            candidates.append(
                {
                    "group": g.name,
                    "index": index,
                    "from_keep": plan.keep[g.name],
                    "keep": k,
                    "predicted_ms": ctx.predict_ms(cand),
                    "accuracy": accuracy,
                    "loss": loss,
                }
            )
        best = self.select(ctx, plan, current_ms, candidates, lineage)
        return {
            "iteration": iteration + 1,
            "from_ms": current_ms,
            "requested_ms": want_ms,
            "asked_ms": asked,
            "target_ms": target,
            "group": best["group"],
            "from_keep": best["from_keep"],
            "keep": best["keep"],
            "predicted_ms": best["predicted_ms"],
            "accuracy": best["accuracy"],
            "loss": best["loss"],
            "candidates": [{k: v for k, v in c.items() if k != "index"} for c in candidates],
            "skipped": sorted(skipped, key=[g.name for g in ctx.graph.groups].index),
        }

    def select(
        self,
        ctx: SearchContext,
        plan: PruningPlan,
        current_ms: float,
        candidates: list[dict[str, Any]],
        lineage: tuple[PruningPlan, ...] = (),
    ) -> dict[str, Any]:
        if self.selection == "loss":
            return min(candidates, key=lambda c: (c["loss"], c["predicted_ms"], c["index"]))
        if self.selection == "accuracy":
            return max(candidates, key=lambda c: (c["accuracy"], -c["predicted_ms"], -c["index"]))
        base = ctx.score(plan, lineage[:-1])[0]  # cached: the winning candidate of the previous iteration
        return max(
            candidates,
            key=lambda c: (
                (c["accuracy"] - base) / max(current_ms - c["predicted_ms"], 1e-12),
                -c["predicted_ms"],
                -c["index"],
            ),
        )
