"""The budgeted part of ``hwprune prune``: latency table -> predictor -> agent -> measured check.

A thin loop that executes :class:`~hwprune.job.policy.TryPolicy`'s decisions: search a target
(``search_try``), measure the plan on the device, ask the policy, and either search again or long
fine-tune a plan and judge it once more. A plan is accepted only when the pruned model's
*measured* median is under the budget; a relative budget is judged against the unpruned model
measured alongside. Each try is recorded in ``tries.json`` as it completes (a fine-tuned miss
under ``final``), so a resumed run replays the same targets and the policy reaches the same
decisions, while the agents' own state files continue mid-search.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from hwprune.agents import Budget, LatencyPredictor, SearchContext, SearchResult, check_budget
from hwprune.errors import BudgetError, TableError
from hwprune.evaluator import Evaluator
from hwprune.job.config import JobConfig
from hwprune.job.earlier import as_result, path_of_run
from hwprune.job.measure import Judged, Loaded, finish, measure_judged
from hwprune.job.policy import TryPolicy
from hwprune.job.search_try import search_try
from hwprune.job.targets import first_target
from hwprune.job.tries import judged_from, load_tries, record_of, save_tries, total_cost
from hwprune.latency import FlopsPredictor, LatencyTable, Predictor, TableSetting, profile_model, timing_like
from hwprune.latency.build import BLOCK_WARMUP_S
from hwprune.profilers import Measurement
from hwprune.pruning import PruningPlan, apply_plan

log = logging.getLogger(__name__)


@dataclass
class SearchOutcome:
    model: nn.Module
    plan: PruningPlan
    measured: Measurement
    search: dict[str, Any]
    predictor: Predictor | FlopsPredictor  # the latency table's, or a MACs twin's (macs_twin.py)
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
    log.info(f"profiling {loaded.spec.name} blocks on {cfg.backend} into {run / 'lut.json'}")
    table, _ = profile_model(
        setting,
        run / "lut.json",
        resume=resume,
        model=loaded.model,
        profiler=timing_like(setting.to_dict(), fp),
        progress=cfg.progress,
    )
    return table


def budgeted_search(
    cfg: JobConfig,
    loaded: Loaded,
    run: Path,
    budget: Budget,
    base: Measurement,
    resume: bool,
    table: LatencyTable | None = None,
) -> SearchOutcome:
    """Search, measure and judge under ``budget``; ``table`` is the user's, already loaded by
    :func:`latency_table`, or None to load or profile it now."""
    if table is None:
        table = latency_table(cfg, loaded, run, resume)
    ctx, evaluator = search_context(cfg, loaded, Predictor(table, loaded.graph))
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
    policy = TryPolicy(budget, cfg.margin, cfg.slack_fraction, cfg.max_tries)
    target = first_target(budget, full_ms, table, cfg.margin)
    for i in range(cfg.max_tries):
        if i < len(tries):  # replayed from a resumed run: same targets, same state files
            done = tries[i]
        else:
            ctx, done = _try(cfg, loaded, run, ctx, table, target, tries, policy.kept, budget)
            tries.append(done)
            save_tries(tries_path, tries)
        _say_try(done, i, budget)
        decision = policy.after_try(tries)
        while not decision.searches:
            _say(decision.message)
            assert decision.take is not None
            outcome = _finish_try(
                cfg, loaded, evaluator, ctx, tries, tries_path, decision.take, budget, decision.accept_miss
            )
            if outcome is not None:
                return outcome
            decision = policy.after_final_miss(tries, decision.take)
        _say(decision.message)
        if decision.action in ("wider", "between"):  # for the report (set again when a resumed run replays it)
            done["slack_used" if decision.action == "wider" else "searched_between"] = True
        assert decision.target_ms is not None
        target = decision.target_ms
    raise BudgetError(
        f"no plan met the {budget.text} budget on the device after {cfg.max_tries} searches (measured "
        + ", ".join(f"{t['measured']['summary']['median_ms']:.3f}" for t in tries)
        + " ms): the latency table mispredicts this setting; check it with `hwprune lut-check` or raise --max-tries"
    )


def search_context(cfg: JobConfig, loaded: Loaded, predictor: LatencyPredictor) -> tuple[SearchContext, Evaluator]:
    """What every search of the job sees: ``predictor`` (the latency table's, or the MACs twin's) and one
    evaluator, so agents compared under either predictor are scored alike."""
    evaluator = Evaluator(
        loaded.model,
        loaded.graph,
        loaded.data,
        finetune_steps=cfg.search_finetune_steps,
        bn_batches=cfg.search_bn_batches,
        seed=cfg.seed,
        val_samples=cfg.val_samples,
        precision=cfg.precision,
        criterion=cfg.criterion or "l2",
        taylor_batches=cfg.taylor_batches,
        user=loaded.user,
    )
    ctx = SearchContext(
        loaded.spec.name,
        loaded.model,
        loaded.graph,
        predictor,
        evaluator,
        seed=cfg.seed,
        min_keep_ratio=cfg.min_keep_ratio,
        round_to=cfg.round_to,
    )
    return ctx, evaluator


def _try(
    cfg: JobConfig,
    loaded: Loaded,
    run: Path,
    ctx: SearchContext,
    table: LatencyTable,
    target: float,
    tries: list[dict[str, Any]],
    kept: int | None,
    budget: Budget,
) -> tuple[SearchContext, dict[str, Any]]:
    """Search against ``target`` and measure the plan; the try as ``tries.json`` records it.

    NetAdapt continues the last try's path; the first try, the path of ``--continue-from``'s run.
    """
    previous = as_result(tries[-1]) if tries else continued_run(cfg)
    ctx, result, densified = search_try(cfg, loaded, run, ctx, table, target, len(tries) + 1, previous)
    # A looser target can find the kept plan again: its judgement stands, and there is nothing wider to try.
    same = kept is not None and result.plan.key() == as_result(tries[kept]).plan.key()
    if same:
        assert kept is not None
        judged = judged_from(tries[kept], budget)
    else:
        pruned, _ = apply_plan(loaded.model, result.plan, loaded.graph)
        judged = measure_judged(loaded, pruned, cfg, budget)
    done = {
        "target_ms": target,
        "predicted_ms": ctx.predict_ms(result.plan),
        **record_of(judged),
        "plan": result.plan.to_dict(),
        "history": result.history,
        "cost": result.cost,
        "densified": densified,
    }
    if result.lineage:
        done["lineage"] = [p.to_dict() for p in result.lineage]
    if same:
        assert kept is not None
        done["same_plan_as"] = kept + 1
    return ctx, done


def continued_run(cfg: JobConfig) -> SearchResult | None:
    """The path ``--continue-from`` names, for the job's first search (None without one)."""
    if cfg.continue_from is None:
        return None
    log.info(f"continuing the search path of {cfg.continue_from}")
    return path_of_run(cfg.continue_from)


