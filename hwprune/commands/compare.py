"""Compare search agents on one device: every agent at every budget through the measured budget loop
of `hwprune prune` (one latency table, one data split, seed, evaluator and long fine-tune), beside
their FLOPs-targeted twins and the unpruned model given the same fine-tune. Writes results.csv,
results.json, pareto.png and report.md into --out; each cell's own prune run is under --out/cells.

Example:  hwprune compare --checkpoint checkpoints/resnet20-fmnist --budgets 0.7x,0.5x,0.3x --out runs/compare
Continue an interrupted compare (finished and failed cells are kept):  hwprune compare --resume runs/compare
Exit status 0 when every cell produced a model (met its budget or not: a MACs twin is judged, not required,
to meet it), 1 when a cell failed (its reason is in report.md), 2 on bad options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwprune.commands.prune import (
    add_accuracy_arguments,
    add_device_arguments,
    add_search_arguments,
    add_source_arguments,
    settings_from_table,
)
from hwprune.errors import ConfigError
from hwprune.options import key_value, out_dir, text

HELP = "run every search agent at every budget on one device and table; results, a Pareto plot and a report"

COMPARE_DEFAULTS = {"finetune_steps": 100, "search_finetune_steps": 10, "val_samples": 500}
"""A compare runs 19 prune jobs (4 agents x 3 budgets, 2 twins x 3, the control): a shorter long fine-tune
and cheaper candidate scores than one prune run's keep the full ResNet-20 matrix under 45 minutes on 2
cores (measured in benchmarks/compare.py). Every cell gets the same ones, so the comparison is fair;
for accuracy figures to quote, give a longer --finetune-steps. The candidate score stays at 10 steps:
at 5, NetAdapt picked the reference's candidate half as often (docs/benchmarks.md, candidate_ranking)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_argument_group("what to compare and where to write")
    add_source_arguments(what)
    what.add_argument("--out", type=out_dir, help="directory to create: results, plot, report and every cell's run")
    what.add_argument(
        "--resume", metavar="DIR", type=text, help="continue an interrupted compare, with the options it started with"
    )
    what.add_argument(
        "--budgets",
        type=text,
        default="0.7x,0.5x,0.3x",
        help="comma-separated latency budgets, each a fraction of the unpruned model's measured latency (0.5x) "
        "or milliseconds per batch (4.2ms)",
    )
    what.add_argument(
        "--agents", type=text, default="uniform,netadapt,amc,legr", help="comma-separated search agents (or none)"
    )
    what.add_argument(
        "--twins",
        type=text,
        default="uniform,netadapt",
        help="agents that also search with a MACs-proportional predictor targeted at the budget's fraction of the "
        "unpruned MACs (FLOPs-targeted pruning), judged on the device like the rest (or none). Default: uniform, the "
        "plain FLOPs baseline, and netadapt, the hardware-aware agent that beat it in the budget benchmark: the "
        "latency table's gain on the simplest and the strongest search",
    )
    what.add_argument(
        "--legr-learn-at",
        type=text,
        help="the budget (one of --budgets) LeGR learns its ranking at; the other budgets threshold that ranking "
        "without searching (default: the middle budget)",
    )
    what.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the control: the unpruned model given the same long fine-tune, which accuracy changes are against",
    )
    what.add_argument(
        "--agent-option",
        type=key_value,
        action="append",
        default=[],
        metavar="AGENT.KEY=VALUE",
        help="an option of one agent (value parsed as JSON), repeatable, e.g. amc.episodes=100 or "
        "legr.generations=200; a compare's own defaults: amc episodes=30 warmup_episodes=10, legr generations=30",
    )
    search = p.add_argument_group("search (every cell)")
    add_search_arguments(search)
    add_device_arguments(p)
    add_accuracy_arguments(p)
    p.set_defaults(**COMPARE_DEFAULTS)


def names(value: str, flag: str) -> list[str]:
    """``a,b`` -> [a, b]; ``none`` -> []."""
    items = [v.strip() for v in value.split(",")]
    if items == ["none"]:
        return []
    if any(not v for v in items):
        raise ConfigError(
            f"{flag} {value!r} has an empty entry: write names separated by commas, e.g. uniform,netadapt"
        )
    return items


COMPARE_AGENT_OPTIONS: dict[str, dict[str, object]] = {
    "amc": {"episodes": 30, "warmup_episodes": 10},
    "legr": {"generations": 30},
}
"""Smaller searches than one prune run's defaults, for the same reason as COMPARE_DEFAULTS."""


def agent_options(pairs: list[tuple[str, object]], running: list[str]) -> dict[str, dict[str, object]]:
    """``AGENT.KEY=VALUE`` pairs over the compare's defaults for the agents that run."""
    options = {a: dict(o) for a, o in COMPARE_AGENT_OPTIONS.items() if a in running}
    for key, value in pairs:
        agent, dot, option = key.partition(".")
        if not dot or not agent or not option:
            raise ConfigError(f"--agent-option {key}=...: write AGENT.KEY=VALUE, e.g. amc.episodes=40")
        options.setdefault(agent, {})[option] = value
    return options


def shared_settings(args: argparse.Namespace) -> dict[str, object]:
    """The prune options every cell shares: each option here that names a field of the prune job."""
    from dataclasses import fields

    from hwprune.compare.config import PER_CELL
    from hwprune.job import JobConfig

    return {
        f.name: getattr(args, f.name) for f in fields(JobConfig) if f.name not in PER_CELL and hasattr(args, f.name)
    }


def _resume(args: argparse.Namespace) -> Path:
    from hwprune.compare import resume

    extra = [flag for dest, flag in getattr(args, "given", {}).items() if dest != "resume"]
    if extra:
        raise ConfigError(
            f"--resume continues {args.resume} with the options it was started with (its compare.json): drop "
            f"{', '.join(extra)}, or start a new compare with --out to change them"
        )
    return resume(args.resume)


def run(args: argparse.Namespace) -> int:
    from hwprune.compare import CompareConfig, compare

    out = args.resume or args.out
    try:
        if args.resume is not None:
            report = _resume(args)
        else:
            if args.checkpoint is None or args.out is None:
                raise ConfigError("--checkpoint and --out are required (or --resume DIR)")
            settings_from_table(args)
            agents, twins = names(args.agents, "--agents"), names(args.twins, "--twins")
            cfg = CompareConfig(
                checkpoint=args.checkpoint,
                out=args.out,
                budgets=names(args.budgets, "--budgets"),
                agents=agents,
                twins=twins,
                agent_options=agent_options(args.agent_option, [*agents, *twins]),
                legr_learn_at=args.legr_learn_at,
                control=args.control,
                job=shared_settings(args),
            )
            report = compare(cfg)
    except KeyboardInterrupt:
        if out is not None and Path(out, "compare.json").is_file():
            print(f"hwprune compare: interrupted; continue with: hwprune compare --resume {out}", file=sys.stderr)
        raise
    print(f"report: {report}")
    failed = _failed(report.parent)
    if failed:  # the report is whole; a script still learns that some cells have no model
        print(f"hwprune compare: {failed} cell(s) failed; their reasons are in {report}", file=sys.stderr)
        return 1
    return 0


def _failed(out: Path) -> int:
    from hwprune.compare import outcomes_of

    return sum(o.status == "failed" for o in outcomes_of(out)[1])
