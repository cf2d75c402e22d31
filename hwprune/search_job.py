"""The budgeted part of ``hwprune prune``: latency table -> predictor -> agent -> measured check.

A plan is accepted only when the pruned model's *measured* median is under the budget (with half
of ``--margin`` kept in reserve for the final re-measurement, except on the last try, where a
plan under the budget is better judged again after its fine-tune than given up: the demo failed
on a last plan measured 6.093 ms against 6.132; a relative budget is judged against the unpruned
model measured alongside). An accepted plan is long fine-tuned and judged again; if
that final model measures over the budget, the try counts as a miss too. Either way the search
target is tightened by the observed miss and the agent searches again, at most ``--max-tries``
times. A plan that measures more than ``--slack`` (default: twice ``--margin``) under the budget
is kept aside while the agent searches again against a looser target, and taken if the wider
plan misses (on the last try, also if the wider plan's fine-tuned model misses: the ResNet-20
uniform 0.5x cell at 75254df ended "not met" at 1.08x its budget with a plan measured at 79 % of
it kept aside); while tries remain, a wider plan that misses is first followed by a search between
the two. No looser target reaches over where an earlier miss puts the budget (:func:`under_misses`),
so a plan that missed is not searched for again. Each try is recorded in ``tries.json`` as it
completes (a final miss under ``final``), so a resumed run replays the same targets and the
agents' own state files continue mid-search.

The first target of a relative budget is the fraction of the unpruned latency as the table sees it
(:func:`first_target`), not as the job measured it: the table does not move with the machine's
load, so every agent searching one table starts from the same target.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from torch import nn

from hwprune.agents import Budget, SearchContext, SearchResult, check_budget, get_agent
from hwprune.agents.state import finished_result
from hwprune.errors import BudgetError, TableError
from hwprune.evaluator import Evaluator
from hwprune.io import read_json, write_json
from hwprune.job import JobConfig, Judged, Loaded, finish, measure_judged  # job.py imports us lazily
from hwprune.latency import LatencyTable, Predictor, TableSetting, profile_model, timing_like
from hwprune.latency.build import BLOCK_WARMUP_S
from hwprune.latency.densify import densify
from hwprune.profilers import Measurement
from hwprune.pruning import PruningPlan, apply_plan
from hwprune.report import percent_used

TRIES_KIND = "search-tries"
ROUND_KIND = "densify-round"
MAX_SEARCHES_PER_TRY = 3
"""Searches of one try before its plan is measured anyway (each later one on a table densified by the last)."""
DENSIFY_TOLERANCE = 0.005
"""A densified prediction this far over the target is within the timing noise of the new points: no new search."""


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


def load_tries(path: Path) -> list[dict[str, Any]]:
    """The tries a run recorded in ``tries.json`` (none if it has not finished one)."""
    return read_json(path, TRIES_KIND, 1)["tries"] if path.is_file() else []


def _save_tries(path: Path, tries: list[dict[str, Any]]) -> None:
    write_json(path, {"kind": TRIES_KIND, "schema_version": 1, "tries": tries})


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
            previous = _as_result(tries[-1]) if tries else None  # NetAdapt continues the last try's path
            ctx, result, densified = _search(cfg, loaded, run, ctx, table, target, i + 1, previous)
            # A looser target can find the kept plan again (uniform 0.5x at 1 thread: its next ratios are
            # unaligned and priced over it): its judgement stands, and there is nothing wider to try.
            same = kept is not None and result.plan.key() == _as_result(tries[kept]).plan.key()
            if same:
                judged = _judged(tries[kept], budget)
            else:
                pruned, _ = apply_plan(loaded.model, result.plan, loaded.graph)
                judged = measure_judged(loaded, pruned, cfg, budget)
            done = (
                {
                    "target_ms": target,
                    "predicted_ms": ctx.predict_ms(result.plan),
                    **_record(judged),
                    "plan": result.plan.to_dict(),
                    "history": result.history,
                    "cost": result.cost,
                    "densified": densified,
                }
                | ({"lineage": [p.to_dict() for p in result.lineage]} if result.lineage else {})
                | ({"same_plan_as": kept + 1} if same else {})
            )
            tries.append(done)
            _save_tries(tries_path, tries)
        judged = _judged(done, budget)
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
                missed = _judged(tries[take]["final"], budget)
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
            judged = _judged(done["final"], budget)
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
            "cost": _total_cost(tries),
            "predictor": predictor.describe(),
        }
        return SearchOutcome(pruned, applied, _judged(done, budget).measured, search, predictor, final, taken)
    done["final"] = _record(final) | {"measurements": taken}
    _save_tries(tries_path, tries)
    return None


def _final_start(loaded: Loaded, evaluator: Evaluator, done: dict[str, Any]) -> tuple[nn.Module, PruningPlan]:
    """What a taken try's long fine-tune starts from: the model its search reached, for a search that
    carried its weights (NetAdapt's default), else its plan cut from the original weights."""
    tried = _as_result(done)
    if tried.lineage and tried.lineage[-1].key() == tried.plan.key():
        print(
            f"the final model continues from the search's model ({len(tried.lineage)} pruning steps, each "
            "short-term fine-tuned)"
        )
        return evaluator.carried(tried.lineage)
    return apply_plan(loaded.model, tried.plan, loaded.graph)


def _as_result(done: dict[str, Any]) -> SearchResult:
    """A recorded try as the search result it kept: what the next try's agent may continue from."""
    return SearchResult(
        PruningPlan.from_dict(done["plan"]),
        done["history"],
        done["cost"],
        lineage=tuple(PruningPlan.from_dict(p) for p in done.get("lineage", ())),
    )


def first_target(budget: Budget, predicted_full_ms: float, table: LatencyTable, margin: float) -> float:
    """The first search target: the budget, less ``margin``, in the table's milliseconds.

    A relative budget is a fraction of the unpruned latency as the table sees it: the lower of its
    prediction and the unpruned readings its calibration was paired with (``reference_ms``, the
    table's clock), so the target does not move with the machine's load and every agent searching one
    table starts from the same one. The lower, because a fit that over-prices the unpruned model
    loosens the target by as much: a 1-thread demo table predicted the unpruned ResNet-20 at 25.13 ms
    against a reference of 23.57, and its first plan, predicted within 3 % (11.70 ms, measured 11.36),
    missed a budget of 11.28 found against a target of 12.14.
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
    find the same plan or a narrower one. A uniform MobileNetV2 0.3x plan sat under its target
    (9.78 ms predicted against 11.19), its slack gave 10.91, and the same plan was measured again
    for nothing.
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
    plan or a narrower one. Uniform MobileNetV2 0.3x at 8e6b628 kept its quarter-width plan at
    61 % of the budget when the one wider plan missed, where a plan between fit (88 % at c2ea06c);
    uniform ResNet-20 0.5x at 305f679 kept a plan at 76 %, and its looser target found the plan
    its first try had missed with, which missed again.
    """
    for t in tries:
        judged = _judged(t, budget)
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
    left the budget's slack unused (accuracy the user did not get: a uniform MobileNetV2 0.3x plan
    measured 7.58 ms against 10.17). The error is scaled out of the plan, not out of the old
    target: a plan can sit far under its target (densify found it cheaper than the search
    thought), and a target tightened from there still admitted it. MobileNetV2's uniform 0.5x
    cell measured the same plan (23.6 ms predicted) three times against targets of 30.8, 29.7 and
    25.5 ms, missed every time, and failed.
    """
    return min(target_ms, predicted_ms) * budget_ms * (1 - margin) / measured_ms


def _search(
    cfg: JobConfig,
    loaded: Loaded,
    run: Path,
    ctx: SearchContext,
    table: LatencyTable,
    target: float,
    try_no: int,
    start: SearchResult | None = None,
) -> tuple[SearchContext, SearchResult, list[dict[str, Any]]]:
    """One try's search, searched again while timing the plan's own widths moves its prediction off ``target``.

    Over the target, the plan would likely miss the budget; more than ``--margin`` under it, the
    table had over-priced the plan and a wider one fits (a uniform ResNet-20 0.5x plan went from
    6.89 to 5.65 ms predicted against a 7.14 ms target, and was measured at that).

    Each search of try N has its own state file (``search-N.json``, then ``search-N.2.json``...), so a
    resumed job continues the latest one on the table as it was then saved. Each search is handed the
    one before as its ``start`` (the first, the last try's): NetAdapt continues that path rather than
    search from the full model again. When the searches run
    out with the last plan still over the target, the widest plan of the try that the final table
    puts under it is measured instead (the plain last plan missed the demo's budget: predicted
    11.1 ms against 9.4, measured 10.5 against 9.0); the narrowest, if none is. Returns the context
    (with a predictor over the densified table), that plan with every search's cost summed, and
    what each densify round measured.
    """
    k = _latest_search(run, try_no)
    earlier = (finished_result(_state_path(run, try_no, j)) for j in range(1, k))  # a resumed try's
    results = [r for r in earlier if r is not None]
    rounds = [r for j in range(1, k + 1) if (r := _load_round(run, try_no, j)) is not None]
    while True:
        path = _state_path(run, try_no, k)
        start = results[-1] if results else start
        result = finished_result(path) or get_agent(cfg.agent, **cfg.agent_options).search(ctx, target, path, start)
        results.append(result)
        if not cfg.densify:
            break
        before = ctx.predict_ms(result.plan)
        record = densify(table, loaded.graph, result.plan, loaded.profiler, out=run / "lut.json")
        if record["points"]:
            ctx = replace(ctx, predictor=Predictor(table, loaded.graph))  # a new context: predictions are memoised
        after = ctx.predict_ms(result.plan)  # off the target only if the table changed under this search
        # Over the target: the plan may miss. Far under it: a wider (more accurate) plan fits; use it.
        off = after > target * (1 + DENSIFY_TOLERANCE) or after < target * (1 - cfg.margin)
        again = off and bool(record["points"]) and k < MAX_SEARCHES_PER_TRY  # on an unchanged table: the same plan
        if record["points"]:
            rounds.append(
                record
                | {
                    "search": path.name,
                    "predicted_before_ms": before,
                    "predicted_after_ms": after,
                    "searched_again": again,
                }
            )
            write_json(_round_path(run, try_no, k), {"kind": ROUND_KIND, "schema_version": 1, "round": rounds[-1]})
            shaky = f" ({record['unstable_blocks']} timed unstably)" if record.get("unstable_blocks") else ""
            print(
                f"search {try_no}: timed {len(record['points'])} layer widths the table had not measured{shaky}; "
                f"the plan now predicts {after:.3f} ms (was {before:.3f}, target {target:.3f})"
                + ("; searching again on the corrected table" if again else "")
            )
        if not again:
            break
        k += 1
    chosen = _fitting(results, ctx, target * (1 + DENSIFY_TOLERANCE)) if cfg.densify else result
    if chosen is not result:
        print(
            f"search {try_no}: on the final table search {results.index(chosen) + 1}'s plan "
            f"({ctx.predict_ms(chosen.plan):.3f} ms) fits the target {target:.3f} ms best (the last plan: "
            f"{ctx.predict_ms(result.plan):.3f} ms); measuring it"
        )
    cost = _summed([r.cost for r in results], list(results[-1].cost)) | {"densify_s": sum(r["seconds"] for r in rounds)}
    return ctx, SearchResult(chosen.plan, chosen.history, cost, lineage=chosen.lineage), rounds


def _fitting(results: list[SearchResult], ctx: SearchContext, limit_ms: float) -> SearchResult:
    """The plan predicted widest under ``limit_ms`` on the current table, else the narrowest one.

    Every width of every plan here has been timed by then, so these predictions compare like with like;
    a last plan within the band that stopped the searches is always the one returned.
    """
    predicted = [(ctx.predict_ms(r.plan), i) for i, r in enumerate(results)]
    under = [p for p in predicted if p[0] <= limit_ms]
    return results[max(under)[1] if under else min(predicted)[1]]


def _state_path(run: Path, try_no: int, k: int) -> Path:
    return run / (f"search-{try_no}.json" if k == 1 else f"search-{try_no}.{k}.json")


def _round_path(run: Path, try_no: int, k: int) -> Path:
    """Where the densify round after search ``k`` of a try is kept, so a resumed try still reports it."""
    return run / f"densify-{try_no}.{k}.json"


def _load_round(run: Path, try_no: int, k: int) -> dict[str, Any] | None:
    path = _round_path(run, try_no, k)
    return read_json(path, ROUND_KIND, 1)["round"] if path.exists() else None


def _latest_search(run: Path, try_no: int) -> int:
    """The last search of a try that left a state file (1 if none did)."""
    k = 1
    while _state_path(run, try_no, k + 1).exists():
        k += 1
    return k


def _record(judged: Judged) -> dict[str, Any]:
    """A judgement as tries.json keeps it (read back by :func:`_judged`)."""
    return {
        "measured": judged.measured.to_dict(),
        "unpruned_measured": judged.unpruned.to_dict() if judged.unpruned else None,
        "budget_ms": judged.budget_ms,
    }


def _judged(done: dict[str, Any], budget: Budget) -> Judged:
    """A recorded try as judged then (tries written before budgets were paired have no reference)."""
    unpruned = Measurement.from_dict(done["unpruned_measured"]) if done.get("unpruned_measured") else None
    return Judged(Measurement.from_dict(done["measured"]), unpruned, budget)


def _summed(costs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Search costs added up key by key (a cost missing a key, from an older run, counts 0)."""
    return {k: sum(c.get(k, 0) for c in costs) for k in keys}


def _total_cost(tries: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["wall_s", "evaluations", "finetune_steps", "predictor_calls", "densify_s"]
    return _summed([t["cost"] for t in tries], keys)
