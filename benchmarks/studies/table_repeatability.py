"""How far apart are two latency tables of one setting built back to back on this machine?

A table is only as good as its blocks: if two builds of the same grid disagree, every
prediction carries that disagreement before any calibration. For each value of
--block-rounds, builds --tables tables (no calibration; the values interleaved, A B A B, so a
slow hour hits both alike) and compares every pair: the table sums of --plans random plans
(each group keeps 20..100 %, as lut-check's held-out plans), each grid point, and each
signature's median point ratio. With --heldout N it also shows what the disagreement costs a
prediction: the last table is calibrated as ``hwprune profile`` does, every table is fitted on
those same whole-model measurements, and N held-out plans measured once (paired, as ``lut-check``)
grade every table's calibrated predictor, so the tables differ in their blocks only.
Prints JSON and writes it to --out-dir. E.g.:

    .venv/bin/python benchmarks/studies/table_repeatability.py --model resnet20 --backend onnxruntime --batch 32
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import emit, load_average, run  # noqa: E402

from hwprune.commands.profile import parse_input_size  # noqa: E402
from hwprune.io import write_json  # noqa: E402
from hwprune.latency import (  # noqa: E402
    LatencyTable,
    Predictor,
    TableSetting,
    TableSum,
    check,
    error_stats,
    heldout_plans,
    model_for,
    profile_model,
    profiler_for,
)
from hwprune.latency.build import BLOCK_WARMUP_S, DEFAULT_FRACTIONS  # noqa: E402
from hwprune.latency.calibrate import calibrate  # noqa: E402
from hwprune.latency.fit import fit  # noqa: E402
from hwprune.latency.validate import paired_meter  # noqa: E402
from hwprune.pruning.graph import ModelGraph  # noqa: E402
from hwprune.pruning.plan import PruningPlan  # noqa: E402


def compare(a: LatencyTable, b: LatencyTable, plans: list[PruningPlan]) -> dict[str, object]:
    """Disagreement of two tables: % off the median ratio of their plan sums, and of their grid points."""
    _, graph = model_for(a)
    sa, sb = TableSum(a, graph, corrected=False), TableSum(b, graph, corrected=False)
    sums = np.array([sa.features(p)["lut_sum_ms"] / sb.features(p)["lut_sum_ms"] for p in plans])
    points = {
        sig: np.array([m.median_ms / b.entries[sig][k].median_ms for k, m in pts.items()])
        for sig, pts in a.entries.items()
    }
    every = np.concatenate(list(points.values()))
    dev = np.abs(sums / np.median(sums) - 1) * 100
    pdev = np.abs(every / np.median(every) - 1) * 100
    return {
        "plan_sum_ratio_median": round(float(np.median(sums)), 4),
        "plan_sum_median_abs_pct": round(float(np.median(dev)), 2),
        "plan_sum_p95_abs_pct": round(float(np.percentile(dev, 95)), 2),
        "point_median_abs_pct": round(float(np.median(pdev)), 2),
        "point_p90_abs_pct": round(float(np.percentile(pdev, 90)), 2),
        "signature_median_ratios": {sig: round(float(np.median(r)), 3) for sig, r in points.items()},
    }


def grade(
    built: dict[int, list[LatencyTable]], model: nn.Module, graph: ModelGraph, count: int, seed: int
) -> dict[str, object]:
    """Calibrate one table, fit every table on its whole-model measurements, grade all on the same held-out plans."""
    tables = [t for ts in built.values() for t in ts]
    for t in tables:
        t.settings |= {"calib_plans": 13, "calib_seed": 1234}
    first = tables[-1]
    profiler = profiler_for(first)
    calibrate(first, model, graph, profiler, progress=False)
    for t in tables[:-1]:
        t.calibration = dict(first.calibration) | {"fit": fit(t, graph, first.calibration["plans"])}
    plans = heldout_plans(first, graph, count, seed + 1)
    report = check(
        first, model, graph, profiler, plans, progress=False, measure=paired_meter(first, model, graph, profiler)
    )
    measured = [r["measured_ms"] for r in report["rows"]]

    def score(t: LatencyTable) -> dict[str, object]:
        stats = error_stats([Predictor(t, graph).predict_ms(q) for q in plans], measured)
        return {"form": t.calibration["fit"]["form"]} | {k: round(x, 3) for k, x in stats.items()}

    return {
        "plans": len(plans),
        "by_block_rounds": {str(v): [score(t) for t in ts] for v, ts in built.items()},
        "calibration": first.calibration,
        "rows": report["rows"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", default="32x32")
    p.add_argument("--in-channels", type=int, default=1, help="1: the demo's Fashion-MNIST input")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--block-rounds", default="2,4", help="comma-separated values to compare")
    p.add_argument("--tables", type=int, default=2, help="tables built per value")
    p.add_argument("--plans", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--heldout", type=int, default=0, help="held-out plans to grade every table's prediction on")
    p.add_argument("--out-dir", default="benchmarks/results")
    args = p.parse_args()
    try:
        values = [int(v) for v in args.block_rounds.split(",")]
    except ValueError:
        p.error(f"--block-rounds takes comma-separated counts like 2,4; got {args.block_rounds!r}")
    if min(values) < 1 or args.tables < 1 or args.plans < 1:
        p.error("--block-rounds values, --tables and --plans must be >= 1")
    load_before = load_average()
    built: dict[int, list[LatencyTable]] = {v: [] for v in values}
    seconds: dict[int, list[float]] = {v: [] for v in values}
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in itertools.product(range(args.tables), values):
            setting = TableSetting(
                model=args.model,
                in_channels=args.in_channels,
                num_classes=10 if ":" not in args.model else 1000,
                input_size=parse_input_size(args.input_size),
                batch=args.batch,
                backend=args.backend,
                threads=args.threads,
                repeats=10,
                runs=args.runs,
                warmup=10,
                warmup_s=BLOCK_WARMUP_S,
                grid=DEFAULT_FRACTIONS,
                calib_plans=0,
                block_rounds=v,
            )
            start = time.perf_counter()
            table, _ = profile_model(setting, Path(tmp) / f"lut_{v}_{i}.json", progress=False)
            seconds[v].append(round(time.perf_counter() - start, 1))
            built[v].append(table)
    model, graph = model_for(built[values[0]][0])
    rng = np.random.default_rng(args.seed)
    plans = [PruningPlan.random(args.model, graph, rng, low=0.2, high=1.0) for _ in range(args.plans)]
    summary = {
        "command": "python benchmarks/studies/table_repeatability.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "backend": args.backend,
        "batch": args.batch,
        "input_size": args.input_size,
        "device_key": built[values[0]][0].device_key(),
        "grid": list(DEFAULT_FRACTIONS),
        "runs": args.runs,
        "plans": args.plans,
        "by_block_rounds": {
            str(v): {
                "build_seconds": seconds[v],
                "pairs": [compare(a, b, plans) for a, b in itertools.combinations(built[v], 2)],
            }
            for v in values
        },
        "heldout": grade(built, model, graph, args.heldout, args.seed) if args.heldout else None,
        "load_average": {"before": load_before, "after": load_average()},
    }
    stem = f"{args.model.replace(':', '-')}_{args.backend}_b{args.batch}_{args.input_size}"
    write_json(Path(args.out_dir) / f"table_repeatability_{stem}.json", summary)
    if summary["heldout"]:  # the measurements stay in the file; the print keeps the scores
        summary["heldout"] = {k: v for k, v in summary["heldout"].items() if k not in ("calibration", "rows")}
    emit(summary)


if __name__ == "__main__":
    run(main)
