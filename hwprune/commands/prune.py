"""Prune a trained checkpoint for a device: to a latency budget measured on that device
(--budget 0.5x or --budget 4.2ms, searched by an agent over a latency table), uniformly
(--ratio R), or by a given plan (--plan plan.json). The pruned model is fine-tuned, measured
on the device, and written with a report.

Example:  hwprune prune --checkpoint checkpoints/resnet20-fmnist --budget 0.5x --agent netadapt --out runs/r20

A LeGR run leaves its learned ranking in the run directory; any other budget reuses it without searching:
          hwprune prune --checkpoint ... --agent legr --ranking runs/r20-legr/ranking.json --budget 0.3x --out ...
A NetAdapt run's path leads on to tighter budgets; another budget continues it rather than start over:
          hwprune prune --checkpoint ... --agent netadapt --continue-from runs/r20 --budget 0.3x --out ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwprune.errors import ConfigError
from hwprune.options import (
    MARGIN,
    REPEATS,
    SLACK,
    check_out_location,
    fraction,
    integer,
    key_value,
    non_negative_float,
    non_negative_int,
    number,
    out_dir,
    positive_float,
    positive_int,
    text,
    unit_interval,
)
from hwprune.pruning.importance import TAYLOR_BATCHES

HELP = "prune a checkpoint to a measured latency budget (or a uniform ratio), fine-tune, measure, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to prune and where to write")
    add_source_arguments(what)
    what.add_argument("--out", type=out_dir, help="run directory to create (plan, pruned model, report)")
    what.add_argument(
        "--resume",
        metavar="DIR",
        type=text,
        help="continue an interrupted run from its directory, with the options it was started with",
    )
    goal = p.add_argument_group("goal")
    goal.add_argument(
        "--budget",
        type=text,
        help="latency budget: a fraction of the unpruned model's measured latency (0.5x; judged against the "
        "unpruned model measured alongside the pruned one, so machine drift cancels) or milliseconds per batch (4.2ms)",
    )
    goal.add_argument("--ratio", type=fraction, help="instead of a budget: keep this fraction of every group")
    goal.add_argument(
        "--plan", type=text, help="instead of a budget: apply this plan JSON (e.g. plan.json of an earlier run)"
    )
    goal.add_argument(
        "--agent",
        default="netadapt",
        type=text,
        help="search agent: netadapt (greedy), amc (reinforcement learning, DDPG), legr (learned global ranking), "
        "uniform (one ratio for all)",
    )
    goal.add_argument(
        "--ranking",
        metavar="FILE",
        type=text,
        help="with --agent legr: threshold this learned ranking (ranking.json of an earlier LeGR run on the same "
        "model) to --budget instead of searching; no candidate is evaluated",
    )
    goal.add_argument(
        "--continue-from",
        metavar="RUN",
        type=text,
        help="with --agent netadapt: continue the search path of this finished NetAdapt run on the same model "
        "(its run directory) instead of walking it again from the full model: to a tighter budget the path goes "
        "on from where that run stopped, to a looser one it stops earlier",
    )
    goal.add_argument(
        "--agent-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="agent option (value parsed as JSON), repeatable, e.g. decay=0.96 or weights=original (netadapt), "
        "episodes=100 (amc)",
    )
    add_search_arguments(goal)
    add_device_arguments(p)
    add_accuracy_arguments(p)


# The groups below are shared with `hwprune compare`, whose every cell is a prune job with these settings.


def add_source_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--checkpoint", type=text, help="checkpoint directory written by `hwprune train` or `import`")
    group.add_argument(
        "--data",
        type=text,
        help="dataset to fine-tune and score on (default: the checkpoint's); a checkpoint imported without "
        "--data names none, and is then pruned by --ratio or --plan with --finetune-steps 0 (accuracy unknown)",
    )
    group.add_argument("--data-dir", type=text, help="dataset folder, when not in the default place")


def add_search_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--criterion",
        type=text,
        help="which filters each group keeps: l2 (norm, the default), l1, fpgm (drop those nearest the "
        "layer's geometric median), taylor (first-order loss change, from training minibatches) or random "
        "(seeded); with --plan, default: the criterion that chose the plan's filters",
    )
    group.add_argument(
        "--taylor-batches",
        type=positive_int,
        default=TAYLOR_BATCHES,
        help="training minibatches (of 64, seeded) the taylor criterion averages over",
    )
    group.add_argument(
        "--round-to",
        type=positive_int,
        default=1,
        help="keep channel counts at multiples of this (the CPU's SIMD width in floats suits it: 16 with "
        "AVX-512, 8 with AVX2; a full width is always allowed)",
    )
    group.add_argument(
        "--min-keep-ratio", type=fraction, default=0.1, help="no group keeps fewer than this fraction of its channels"
    )
    group.add_argument(
        "--margin",
        type=number(MARGIN),
        default=0.05,
        help="search for a plan predicted this fraction under the budget, so device noise "
        "does not push the measured median over it",
    )
    group.add_argument(
        "--slack",
        type=number(SLACK),
        help="when a plan measures more than this fraction under the budget, keep it and search once more for a "
        "wider (more accurate) one against a looser target; if that one misses, search between the two while "
        "tries remain, and take the kept plan if nothing wider fits (default: twice --margin; 0 for off)",
    )
    group.add_argument(
        "--max-tries",
        type=positive_int,
        default=3,
        help="searches in all (each later one against a target moved by what the last plan measured: tighter "
        "after a miss, looser after --slack) and measurements of the fine-tuned model before a miss counts",
    )


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    dev = p.add_argument_group("device and deployment setting")
    dev.add_argument(
        "--backend",
        type=text,
        help="profiler backend: torch-cpu, onnxruntime, torch-cuda, tensorrt "
        "(default: the --lut table's, else onnxruntime)",
    )
    dev.add_argument("--threads", type=positive_int, help="CPU threads (default: the --lut table's, else all cores)")
    dev.add_argument(
        "--batch", type=positive_int, help="batch size the model is deployed at (default: the --lut table's, else 32)"
    )
    dev.add_argument("--repeats", type=integer(REPEATS), default=10, help="timed samples per run")
    dev.add_argument(
        "--runs",
        type=positive_int,
        default=5,
        help="runs per latency measurement, back to back; the quietest (lowest median) is kept",
    )
    dev.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="measurements of each model judged against the budget (interleaved with the unpruned "
        "model for a relative budget); the faster is kept",
    )
    dev.add_argument(
        "--settle-s",
        type=non_negative_float,
        default=3.0,
        help="idle seconds before the measurements of a verdict (timings right after training run slow)",
    )
    dev.add_argument(
        "--lut", type=text, help="latency table from `hwprune profile` (default: profile now, into the run dir)"
    )
    dev.add_argument(
        "--no-densify",
        dest="densify",
        action="store_false",
        help="do not time a found plan's off-grid layer widths before measuring it (by default they "
        "are added to the run's copy of the table, and the search repeats if its prediction moves over "
        "the target or more than --margin under it)",
    )
    dev.add_argument(
        "--allow-foreign-table", action="store_true", help="accept a latency table made on another device or backend"
    )
    dev.add_argument(
        "--calibration-plans",
        type=non_negative_int,
        default=13,
        help="whole-model measurements that calibrate the latency predictor when the job profiles the device "
        "itself (without --lut); 0 for none, else >= 3",
    )


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    tune = p.add_argument_group("accuracy")
    tune.add_argument(
        "--search-finetune-steps",
        type=non_negative_int,
        default=20,
        help="short fine-tune steps before each candidate is scored on the validation split",
    )
    tune.add_argument(
        "--search-bn-batches",
        type=non_negative_int,
        default=0,
        help="training batches each candidate's BatchNorm statistics are re-estimated on before its short "
        "fine-tune and score (adaptive BN: forward passes only; makes deep cuts from the original weights, as "
        "AMC and LeGR score them, rank by more than chance without fine-tune steps); 0: off",
    )
    tune.add_argument("--val-samples", type=positive_int, default=2000, help="validation samples per candidate score")
    tune.add_argument("--finetune-steps", type=non_negative_int, default=400, help="fine-tune steps after pruning")
    tune.add_argument("--finetune-lr", type=positive_float, default=0.01, help="fine-tune learning rate")
    tune.add_argument(
        "--distill",
        type=unit_interval,
        default=0.0,
        metavar="WEIGHT",
        help="knowledge distillation in the fine-tune after pruning: the unpruned model teaches the pruned one, "
        "WEIGHT its softened outputs' share of the loss against the labels' (e.g. 0.7; about a third more time "
        "per step for the teacher's forward pass); 0: labels alone",
    )
    tune.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        help="batch size of the fine-tune after pruning (the search's short fine-tunes use 64)",
    )
    tune.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="arithmetic of the fine-tunes and candidate scores (weights stay fp32; the model "
        "deployed, timed and tested is fp32). auto: bf16 where the CPU has it natively "
        "(AVX512-BF16 or AMX: about half the time), else fp32",
    )
    tune.add_argument("--seed", type=non_negative_int, default=0, help="seed for data splits, fine-tuning and search")


def _interruptible(cfg, resume: bool):  # noqa: ANN001, ANN202 - JobConfig is imported lazily
    """Run the job; on Ctrl-C say how to continue (the run directory keeps every completed stage)."""
    from hwprune.job import run_job

    try:
        return run_job(cfg, resume=resume)
    except KeyboardInterrupt:
        if Path(cfg.out, "job.json").exists():
            print(f"hwprune prune: interrupted; continue with: hwprune prune --resume {cfg.out}", file=sys.stderr)
        raise


def settings_from_table(args: argparse.Namespace) -> None:
    """A latency table fixes the deployment setting: take what the user did not say (None) from it.

    Whether the table fits the checkpoint (model, input, batch, device) is checked by the job
    before it measures anything.
    """
    table = {}
    if args.lut is not None:
        from hwprune.latency import LatencyTable

        table = LatencyTable.load(args.lut, allow_foreign=True).settings
    if args.backend is None:
        args.backend = table.get("backend", "onnxruntime")
    if args.batch is None:
        args.batch = table.get("batch", 32)
    if args.threads is None:
        args.threads = table.get("threads")


def _resume(args: argparse.Namespace) -> tuple[Path, bool] | None:
    """Continue the run at ``--resume``; None when it has finished already (its report is said where)."""
    from hwprune.job import finished_report, resume_config

    extra = [flag for dest, flag in getattr(args, "given", {}).items() if dest != "resume"]
    if extra:
        raise ConfigError(
            f"--resume continues {args.resume} with the options it was started with (its job.json): drop "
            f"{', '.join(extra)}, or start a new run with --out to change them"
        )
    if not Path(args.resume, "job.json").is_file():
        raise ConfigError(
            f"--resume {args.resume}: no prune run there (no job.json); start one with --checkpoint and --out"
        )
    report = finished_report(args.resume)
    if report is not None:
        print(f"run {args.resume} is finished: its report is {report}")
        return None
    check_out_location(args.resume, "--resume")
    cfg = resume_config(args.resume)
    cfg.out = args.resume
    return _interruptible(cfg, resume=True)


def run(args: argparse.Namespace) -> int:
    from hwprune.job import JobConfig

    if args.resume is not None:
        outcome = _resume(args)
        if outcome is None:
            return 0  # finished earlier: nothing to do is not an error
        report, met = outcome
    else:
        if args.checkpoint is None or args.out is None:
            raise ConfigError("--checkpoint and --out are required (or --resume DIR)")
        settings_from_table(args)
        cfg = JobConfig(
            checkpoint=args.checkpoint,
            out=args.out,
            budget=args.budget,
            ratio=args.ratio,
            plan=args.plan,
            agent=args.agent,
            agent_options=dict(args.agent_option),
            backend=args.backend,
            threads=args.threads,
            batch=args.batch,
            lut=args.lut,
            allow_foreign_table=args.allow_foreign_table,
            data_dir=args.data_dir,
            data=args.data,
            seed=args.seed,
            search_finetune_steps=args.search_finetune_steps,
            search_bn_batches=args.search_bn_batches,
            val_samples=args.val_samples,
            finetune_steps=args.finetune_steps,
            finetune_lr=args.finetune_lr,
            distill=args.distill,
            batch_size=args.batch_size,
            precision=args.precision,
            margin=args.margin,
            slack=args.slack,
            round_to=args.round_to,
            criterion=args.criterion,
            taylor_batches=args.taylor_batches,
            min_keep_ratio=args.min_keep_ratio,
            ranking=args.ranking,
            continue_from=args.continue_from,
            max_tries=args.max_tries,
            densify=args.densify,
            repeats=args.repeats,
            runs=args.runs,
            rounds=args.rounds,
            settle_s=args.settle_s,
            calibration_plans=args.calibration_plans,
        )
        report, met = _interruptible(cfg, resume=False)
    print(f"report: {report}")
    if not met:
        print(
            "hwprune prune: error: after its last try's fine-tune the pruned model measured over the budget "
            "(device noise); see the report, and retry with a larger --margin or --max-tries",
            file=sys.stderr,
        )
        return 1
    return 0
