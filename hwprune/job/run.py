"""The pruning job: checkpoint -> (profile) -> search under a budget -> apply -> fine-tune -> measure -> report.

The budget is judged on the *measured* median latency of the pruned model on the device; when
no plan meets it within ``--max-tries`` searches the job fails clearly rather than report a
success the device did not show. Every stage writes into the run directory as it completes, so
``--resume`` continues after Ctrl-C or a crash (the LUT build and the search resume mid-way).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwprune import __version__
from hwprune.agents import Budget, check_budget, parse_budget
from hwprune.agents.ranking import Ranking
from hwprune.errors import HwpruneError, PlanError
from hwprune.io import read_json
from hwprune.job.budgeted import budgeted_search, latency_table
from hwprune.job.config import JOB_KIND, JOB_SCHEMA, JobConfig, check_fresh_out, start_run, validate_config
from hwprune.job.earlier import path_of_run
from hwprune.job.macs_twin import macs_targeted_search
from hwprune.job.measure import Judged, Loaded, check_distill, load_inputs, long_finetune, measure, summarize_model
from hwprune.job.report import write_report
from hwprune.latency import FlopsPredictor, LatencyTable, Predictor
from hwprune.options import check_out_location
from hwprune.profilers import Measurement
from hwprune.pruning import (
    DEFAULT_CRITERION,
    FilterImportance,
    GroupPlan,
    PruningPlan,
    apply_plan,
    filter_importance,
    save_pruned,
)
from hwprune.train import resolve_precision

log = logging.getLogger(__name__)


def run_job(cfg: JobConfig, resume: bool = False, loaded: Loaded | None = None) -> tuple[Path, bool]:
    """Run (or resume) a pruning job; returns the path of ``report.md`` and whether the budget was met.

    Everything that can be refused (options, checkpoint, data, backend, an already-met budget) is
    checked before the run directory is created; a fresh run that fails later is removed whole,
    while an interrupted one stays for ``--resume``. ``loaded``: the inputs already in memory (the
    Python API's model and the user's functions, :func:`~hwprune.job.measure.inputs_from_model`)
    instead of ``cfg.checkpoint``'s.
    """
    validate_config(cfg)
    cfg.precision = resolve_precision(cfg.precision)  # job.json and the report record what ran
    if resume:
        check_out_location(cfg.out, "--resume")
    else:
        check_fresh_out(cfg.out)
    if cfg.budget is not None:
        parse_budget(cfg.budget, 1.0)  # a malformed budget is refused before anything is loaded
    loaded = loaded if loaded is not None else load_inputs(cfg)
    check_distill(cfg, loaded)
    # A user's table must fit this checkpoint, batch and device before anything is timed (a mismatch found
    # after the unpruned model's measurement came with that measurement's timing warnings); the search
    # then reads this one rather than loading it again.
    table = (
        latency_table(cfg, loaded, Path(cfg.out), resume) if cfg.lut is not None and cfg.predictor == "table" else None
    )
    # job.json and the report record the criterion that chose the filters
    fixed, cfg.criterion = fixed_plan(cfg, loaded) if cfg.budget is None else (None, cfg.criterion or DEFAULT_CRITERION)
    if cfg.ranking is not None:
        Ranking.load(cfg.ranking).check(loaded.spec.name, loaded.graph, cfg.ranking)  # before anything is measured
    if cfg.continue_from is not None:
        check_path(cfg.continue_from, loaded)
    t0 = time.perf_counter()
    base_m = loaded.unpruned_at_start(cfg)
    log.info(f"unpruned: {base_m.median_ms:.3f} ms (IQR {base_m.iqr_ms:.3f}) per batch of {cfg.batch} on {cfg.backend}")
    budget = _budget(cfg, base_m, resume) if cfg.budget is not None else None
    run = Path(cfg.out) if resume else start_run(cfg, budget.ms if budget else None)
    try:
        report_path, met = _run_stages(cfg, loaded, run, base_m, budget, fixed, resume, t0, table)
    except HwpruneError:
        if not resume:
            shutil.rmtree(run, ignore_errors=True)
        raise
    return report_path, met


def check_path(run: str, loaded: Loaded) -> None:
    """``--continue-from``'s path was walked on this model: refused in one line before anything is measured."""
    try:
        path_of_run(run).plan.validate(loaded.graph, loaded.spec.name)
    except PlanError as exc:
        raise PlanError(f"--continue-from {run}: its search path does not fit this model ({exc})") from None


