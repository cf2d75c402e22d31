"""BUDGETED_DOC"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from hwprune.agents import Budget, SearchContext, check_budget
from hwprune.errors import BudgetError, TableError
from hwprune.evaluator import Evaluator
from hwprune.job.config import JobConfig
from hwprune.job.measure import (
    Judged,
    Loaded,
    finish,
    measure_judged,
)
from hwprune.job.report import percent_used
from hwprune.job.search_try import search_try
from hwprune.job.targets import first_target, next_target, under_misses, wider_target
from hwprune.job.tries import as_result, judged_from, load_tries, record_of, save_tries, total_cost
from hwprune.latency import LatencyTable, Predictor, TableSetting, profile_model, timing_like
from hwprune.latency.build import BLOCK_WARMUP_S
from hwprune.profilers import Measurement
from hwprune.pruning import PruningPlan, apply_plan


@dataclass
class SearchOutcome:
    model: nn.Module
    plan: PruningPlan
    measured: Measurement
    search: dict[str, Any]
    predictor: Predictor
    final: Judged  # the fine-tuned model, judged
    final_measurements: int


def latency_table(cfg: JobConfig, loaded: Loaded, run: Path, resume: bool) -> LatencyTable:
    """The user's table (checked for device and setting), or one profiled now into the run directory."""
    if cfg.lut:
        # A resumed run reads its own copy: the user's table plus the widths this run measured (densify.py).
        source = run / "lut.json" if resume and (run / "lut.json").is_file() else Path(cfg.lut)
        table = LatencyTable.load(
            source, expected_key=loaded.profiler.device_key(), allow_foreign=cfg.allow_foreign_table
        )
        wanted = {
            "model": loaded.spec.name,
            "batch": cfg.batch,
            "input_size": list(loaded.spec.input_size),
            "in_channels": loaded.spec.in_channels,
        }
        found = {k: table.settings.get(k) for k in wanted}
        if found != wanted:
            diff = ", ".join(f"{k}={found[k]!r} (run wants {v!r})" for k, v in wanted.items() if found[k] != v)
            raise TableError(
                f"latency table {cfg.lut} was profiled for another setting: {diff}; "
                "re-run `hwprune profile` with this model and batch"
            )
        return table
    fp = loaded.profiler
    setting = TableSetting(
        model=loaded.spec.name,
        in_channels=loaded.spec.in_channels,
        num_classes=loaded.spec.num_classes,
        input_size=loaded.spec.input_size,
        batch=cfg.batch,
        backend=cfg.backend,
        threads=int(fp.fingerprint().get("threads") or 0),
        repeats=fp.repeats,
        runs=fp.runs,
        warmup=fp.warmup,
        warmup_s=BLOCK_WARMUP_S,  # the table `hwprune profile` would make, not the job's whole-model warm-up
        calib_plans=cfg.calibration_plans,
    )
    print(f"profiling {loaded.spec.name} blocks on {cfg.backend} into {run / 'lut.json'}")
    table, _ = profile_model(
        setting, run / "lut.json", resume=resume, model=loaded.model, profiler=timing_like(setting.to_dict(), fp)
    )
    return table


