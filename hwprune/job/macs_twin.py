"""A FLOPs-targeted twin of a budgeted search: the same agent, a MACs-proportional predictor, one shot.

The control that answers "does pruning against measured latency pay?". Agents see cost only
through ``ctx.predict_ms``, so handing one a predictor proportional to the plan's MACs turns it
into the FLOPs-targeted pruner the papers compare against, with everything else (evaluator,
seed, filters, long fine-tune, measurements) the job's own. The predictor is scaled so the
search target *is* the budget's fraction of the unpruned MACs: a 0.5x budget searches for half
the MACs, exactly, with no margin and no second try, because a FLOPs pruner never looks at the
device. The final model is then measured and judged against the latency budget like any other;
whether it meets it is the finding, not a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hwprune.agents import Budget, check_budget, get_agent
from hwprune.agents.state import finished_result
from hwprune.job.budgeted import SearchOutcome, continued_run, final_start, search_context
from hwprune.job.config import JobConfig
from hwprune.job.measure import Loaded, finish, measure_judged
from hwprune.job.tries import judged_from, load_tries, record_of, save_tries, total_cost
from hwprune.latency import FlopsPredictor
from hwprune.profilers import Measurement
from hwprune.pruning import apply_plan

log = logging.getLogger(__name__)


def macs_predictor(loaded: Loaded, budget: Budget, base: Measurement) -> FlopsPredictor:
    """MACs share times a scale chosen so that ``budget.ms`` is the budget's fraction of the full MACs.

    For a relative budget the scale is ``budget.ms / fraction`` (the unpruned latency the budget was
    fixed from, stored in job.json, so a resumed run predicts the same numbers); for an absolute one
    the unpruned model's measured median, the latency a FLOPs count is usually scaled by.
    """
    full_ms = budget.ms / budget.fraction if budget.fraction else base.median_ms
    return FlopsPredictor(loaded.graph, full_ms)


def macs_targeted_search(
    cfg: JobConfig, loaded: Loaded, run: Path, budget: Budget, base: Measurement, resume: bool
) -> SearchOutcome:
    """Search once against the budget's share of MACs, fine-tune, measure; the outcome, met or not."""
    predictor = macs_predictor(loaded, budget, base)
    ctx, evaluator = search_context(cfg, loaded, predictor)
    check_budget(budget.ms, base.median_ms, ctx.floor_ms())  # under the fewest MACs any plan may keep
    target = budget.ms
    tries_path, state = run / "tries.json", run / "search-1.json"
    tries = load_tries(tries_path) if resume else []
    if not tries:
        agent = get_agent(cfg.agent, **cfg.agent_options)
        result = finished_result(state) or agent.search(ctx, target, state, continued_run(cfg))
        pruned, _ = apply_plan(loaded.model, result.plan, loaded.graph)
        judged = measure_judged(loaded, pruned, cfg, budget)
        tries = [
            {
                "target_ms": target,
                "predicted_ms": ctx.predict_ms(result.plan),
                **record_of(judged),
                "plan": result.plan.to_dict(),
                "history": result.history,
                "cost": result.cost | {"densify_s": 0.0},
                "densified": [],
            }
            | ({"lineage": [p.to_dict() for p in result.lineage]} if result.lineage else {})
        ]
        save_tries(tries_path, tries)
        log.info(f"search 1 (MACs-targeted): target {target:.3f} ms of MACs, {judged.describe()}")
    model, applied = final_start(loaded, evaluator, tries[0])
    final, taken = finish(cfg, loaded, model, budget, tried_met=judged_from(tries[0], budget).met)
    search = {
        "agent": cfg.agent,
        "options": cfg.agent_options,
        "tries": tries,
        "taken_try": 1,
        "cost": total_cost(tries),
        "predictor": predictor.describe(),
        "continued_from": cfg.continue_from,
    }
    measured = Measurement.from_dict(tries[0]["measured"])
    return SearchOutcome(model, applied, measured, search, predictor, final, taken)