def _budget(cfg: JobConfig, base_m: Measurement, resume: bool) -> Budget:
    """The budget; a resumed run keeps the ms fixed at its start (0.5x of *that* measurement)."""
    assert cfg.budget is not None
    budget = Budget.parse(cfg.budget, base_m.median_ms)
    if resume:
        stored = read_json(Path(cfg.out) / "job.json", JOB_KIND, JOB_SCHEMA).get("budget_ms")
        if stored:
            return Budget(budget.text, float(stored), budget.fraction)
    if budget.ms >= base_m.median_ms:
        check_budget(budget.ms, base_m.median_ms, 0.0)  # raises: already met
    return budget


def fixed_plan(cfg: JobConfig, loaded: Loaded) -> tuple[PruningPlan, str]:
    """The plan of a run without search (uniform ``--ratio``, or a ``--plan`` file checked against the
    model) and the criterion that chooses its filters."""
    if cfg.plan is not None:
        plan = PruningPlan.load(cfg.plan)
        plan.validate(loaded.graph, loaded.spec.name)
        return plan_by_criterion(plan, cfg.criterion)
    uniform = PruningPlan.uniform(loaded.spec.name, loaded.graph, float(cfg.ratio), cfg.round_to)
    return uniform, cfg.criterion or DEFAULT_CRITERION


def plan_by_criterion(plan: PruningPlan, requested: str | None) -> tuple[PruningPlan, str]:
    """A ``--plan``'s filters and the criterion that chooses them.

    A plan that records its kept filters is re-applied as it is unless ``--criterion`` names another
    criterion: then only its channel counts are kept and that criterion chooses the filters again.
    A plan of channel counts alone is cut by ``requested`` (default l2).
    """
    indexed = any(g.kept_indices is not None for g in plan.groups.values())
    own = plan.criterion if indexed else None
    if requested is None or requested == own:
        return plan, own or DEFAULT_CRITERION
    if indexed:
        log.info(f"the plan's filters were chosen by {own}; choosing them by {requested} (--criterion)")
        counts = {name: GroupPlan(g.original, g.keep) for name, g in plan.groups.items()}
        plan = PruningPlan(plan.model, counts)
    return plan, requested


def importance_for(cfg: JobConfig, loaded: Loaded, plan: PruningPlan) -> FilterImportance | None:
    """The original model's filter scores by the job's criterion, where ``plan`` still has filters to choose."""
    if all(g.kept_indices is not None for g in plan.groups.values()):
        return None
    assert cfg.criterion is not None  # resolved by run_job
    data = loaded.user.batches if loaded.user is not None else (loaded.data.train if loaded.data else None)
    return filter_importance(loaded.model, loaded.graph, cfg.criterion, data, seed=cfg.seed, batches=cfg.taylor_batches)