def budgeted_search(
    cfg: JobConfig, loaded: Loaded, run: Path, budget: Budget, base: Measurement, resume: bool
) -> SearchOutcome:
    table = latency_table(cfg, loaded, run, resume)
    evaluator = Evaluator(
        loaded.model,
        loaded.graph,
        loaded.data,
        finetune_steps=cfg.search_finetune_steps,
        seed=cfg.seed,
        val_samples=cfg.val_samples,
        precision=cfg.precision,
        criterion=cfg.criterion or "l2",
        taylor_batches=cfg.taylor_batches,
    )
    ctx = SearchContext(
        loaded.spec.name,
        loaded.model,
        loaded.graph,
        Predictor(table, loaded.graph),
        evaluator,
        seed=cfg.seed,
        min_keep_ratio=cfg.min_keep_ratio,
        round_to=cfg.round_to,
    )
    check_budget(budget.ms, base.median_ms, ctx.floor_ms())
    full_ms = ctx.predict_ms(ctx.full_plan())
    if abs(base.median_ms - full_ms) > 0.25 * full_ms:
        # The device is not behaving as it did when profiled (other load, another setting): an absolute
        # budget is judged on measurements taken under that load, so say so before spending a search on it.
        warnings.warn(
            f"the unpruned model measures {base.median_ms:.3f} ms but the latency table predicts {full_ms:.3f} ms: "
            "the machine is busier (or quieter) than when it was profiled; measured budgets will be off",
            stacklevel=2,
        )

    tries_path = run / "tries.json"
    tries = load_tries(tries_path) if resume else []
    target = first_target(budget, full_ms, table, cfg.margin)
    kept: int | None = None  # a try whose plan met with room to spare, kept while a wider plan is tried
    for i in range(cfg.max_tries):
        if i < len(tries):  # replayed from a resumed run: same targets, same state files
            target = tries[i]["target_ms"]
            done = tries[i]
        else:
            previous = as_result(tries[-1]) if tries else None  # NetAdapt continues the last try's path
            ctx, result, densified = search_try(cfg, loaded, run, ctx, table, target, i + 1, previous)
            # A looser target can find the kept plan again (uniform 0.5x at 1 thread: its next ratios are
            # unaligned and priced over it): its judgement stands, and there is nothing wider to try.
            same = kept is not None and result.plan.key() == as_result(tries[kept]).plan.key()
            if same:
                judged = judged_from(tries[kept], budget)
            else:
                pruned, _ = apply_plan(loaded.model, result.plan, loaded.graph)
                judged = measure_judged(loaded, pruned, cfg, budget)
            done = (
                {
                    "target_ms": target,
                    "predicted_ms": ctx.predict_ms(result.plan),
                    **record_of(judged),
                    "plan": result.plan.to_dict(),
                    "history": result.history,
                    "cost": result.cost,
                    "densified": densified,
                }
                | ({"lineage": [p.to_dict() for p in result.lineage]} if result.lineage else {})
                | ({"same_plan_as": kept + 1} if same else {})
            )
            tries.append(done)
            save_tries(tries_path, tries)
        judged = judged_from(done, budget)
        again = done.get("same_plan_as")  # the try whose kept plan this search found again: taken as it is
        if again:
            print(
                f"search {i + 1}: against {target:.3f} ms the search found search {again}'s plan "
                "again; it is not measured again, and taken"
            )
        else:
            print(
                f"search {i + 1}: target {target:.3f} ms, predicted {done['predicted_ms']:.3f} ms, {judged.describe()}"
            )
        used = percent_used(judged.measured.median_ms, judged.budget_ms)
        last = i == cfg.max_tries - 1
        looser = None if again else wider_target(target, done["predicted_ms"], judged, cfg.margin, cfg.slack_fraction)
        if looser is not None and not last:
            looser = under_misses(target, looser, tries, budget, cfg.margin, reserve=0.0)
            if looser is None:
                print(
                    f"search {i + 1}: the plan uses {used}% of the budget, but a wider one would be "
                    "priced over where an earlier miss puts the budget; taking it"
                )
            else:
                done["slack_used"] = True  # for the report (set again when a resumed run replays this try)
                kept, target = i, looser
                print(
                    f"search {i + 1}: the plan uses {used}% of the budget; searching for a wider one against "
                    f"{target:.3f} ms (this plan is kept in case that one misses)"
                )
                continue
        take = i if judged.clears(cfg.margin) or (last and kept is None and judged.met) else kept
        take = again - 1 if again else take
        between = (
            None
            if last or again or take is None or take == i
            else under_misses(tries[take]["target_ms"], float("inf"), tries, budget, cfg.margin, reserve=cfg.margin)
        )
        if between is not None:
            done["searched_between"] = True  # for the report
            target = between
            print(
                f"search {i + 1}: the wider plan is not under the budget by half the margin; searching between it "
                f"and search {take + 1}'s plan against {target:.3f} ms (that plan is still kept)"
            )
            continue
        if take is not None:
            if take != i:
                kept = None
                if not again:
                    why = "this was the last try" if last else f"no plan lies between it and search {take + 1}'s"
                    print(
                        f"search {i + 1}: the wider plan is not under the budget by half the margin and {why}; "
                        f"taking search {take + 1}'s plan"
                    )
            # The last try's wider plan may still miss once fine-tuned; the plan kept for its slack is the fallback.
            fallback = kept if last and kept is not None and kept != take else None
            outcome = _finish_try(
                cfg, loaded, evaluator, ctx, tries, tries_path, take, budget, accept_miss=last and fallback is None
            )
            if outcome is None and fallback is not None:
                missed = judged_from(tries[take]["final"], budget)
                print(
                    f"search {take + 1}: its fine-tuned model {missed.describe()}; on the last try, taking search "
                    f"{fallback + 1}'s plan, kept for this"
                )
                outcome = _finish_try(
                    cfg, loaded, evaluator, ctx, tries, tries_path, fallback, budget, accept_miss=True
                )
            if outcome is not None:
                return outcome
            done = tries[take]
            judged = judged_from(done["final"], budget)
            print(
                f"search {take + 1}: its fine-tuned model {judged.describe()}; searching again against a tighter target"
            )
        target = next_target(target, done["predicted_ms"], judged.budget_ms, judged.measured.median_ms, cfg.margin)
    raise BudgetError(
        f"no plan met the {budget.text} budget on the device after {cfg.max_tries} searches (measured "
        + ", ".join(f"{t['measured']['summary']['median_ms']:.3f}" for t in tries)
        + " ms): the latency table mispredicts this setting; check it with `hwprune lut-check` or raise --max-tries"
    )


