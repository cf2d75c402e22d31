"""Build a latency table for one model/backend/setting, then grade its predictions on held-out plans.

Prints a JSON summary (profiling time per phase, error figures for the calibrated predictor and
both references, and the held-out error of every calibration form) and writes the full report,
held-out rows included, to --out-dir. Run from the repository root, e.g.:

    .venv/bin/python benchmarks/lut_accuracy.py --model resnet20 --backend torch-cpu --batch 32 --input-size 32x32

Every plan is timed right after the unpruned model and read at the machine speed the table was
calibrated at, as `hwprune lut-check` does (the calibration is measured the same way); --unpaired
times each plan alone. The report says which protocol produced it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import _r, emit, load_average, run  # noqa: E402

from hwprune.commands.profile import parse_input_size  # noqa: E402
from hwprune.io import write_json  # noqa: E402
from hwprune.latency import TableSetting, check, heldout_plans, model_for, parse_grid, profile_model  # noqa: E402
from hwprune.latency.build import BLOCK_WARMUP_S, DEFAULT_BLOCK_ROUNDS, DEFAULT_FRACTIONS  # noqa: E402
from hwprune.latency.calibrate import PlanMeter, measure_rounds  # noqa: E402
from hwprune.latency.load import profiler_for  # noqa: E402
from hwprune.latency.validate import calibrated_full_ms, compare_forms, paired_meter  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", default="torch-cpu")
    p.add_argument("--batch", type=int, default=32, help="the batch the demo deploys at (32 for the zoo)")
    p.add_argument("--input-size", default="32x32")
    p.add_argument("--threads", type=int, default=1, help="inference threads (the demo's 1, see README)")
    p.add_argument("--repeats", type=int, default=10, help="timed samples per run")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement, the quietest kept")
    p.add_argument("--grid", default=",".join(str(f) for f in DEFAULT_FRACTIONS))
    p.add_argument("--quantum", type=int, default=None, help="unset: the host's SIMD width in floats")
    p.add_argument("--rounds", type=int, default=2, help="times each whole-model plan is measured")
    p.add_argument("--block-rounds", type=int, default=DEFAULT_BLOCK_ROUNDS, help="passes over the grid")
    p.add_argument("--calib-plans", type=int, default=13)
    p.add_argument("--calib-form", default="auto")
    p.add_argument("--plans", type=int, default=40, help="held-out plans to measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--aligned-plans",
        type=int,
        default=10,
        help="further held-out plans with every width a multiple of the quantum, scored on their own",
    )
    p.add_argument("--repeat-check", type=int, default=10, help="held-out plans measured a second time")
    p.add_argument("--unpaired", action="store_true", help="time each held-out plan alone (see above)")
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--resume", action="store_true", help="reuse/continue the table in --out-dir")
    args = p.parse_args()

    load_before = load_average()
    setting = TableSetting(
        model=args.model,
        in_channels=3,
        num_classes=10 if ":" not in args.model else 1000,
        input_size=parse_input_size(args.input_size),
        batch=args.batch,
        backend=args.backend,
        threads=args.threads,
        repeats=args.repeats,
        runs=args.runs,
        warmup=10,
        warmup_s=BLOCK_WARMUP_S,
        grid=parse_grid(args.grid),
        calib_plans=args.calib_plans,
        calib_form=args.calib_form,
        quantum=args.quantum,
        rounds=args.rounds,
        block_rounds=args.block_rounds,
    )
    stem = f"{args.model.replace(':', '-')}_{args.backend}_b{args.batch}_{args.input_size}"
    out_dir = Path(args.out_dir)
    lut = out_dir / f"lut_{stem}.json"
    start = time.perf_counter()
    table, seconds = profile_model(setting, lut, resume=args.resume, overwrite=not args.resume, progress=False)
    profile_s = time.perf_counter() - start
    model, graph = model_for(table)
    profiler = profiler_for(table)
    plans = heldout_plans(table, graph, args.plans, args.seed)
    if args.unpaired:
        meter = PlanMeter.for_table(table, model, graph, profiler)
        stem += "_unpaired"
    else:
        meter = paired_meter(table, model, graph, profiler)
    report = check(table, model, graph, profiler, plans, progress=False, measure=meter)
    report["calibration_forms"] = compare_forms(table, graph, report)
    # The noise floor: the same plans measured again now (same protocol and rounds) vs. before.
    again = measure_rounds(plans[: args.repeat_check], meter, setting.rounds, "again", progress=False)
    drift = [
        abs(m.median_ms - r["measured_ms"]) / r["measured_ms"] * 100
        for (m, _, _), r in zip(again, report["rows"], strict=False)
    ]
    aligned = heldout_plans(table, graph, args.aligned_plans, args.seed + 1, round_to=setting.quantum)
    random_keys = {q.key() for q in plans}
    aligned = [a for a in aligned if a.key() not in random_keys]
    report["aligned"] = None
    if aligned:
        report["aligned"] = check(table, model, graph, profiler, aligned, progress=False, measure=meter)
    if report["aligned"] is not None:
        report["aligned"]["calibration_forms"] = compare_forms(table, graph, report["aligned"])
    report["repeatability"] = {
        "plans": len(drift),
        "median_abs_pct": float(np.median(drift)) if drift else None,
        "max_abs_pct": float(np.max(drift)) if drift else None,
    }
    summary = {
        "command": "python benchmarks/lut_accuracy.py " + " ".join(sys.argv[1:]),
        "protocol": "calibration paired; held-out plans " + ("alone" if args.unpaired else "paired"),
        "unpruned_alongside": {k: _r(v) for k, v in (report["unpruned_alongside"] or {}).items()} or None,
        "calibration_reference_ms": _r(calibrated_full_ms(table, graph)),
        "model": args.model,
        "backend": args.backend,
        "batch": args.batch,
        "input_size": args.input_size,
        "threads": args.threads,
        "device_key": table.device_key(),
        "grid": list(setting.grid),
        "quantum": setting.quantum,
        "rounds": setting.rounds,
        "block_rounds": setting.block_rounds,
        "signatures": len(table.grids),
        "blocks": table.num_entries(),
        "profile_seconds": {
            "total": round(profile_s, 1),
            "blocks": round(seconds["blocks_s"], 1),
            "calibration": round(seconds["calibration_s"], 1),
        },
        "unstable_blocks": seconds.get("unstable_blocks", 0),
        "unstable_points": seconds.get("unstable_points", 0),
        "heldout_plans": report["plans"],
        "full_model_ms": round(report["full_model_measured_ms"], 3),
        "unstable_measurements": report["unstable_measurements"],
        "repeatability": {k: _r(v) for k, v in report["repeatability"].items()},
        "predictors": {k: {m: round(v, 4) for m, v in st.items()} for k, st in report["predictors"].items()},
        "aligned_predictors": None
        if report["aligned"] is None
        else {k: {m: round(v, 4) for m, v in st.items()} for k, st in report["aligned"]["predictors"].items()},
        "aligned_calibration_forms": None
        if report["aligned"] is None
        else {
            k: {m: _r(v) for m, v in st.items() if m != "coef"}
            for k, st in report["aligned"]["calibration_forms"].items()
        },
        "calibration_forms": {
            k: {m: _r(v) for m, v in st.items() if m != "coef"} for k, st in report["calibration_forms"].items()
        },
        "load_average": {"before": load_before, "after": load_average()},
    }
    report["summary"] = summary
    write_json(out_dir / f"accuracy_{stem}.json", report)
    emit(summary)


if __name__ == "__main__":
    run(main)