def _say_try(done: dict[str, Any], i: int, budget: Budget) -> None:
    again = done.get("same_plan_as")
    if again:
        log.info(
            f"search {i + 1}: against {done['target_ms']:.3f} ms the search found search {again}'s plan "
            "again; it is not measured again, and taken"
        )
    else:
        judged = judged_from(done, budget)
        log.info(
            f"search {i + 1}: target {done['target_ms']:.3f} ms, predicted {done['predicted_ms']:.3f} ms, "
            f"{judged.describe()}"
        )


def _say(message: str) -> None:
    if message:
        log.info(message)


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
    pruned, applied = final_start(loaded, evaluator, done)
    tried = judged_from(done, budget)
    final, taken = finish(cfg, loaded, pruned, budget, tried_met=tried.met)
    if final.met or accept_miss:
        predictor = cast(Predictor, ctx.predictor)
        search = {
            "agent": cfg.agent,
            "options": cfg.agent_options,
            "tries": tries,
            "taken_try": take + 1,
            "cost": total_cost(tries),
            "predictor": predictor.describe(),
            "continued_from": cfg.continue_from,
        }
        return SearchOutcome(pruned, applied, tried.measured, search, predictor, final, taken)
    done["final"] = record_of(final) | {"measurements": taken}
    save_tries(tries_path, tries)
    return None


def final_start(loaded: Loaded, evaluator: Evaluator, done: dict[str, Any]) -> tuple[nn.Module, PruningPlan]:
    """What a taken try's long fine-tune starts from: the model its search reached, for a search that
    carried its weights (NetAdapt's default), else its plan cut from the original weights."""
    tried = as_result(done)
    if tried.lineage and tried.lineage[-1].key() == tried.plan.key():
        log.info(
            f"the final model continues from the search's model ({len(tried.lineage)} pruning steps, each "
            "short-term fine-tuned)"
        )
        return evaluator.carried(tried.lineage)
    return evaluator.cut(tried.plan)  # by the search's criterion, with the scores it used