def _finish_try(
    cfg: JobConfig,
    loaded: Loaded,
    evaluator: Evaluator,
    ctx: SearchContext,
    tries: list[dict[str, Any]],
    tries_path: Path,
    take: int,
    budget: Budget,
    accept_miss: bool,
) -> SearchOutcome | None:
    """Long fine-tune try ``take``'s plan and judge it: the job's outcome if it met the budget (or
    ``accept_miss``), else None, with the miss recorded in tries.json so a resumed run does not fine-tune
    it again (a try that already has such a record returns None at once)."""
    done = tries[take]
    if "final" in done:
        return None
    pruned, applied = _final_start(loaded, evaluator, done)
    final, taken = finish(cfg, loaded, pruned, budget)
    if final.met or accept_miss:
        predictor = cast(Predictor, ctx.predictor)
        search = {
            "agent": cfg.agent,
            "options": cfg.agent_options,
            "tries": tries,
            "taken_try": take + 1,
            "cost": total_cost(tries),
            "predictor": predictor.describe(),
        }
        return SearchOutcome(pruned, applied, judged_from(done, budget).measured, search, predictor, final, taken)
    done["final"] = record_of(final) | {"measurements": taken}
    save_tries(tries_path, tries)
    return None


def _final_start(loaded: Loaded, evaluator: Evaluator, done: dict[str, Any]) -> tuple[nn.Module, PruningPlan]:
    """What a taken try's long fine-tune starts from: the model its search reached, for a search that
    carried its weights (NetAdapt's default), else its plan cut from the original weights."""
    tried = as_result(done)
    if tried.lineage and tried.lineage[-1].key() == tried.plan.key():
        print(
            f"the final model continues from the search's model ({len(tried.lineage)} pruning steps, each "
            "short-term fine-tuned)"
        )
        return evaluator.carried(tried.lineage)
    return evaluator.cut(tried.plan)  # by the search's criterion, with the scores it used
