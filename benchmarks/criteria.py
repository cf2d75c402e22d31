"""Does the filter criterion matter at a fixed plan? Test accuracy per criterion, before and after the long fine-tune.

Each plan's channel counts are held fixed (uniform 0.5 on ResNet-20 and MobileNetV2, and demo-s28's
NetAdapt plan at 0.5x on ResNet-20 by default); only the criterion that picks the filters varies
(l2, l1, fpgm, taylor, random), each cut from the shipped checkpoint's original weights, then
fine-tuned exactly as `hwprune prune` does (--finetune-steps, cosine LR, augmented, seeded) for every
seed. The seed moves the fine-tune's data order, random's draw and taylor's minibatches. Reported per
(model, plan, criterion): test accuracy right after the cut and after the fine-tune (mean, sample std,
min, max over seeds), and how many of L2's filters the criterion kept too; per (model, plan): the range
of the criterion means beside the mean seed-to-seed spread (Liu et al.'s question, answered at a
latency-shaped plan). Every finished cell is kept in --out-dir, so a re-run continues. Prints JSON
and writes it to --save. Run from the repository root, e.g.:

    .venv/bin/python benchmarks/criteria.py --seeds 0,1,2 --finetune-steps 400 --out-dir runs/bench-criteria
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import _r, emit, load_average, run  # noqa: E402

from hwprune import train  # noqa: E402
from hwprune.data import DataBundle  # noqa: E402
from hwprune.errors import ConfigError  # noqa: E402
from hwprune.io import read_json, write_json  # noqa: E402
from hwprune.job.measure import load_trained  # noqa: E402
from hwprune.pruning import (  # noqa: E402
    CRITERIA,
    TAYLOR_BATCHES,
    ModelGraph,
    PruningPlan,
    apply_plan,
    check_criterion,
    filter_importance,
)

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = {"resnet20": "checkpoints/resnet20-fmnist", "mobilenetv2": "checkpoints/mobilenetv2-fmnist"}
DEMO_PLAN = "benchmarks/results/precision_resnet20_demo-s28_8e6b628.json"
"""Its ``plan_keep``: the channel counts NetAdapt chose at 0.5x in the demo run demo-s28."""
PLANS = ("resnet20=uniform:0.5", f"resnet20=netadapt-demo:{DEMO_PLAN}", "mobilenetv2=uniform:0.5")
CELL_KIND = "criteria-cell"


def plan_from(spec: str, name: str, graph: ModelGraph) -> tuple[str, PruningPlan]:
    """``uniform:R``, or ``LABEL:PATH`` to a plan.json or a benchmark JSON with ``plan_keep`` (counts only)."""
    label, _, value = spec.partition(":")
    if label == "uniform":
        return f"uniform-{float(value)}", PruningPlan.uniform(name, graph, float(value))
    path = ROOT / value if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise ConfigError(f"plan {spec!r}: {path} not found (give uniform:R or LABEL:PATH)")
    data = json.loads(path.read_text())
    keep = data["plan_keep"] if "plan_keep" in data else {g["name"]: g["keep"] for g in data["groups"]}
    plan = PruningPlan.full(name, graph).with_keep({k: int(v) for k, v in keep.items()})
    plan.validate(graph, name)
    return label, plan


def cell(
    model: torch.nn.Module,
    data: DataBundle,
    graph: ModelGraph,
    plan: PruningPlan,
    criterion: str,
    seed: int,
    args: argparse.Namespace,
    reference: PruningPlan,
) -> dict[str, Any]:
    """One (plan, criterion, seed): cut, test, fine-tune, test."""
    start = time.perf_counter()
    importance = filter_importance(model, graph, criterion, data.train, seed=seed, batches=args.taylor_batches)
    pruned, applied = apply_plan(model, plan, graph, importance)
    n = args.test_samples
    cut = train.evaluate(pruned, data.test, max_samples=n, device=args.device)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON summary alone
        train.fine_tune(
            pruned,
            data.train,
            args.finetune_steps,
            lr=args.finetune_lr,
            batch_size=args.batch_size,
            seed=seed,
            progress=True,
            device=args.device,
            augment=data.augment,
            precision=args.precision,
        )
    tuned = train.evaluate(pruned, data.test, max_samples=n, device=args.device)
    shared = sum(
        len(set(g.kept_indices or ()) & set(reference.groups[name].kept_indices or ()))
        for name, g in applied.groups.items()
    )
    return {
        "criterion": criterion,
        "seed": seed,
        "test_accuracy_cut": cut,
        "test_accuracy_finetuned": tuned,
        "kept_as_l2": shared / max(1, sum(g.keep for g in applied.groups.values())),
        "seconds": time.perf_counter() - start,
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": _r(statistics.fmean(values), 4),
        "std": _r(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": _r(min(values), 4),
        "max": _r(max(values), 4),
    }


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys((c["model"], c["plan"]) for c in cells):
        mine = [c for c in cells if (c["model"], c["plan"]) == key]
        per = []
        for criterion in dict.fromkeys(c["criterion"] for c in mine):
            runs = [c for c in mine if c["criterion"] == criterion]
            per.append(
                {
                    "criterion": criterion,
                    "seeds": len(runs),
                    "cut": _stats([c["test_accuracy_cut"] for c in runs]),
                    "finetuned": _stats([c["test_accuracy_finetuned"] for c in runs]),
                    "kept_as_l2": _r(statistics.fmean(c["kept_as_l2"] for c in runs), 3),
                }
            )
        means = {stage: [p[stage]["mean"] for p in per] for stage in ("cut", "finetuned")}
        rows.append(
            {
                "model": key[0],
                "plan": key[1],
                "criteria": per,
                # Does the criterion matter? The spread of criterion means against the seed-to-seed spread.
                "criterion_range_cut": _r(max(means["cut"]) - min(means["cut"]), 4),
                "criterion_range_finetuned": _r(max(means["finetuned"]) - min(means["finetuned"]), 4),
                "mean_seed_std_finetuned": _r(statistics.fmean(p["finetuned"]["std"] for p in per), 4),
            }
        )
    return rows


def _git_head() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet20,mobilenetv2", help="models whose plans run (see --plans)")
    p.add_argument(
        "--plans", default=",".join(PLANS), help="MODEL=uniform:R or MODEL=LABEL:PATH (plan.json or plan_keep JSON)"
    )
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="MODEL=DIR", help="override a model's checkpoint"
    )
    p.add_argument("--criteria", default=",".join(CRITERIA))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--finetune-steps", type=int, default=400, help="the long fine-tune (`hwprune prune`'s default)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--taylor-batches", type=int, default=TAYLOR_BATCHES)
    p.add_argument("--precision", default="auto", help="of the fine-tune (auto: bf16 where native)")
    p.add_argument("--test-samples", type=int, help="cap the test images scored (default: all)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data-dir", help="dataset folder, when not in the default place")
    p.add_argument("--out-dir", default="runs/bench-criteria", help="finished cells, for a re-run to continue")
    p.add_argument("--save", help="where the JSON goes too (default: benchmarks/results/criteria_<HEAD>.json)")
    args = p.parse_args()
    criteria = [check_criterion(c) for c in args.criteria.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    checkpoints = CHECKPOINTS | dict(c.split("=", 1) for c in args.checkpoint)
    args.precision = train.resolve_precision(args.precision)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    t0 = time.perf_counter()
    cells = []
    for model_name in models:
        specs = [s.split("=", 1)[1] for s in args.plans.split(",") if s.split("=", 1)[0] == model_name]
        if not specs:
            continue
        if model_name not in checkpoints:
            raise ConfigError(f"no checkpoint for {model_name}: pass --checkpoint {model_name}=DIR")
        model, spec, _, data, graph = load_trained(str(ROOT / checkpoints[model_name]), args.data_dir)
        model.to(args.device)
        for plan_spec in specs:
            label, plan = plan_from(plan_spec, spec.name, graph)
            _, reference = apply_plan(model, plan, graph)  # L2's filters, to count the overlap
            for criterion in criteria:
                for seed in seeds:
                    path = out_dir / f"{model_name}_{label}_{criterion}_s{seed}.json"
                    setting = {
                        "keep": plan.keep,
                        "finetune_steps": args.finetune_steps,
                        "lr": args.finetune_lr,
                        "batch_size": args.batch_size,
                        "precision": args.precision,
                        "test_samples": args.test_samples,
                        "taylor_batches": args.taylor_batches,
                    }
                    if path.is_file() and (done := read_json(path, CELL_KIND, 1))["setting"] == setting:
                        cells.append(done["cell"])
                        continue
                    print(f"{model_name} {label} {criterion} seed {seed}", file=sys.stderr)
                    result = {"model": model_name, "plan": label} | cell(
                        model, data, graph, plan, criterion, seed, args, reference
                    )
                    write_json(path, {"kind": CELL_KIND, "schema_version": 1, "setting": setting, "cell": result})
                    cells.append(result)
    summary = {
        "benchmark": "criteria",
        "command": "python " + " ".join(sys.argv),
        "git_head": _git_head(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("save",)},
        "summary": summarize(cells),
        "cells": [{k: _r(v, 4) for k, v in c.items()} for c in cells],
        "wall_s": _r(time.perf_counter() - t0, 1),
        "load_average": load_average(),
    }
    save = Path(args.save) if args.save else ROOT / "benchmarks" / "results" / f"criteria_{_git_head()}.json"
    write_json(save, summary)
    emit(summary)


if __name__ == "__main__":
    run(main)
