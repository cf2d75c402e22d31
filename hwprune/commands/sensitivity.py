"""Per-group pruning sensitivity (Li et al. 2017, Figure 2): prune each channel group alone to 10 %,
20 % ... 90 % of its channels removed (the filters chosen by --criterion), score it on the validation
split (after --finetune-steps, if any), and write sensitivity.csv (one row per group and ratio),
sensitivity.png (one line per group; resilient groups solid and starred) and sensitivity.json.
With --lut each point carries the latency it saves, predicted from the table, and the accuracy
lost per millisecond saved. Every point is written as it finishes: re-running the same command
with the same --out continues where an interrupted run stopped.

Example:  hwprune sensitivity --checkpoint checkpoints/resnet20-fmnist --out runs/r20-sens --lut r20.lut.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hwprune import train
from hwprune.data import DATASETS
from hwprune.errors import ConfigError, TableError
from hwprune.io import read_json, write_json
from hwprune.job.measure import load_trained
from hwprune.latency import LatencyTable, Predictor
from hwprune.models import ModelSpec
from hwprune.options import (
    Range,
    non_negative_float,
    non_negative_int,
    number,
    out_dir,
    positive_float,
    positive_int,
    text,
)
from hwprune.pruning import CRITERIA, DEFAULT_CRITERION, TAYLOR_BATCHES, ModelGraph, check_criterion, filter_importance
from hwprune.sensitivity import (
    RATIOS,
    RESILIENT_AT,
    TOLERANCE,
    append_point,
    check_ratios,
    plot_sensitivity,
    read_points,
    resilient_groups,
    sensitivity_points,
    write_points,
)

HELP = "prune each channel group alone at 10-90 %, score it, and plot the curves (Li et al.'s sensitivity)"
STATE_KIND = "sensitivity"
STATE_SCHEMA = 1
CSV_NAME, PNG_NAME, STATE_NAME = "sensitivity.csv", "sensitivity.png", "sensitivity.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, type=text, help="checkpoint directory written by `hwprune train` or `import`"
    )
    p.add_argument(
        "--out", required=True, type=out_dir, help="directory for sensitivity.csv / .png / .json (re-run to continue)"
    )
    p.add_argument("--data", type=text, help="dataset to score on (default: the checkpoint's)")
    p.add_argument("--data-dir", type=text, help="dataset folder, when not in the default place")
    p.add_argument(
        "--criterion",
        default=DEFAULT_CRITERION,
        type=text,
        help=f"which filters go: {', '.join(CRITERIA)} (see `prune --help`)",
    )
    p.add_argument(
        "--taylor-batches",
        type=positive_int,
        default=TAYLOR_BATCHES,
        help="training minibatches the taylor criterion uses",
    )
    p.add_argument(
        "--ratios",
        type=text,
        default=",".join(str(r) for r in RATIOS),
        help="fractions of each group's channels removed, comma-separated",
    )
    p.add_argument(
        "--finetune-steps",
        type=non_negative_int,
        default=0,
        help="seeded SGD steps after each cut, before scoring (0: none)",
    )
    p.add_argument("--finetune-lr", type=positive_float, default=0.01, help="learning rate of those steps")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size of those steps")
    p.add_argument("--val-samples", type=positive_int, default=2000, help="validation samples per point (the first N)")
    p.add_argument(
        "--lut", type=text, help="latency table from `hwprune profile`: adds the predicted latency saved per point"
    )
    p.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=TOLERANCE,
        help="accuracy (absolute, 0.01 = one point) a resilient group may lose at every ratio up to --resilient-at",
    )
    p.add_argument(
        "--resilient-at",
        type=number(Range(0, 1, low_open=True, high_open=True)),
        default=RESILIENT_AT,
        help="see --tolerance",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the fine-tunes, taylor's batches and random"
    )


def _settings(args: argparse.Namespace, ratios: tuple[float, ...]) -> dict[str, Any]:
    """What the points depend on: a continued run must have been started with the same."""
    return {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "data": args.data,
        "criterion": args.criterion,
        "taylor_batches": args.taylor_batches if args.criterion == "taylor" else None,
        "ratios": list(ratios),
        "finetune_steps": args.finetune_steps,
        "finetune_lr": args.finetune_lr,
        "batch_size": args.batch_size,
        "val_samples": args.val_samples,
        "lut": str(Path(args.lut).resolve()) if args.lut else None,
        "seed": args.seed,
    }


def _check(args: argparse.Namespace) -> tuple[float, ...]:
    check_criterion(args.criterion)
    try:
        ratios = check_ratios([float(r) for r in args.ratios.split(",") if r.strip()])
    except ValueError:
        raise ConfigError(
            f"--ratios expects comma-separated fractions such as 0.1,0.5,0.9, got '{args.ratios}'"
        ) from None
    for name in ("taylor_batches", "batch_size", "val_samples"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.finetune_steps < 0 or not args.finetune_lr > 0:
        raise ConfigError("--finetune-steps must be >= 0 and --finetune-lr > 0")
    if not 0 < args.resilient_at < 1 or args.tolerance < 0:
        raise ConfigError("--resilient-at must be in (0, 1) and --tolerance >= 0")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a directory")
    return ratios


def _earlier(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The state of an earlier run in ``out`` with the same settings (None if ``out`` is fresh)."""
    state_path = out / STATE_NAME
    if not state_path.exists():
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"--out {out} holds other files: give an empty or new directory")
        return None
    state = read_json(state_path, STATE_KIND, STATE_SCHEMA)
    differ = [k for k in settings if state.get("settings", {}).get(k) != settings[k]]
    if differ:
        raise ConfigError(
            f"{out} holds a sensitivity run with other settings ({', '.join(differ)}): pick another --out"
        )
    return state