def _run_stages(
    cfg: JobConfig,
    loaded: Loaded,
    run: Path,
    base_m: Measurement,
    budget: Budget | None,
    fixed: PruningPlan | None,
    resume: bool,
    t0: float,
    table: LatencyTable | None,
) -> tuple[Path, bool]:
    search: dict[str, Any] | None = None
    predictor = None
    judged: Judged | None = None
    final_measurements = 1
    if fixed is not None:
        pruned, applied = apply_plan(loaded.model, fixed, loaded.graph, importance_for(cfg, loaded, fixed))
        pruned_m = measure(loaded, pruned, cfg)
        whole = applied.keep_ratio() == 1.0  # a compare's control: nothing cut
        long_finetune(cfg, loaded, pruned, "the unpruned model" if whole else "the pruned model")
        final_m = measure(loaded, pruned, cfg)
    else:
        assert budget is not None
        if cfg.predictor == "macs":  # a FLOPs-targeted twin: one search to the budget's share of MACs
            outcome = macs_targeted_search(cfg, loaded, run, budget, base_m, resume)
        else:
            outcome = budgeted_search(cfg, loaded, run, budget, base_m, resume, table)  # fine-tunes and judges
        pruned, applied, pruned_m = outcome.model, outcome.plan, outcome.measured
        search, predictor = outcome.search, outcome.predictor
        judged, final_measurements = outcome.final, outcome.final_measurements
        final_m = judged.measured
    plan_path, model_dir = run / "plan.json", run / "model"
    applied.save(plan_path)
    save_pruned(model_dir, pruned, loaded.spec, applied, {"checkpoint": cfg.checkpoint})
    artifacts = {"plan": str(plan_path), "model": str(model_dir)}
    if search is not None and predictor is not None and budget is not None:
        ranking = save_ranking(run, search, predictor, budget, handed_in=cfg.ranking is not None)
        artifacts |= {"ranking": str(ranking)} if ranking is not None else {}

    report: dict[str, Any] = {
        "hwprune_version": __version__,
        "model": loaded.spec.to_dict() | {"checkpoint": cfg.checkpoint},
        "deployment": {
            "backend": cfg.backend,
            "batch": cfg.batch,
            "input_shape": [cfg.batch, loaded.spec.in_channels, *loaded.spec.input_size],
            "threads": loaded.profiler.fingerprint().get("threads"),
        },
        # with a relative budget the unpruned model was measured again beside the final one: the pair is the speed-up
        "unpruned": summarize_model(loaded, loaded.model, None, (judged and judged.unpruned) or base_m),
        "unpruned_measured_at_start": base_m.to_dict(),
        "pruned": summarize_model(loaded, pruned, applied, final_m),
        "pruned_measured_before_finetune": pruned_m.to_dict(),
        "final_measurements": final_measurements,
        "finetune": {
            "steps": cfg.finetune_steps,
            "lr": cfg.finetune_lr,
            "distill": cfg.distill,
            "batch_size": cfg.batch_size,
            "precision": cfg.precision,
        },
        "fingerprint": loaded.profiler.fingerprint(),
        "plan_keep_ratio": applied.keep_ratio(),
        "criterion": applied.criterion,
        "taylor_batches": cfg.taylor_batches if applied.criterion == "taylor" else None,
        "search": search,
        "budget": None
        if judged is None
        else {
            "text": budget.text,
            "ms": judged.budget_ms,
            "fraction": budget.fraction,
            "ms_at_start": budget.ms,
        },
        "wall_s": time.perf_counter() - t0,
        "artifacts": artifacts,
    }
    if predictor is not None:
        report["unpruned"]["predicted_ms"] = predictor.predict_ms(PruningPlan.full(loaded.spec.name, loaded.graph))
        report["pruned"]["predicted_ms"] = predictor.predict_ms(applied)
    met = judged is None or judged.met
    report["budget_met"] = None if judged is None else met
    return write_report(run, report), met


def save_ranking(
    run: Path, search: dict[str, Any], predictor: Predictor | FlopsPredictor, budget: Budget, handed_in: bool
) -> Path | None:
    """``ranking.json``: the ranking the taken plan was thresholded from, when the agent learned one (LeGR).

    A ranking learned in this run is stamped with the run's budget and the latency table it was learned
    against; one handed in (``--ranking``) is copied as it was, so the run directory says what it used.
    """
    history = search["tries"][search["taken_try"] - 1]["history"]
    data = history[-1].get("ranking") if history else None
    if not isinstance(data, dict):
        return None
    ranking = Ranking.from_dict(data)
    if not handed_in and isinstance(predictor, Predictor):  # a MACs twin's ranking was learned on no table
        table = predictor.table
        ranking = replace(
            ranking,
            budget=budget.text,
            table={
                "backend": table.backend,
                "fingerprint": table.fingerprint,
                "setting": {k: table.settings.get(k) for k in ("model", "batch", "input_size", "threads")},
                "sha256": table.to_dict()["sha256"],  # as the run left it (with the widths it timed)
            },
        )
    path = run / "ranking.json"
    ranking.save(path)
    return path
