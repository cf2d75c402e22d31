"""How many torchvision CNN classifiers hwprune profiles and prunes end to end; prints JSON.

For every model of ``torchvision.models.list_models(module=torchvision.models)`` that is a CNN
(the vision transformers ViT, Swin and MaxViT are left out: hwprune refuses them in one line,
which ``--models vit_b_16`` shows), at a small input and 10 classes, randomly initialised:

- ``profile``: trace the channel groups, plan the latency table's blocks and *time* every one on
  the ``torch-cpu`` backend with a minimal setting (grid 0.5 and 1.0 of each width, 1 thread,
  3 samples, no calibration), then predict a half-width plan from the table. The timings
  themselves are not the point (see docs/latency.md for real tables): that every block of the
  model builds, runs and is priced.
- ``prune``: apply a seeded random plan and the uniform ``--ratio 0.5`` plan, forward a batch of
  2 (the output shape must be unchanged), save the pruned model as an artifact, load it back and
  compare outputs (they must be identical).

A model that fails says why in one line; an error that is not an ``HwpruneError`` (a traceback a
user would see) is marked ``"traceback": true``. Models that do not run at ``--input-size`` (AlexNet
and Inception-v3 need more than 32x32) are run at their smallest size, reported per model.

    python benchmarks/torchvision_coverage.py --models resnet18,resnext50_32x4d --input-size 32
    python benchmarks/torchvision_coverage.py --log runs/coverage.jsonl   # all of them, resumable
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwprune.errors import HwpruneError
from hwprune.latency.build import TableSetting, profile_model
from hwprune.latency.predictor import SumPredictor
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan, load_pruned, save_pruned

TRANSFORMERS = ("vit_", "swin_", "maxvit_")
MIN_INPUT = {"alexnet": 64, "inception_v3": 75}
"""Smallest input side each model runs at, where it exceeds 32 (found by trying)."""


def cnn_classifiers() -> list[str]:
    import torchvision

    return [n for n in torchvision.models.list_models(module=torchvision.models) if not n.startswith(TRANSFORMERS)]


def check_model(arch: str, size: int, seed: int, profile: bool) -> dict[str, Any]:
    """Profile and prune one model; the result names the stage that failed and why."""
    size = max(size, MIN_INPUT.get(arch, 0))
    name = f"torchvision:{arch}"
    result: dict[str, Any] = {"model": arch, "input_size": size, "profile": False, "prune": False}
    stage = "build"
    start = time.perf_counter()
    try:
        model = create_model(name, 3, 10).eval()
        stage = "graph"
        graph = ModelGraph(model, (3, size, size), name=arch)
        result |= {"groups": len(graph.groups), "frozen_groups": len(graph.frozen)}
        if profile:
            stage = "profile"
            setting = TableSetting(
                name, 3, 10, (size, size), 1, "torch-cpu", 1, 3, 1, 0.0, (0.5, 1.0), calib_plans=0, block_rounds=1
            )
            table, _ = profile_model(setting, None, progress=False, model=model)
            half = PruningPlan.uniform(name, graph, 0.5)
            result["blocks"] = len(table.planned_points())
            result["predicted_half_ms"] = round(SumPredictor(table, graph).predict_ms(half), 4)
            result["profile"] = True
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            reference = model(x)
        plans = {"random": PruningPlan.random(name, graph, np.random.default_rng(seed)), "ratio": None}
        plans["ratio"] = PruningPlan.uniform(name, graph, 0.5)
        for kind, plan in plans.items():
            stage = f"prune ({kind} plan)"
            pruned, applied = apply_plan(model, plan, graph)
            with torch.no_grad():
                out = pruned.eval()(x)
            if out.shape != reference.shape:
                raise AssertionError(f"output shape {tuple(out.shape)} != {tuple(reference.shape)}")
            stage = f"round trip ({kind} plan)"
            with tempfile.TemporaryDirectory() as tmp:
                save_pruned(tmp, pruned, ModelSpec(name, 3, 10, (size, size)), applied)
                loaded, _, _ = load_pruned(tmp)
            with torch.no_grad():
                again = loaded(x)
            if not torch.equal(out, again):
                raise AssertionError(f"loaded model differs by {float((out - again).abs().max()):.3g}")
            result[f"{kind}_keep_ratio"] = round(applied.keep_ratio(), 3)
        result["prune"] = True
    except HwpruneError as exc:
        result |= {"failed_at": stage, "reason": str(exc)}
    except Exception as exc:  # the bug this benchmark exists to find: a user would see a traceback
        result |= {"failed_at": stage, "reason": f"{type(exc).__name__}: {exc}", "traceback": True}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated torchvision names (default: every CNN classifier)")
    parser.add_argument("--input-size", type=int, default=32, help="input side in pixels (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random plan")
    parser.add_argument("--no-profile", action="store_true", help="skip timing the blocks (prune only)")
    parser.add_argument(
        "--log",
        type=Path,
        help="JSON lines, one per finished model; a rerun with the same file and options skips the models in "
        "it (the whole run takes hours: an interruption loses only the model in progress)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    torch.manual_seed(args.seed)
    models = args.models.split(",") if args.models else cnn_classifiers()
    done = {}
    if args.log is not None and args.log.is_file():
        done = {r["model"]: r for r in map(json.loads, args.log.read_text().splitlines())}
    results = []
    for arch in (a.strip() for a in models):
        if arch in done:
            results.append(done[arch])
            continue
        results.append(check_model(arch, args.input_size, args.seed, not args.no_profile))
        print(f"{arch}: {results[-1].get('reason', 'ok')} ({results[-1]['seconds']}s)", file=sys.stderr, flush=True)
        if args.log is not None:
            with args.log.open("a") as log:
                log.write(json.dumps(results[-1]) + "\n")
    summary = {
        "models": len(results),
        "profiled": sum(r["profile"] for r in results),
        "pruned": sum(r["prune"] for r in results),
        "end_to_end": sum(r["prune"] and (r["profile"] or args.no_profile) for r in results),
        "tracebacks": sum(bool(r.get("traceback")) for r in results),
        "input_size": args.input_size,
        "failures": {r["model"]: f"{r['failed_at']}: {r['reason']}" for r in results if "reason" in r},
        "results": results,
    }
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