def run(args: argparse.Namespace) -> int:
    ratios = _check(args)  # everything refusable, before the checkpoint is loaded
    settings = _settings(args, ratios)
    out = Path(args.out)
    state = _earlier(out, settings)

    model, spec, _, data, graph = load_trained(args.checkpoint, args.data_dir, args.data)
    if data is None:
        raise ConfigError(
            f"checkpoint {args.checkpoint} names no dataset to score on: pass --data ({', '.join(DATASETS)})"
        )
    predictor = _predictor(args.lut, spec, graph) if args.lut else None
    if state is None:
        accuracy, loss = train.score(model, data.val, max_samples=args.val_samples)
        state = {
            "kind": STATE_KIND,
            "schema_version": STATE_SCHEMA,
            "model": spec.name,
            "settings": settings,
            "baseline": {"val_accuracy": accuracy, "val_loss": loss},
        }
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / STATE_NAME, state)
    base = float(state["baseline"]["val_accuracy"])
    points = read_points(out / CSV_NAME)
    done = {(p.group, p.ratio) for p in points}
    total = len(graph.groups) * len(ratios)
    if done:
        print(f"continuing {out}: {len(done)} of {total} points already done")
        write_points(out / CSV_NAME, points)  # without a row an interruption cut short, before appending
    print(f"{spec.name}: {len(graph.groups)} groups x {len(ratios)} ratios, filters by {args.criterion}")
    importance = filter_importance(
        model, graph, args.criterion, data.train, seed=args.seed, batches=args.taylor_batches
    )
    todo = sensitivity_points(
        model,
        graph,
        data,
        importance,
        base,
        ratios,
        finetune_steps=args.finetune_steps,
        lr=args.finetune_lr,
        batch_size=args.batch_size,
        seed=args.seed,
        val_samples=args.val_samples,
        predictor=predictor,
        skip=lambda group, ratio: (group, ratio) in done,
    )
    with tqdm(todo, total=total, initial=len(done), desc="sensitivity", unit="point") as bar:
        for point in bar:
            append_point(out / CSV_NAME, point)
            points.append(point)
            bar.set_postfix(group=point.group, acc=f"{point.val_accuracy:.3f}")
    order = {(g.name, r): i for i, (g, r) in enumerate((g, r) for g in graph.groups for r in ratios)}
    points.sort(key=lambda p: order.get((p.group, p.ratio), len(order)))
    resilient = resilient_groups(points, args.tolerance, args.resilient_at)
    write_points(out / CSV_NAME, points, resilient)
    title = f"{spec.name}, filters by {args.criterion}" + (
        f", {args.finetune_steps} fine-tune steps" if args.finetune_steps else ", no fine-tune"
    )
    plot_sensitivity(points, base, resilient, out / PNG_NAME, title)
    state |= {"resilient": resilient, "tolerance": args.tolerance, "resilient_at": args.resilient_at, "points": total}
    write_json(out / STATE_NAME, state)
    print(
        f"unpruned validation accuracy {base:.4f}; resilient groups (lose <= {args.tolerance:g} up to "
        f"{args.resilient_at:.0%} removed): {', '.join(resilient) or 'none'}"
    )
    print(f"wrote {out / CSV_NAME} and {out / PNG_NAME}")
    return 0


def _predictor(lut: str, spec: ModelSpec, graph: ModelGraph) -> Predictor:
    """The table's predictor, if the table was profiled for this model and input."""
    table = LatencyTable.load(lut)  # read, not timed against: this machine need not be the table's device
    wanted = {"model": spec.name, "input_size": list(spec.input_size), "in_channels": spec.in_channels}
    found = {k: table.settings.get(k) for k in wanted}
    if found != wanted:
        diff = ", ".join(f"{k}={found[k]!r} (the checkpoint has {v!r})" for k, v in wanted.items() if found[k] != v)
        raise TableError(f"latency table {lut} was profiled for another model or input: {diff}")
    return Predictor(table, graph)
