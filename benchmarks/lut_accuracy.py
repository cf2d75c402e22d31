"""Build a latency table for one model/backend/setting, then grade its predictions on held-out plans.

Prints a JSON summary (profiling time per phase, error figures for the calibrated predictor and
both references, and the held-out error of every calibration form) and writes the full report,
held-out rows included, to --out-dir. Run from the repository root, e.g.:

    .venv/bin/python benchmarks/lut_accuracy.py --model resnet20 --backend torch-cpu --batch 32 --input-size 32x32

With --paired every plan is timed right after the unpruned model and its samples are scaled by
(unpruned latency at calibration) / (unpruned latency now): the machine's drift since the table
was made is taken out, which is how `hwprune prune` judges a relative budget. The report says
which protocol produced it.
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
from hwprune.latency.build import BLOCK_WARMUP_S, DEFAULT_FRACTIONS, DEFAULT_QUANTUM  # noqa: E402
from hwprune.latency.calibrate import PlanMeter, measure_rounds  # noqa: E402
from hwprune.latency.load import profiler_for  # noqa: E402
from hwprune.latency.validate import calibrated_full_ms, compare_forms  # noqa: E402
from hwprune.profilers import Measurement  # noqa: E402
from hwprune.pruning import PruningPlan  # noqa: E402


class PairedMeter:
    """A plan's latency at the machine speed of calibration time: timed right after the unpruned model, rescaled."""

    def __init__(self, meter: PlanMeter, full: PruningPlan, reference_ms: float) -> None:
        self.meter, self.full, self.reference_ms = meter, full, reference_ms
        self.unpruned_ms: list[float] = []  # every measurement of the unpruned model: the machine's drift

    def __call__(self, plan: PruningPlan) -> Measurement:
        self.unpruned_ms.append(self.meter(self.full).median_ms)
        scale = self.reference_ms / self.unpruned_ms[-1]
        m = self.meter(plan)
        return Measurement([s * scale for s in m.samples_ms], [r * scale for r in m.run_medians_ms or []] or None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", default="torch-cpu")
    p.add_argument("--batch", type=int, default=32, help="the batch the demo deploys at (32 for the zoo)")
    p.add_argument("--input-size", default="32x32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed samples per run")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement, the quietest kept")
    p.add_argument("--grid", default=",".join(str(f) for f in DEFAULT_FRACTIONS))
    p.add_argument("--quantum", type=int, default=DEFAULT_QUANTUM)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calib-plans", type=int, default=13)
    p.add_argument("--calib-form", default="auto")
    p.add_argument("--plans", type=int, default=40, help="held-out plans to measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aligned-plans", type=int, default=10,
                   help="further held-out plans with every width a multiple of the quantum, scored on their own")
    p.add_argument("--repeat-check", type=int, default=10, help="held-out plans measured a second time")
    p.add_argument("--paired", action="store_true",
                   help="time the unpruned model before every plan and take the machine's drift out (see above)")
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--resume", action="store_true", help="reuse/continue the table in --out-dir")
    args = p.parse_args()

    load_before = load_average()
    setting = TableSetting(
        model=args.model, in_channels=3, num_classes=10 if ":" not in args.model else 1000,
        input_size=parse_input_size(args.input_size), batch=args.batch, backend=args.backend, threads=args.threads,
        repeats=args.repeats, runs=args.runs, warmup=10, warmup_s=BLOCK_WARMUP_S, grid=parse_grid(args.grid),
        calib_plans=args.calib_plans, calib_form=args.calib_form, quantum=args.quantum, rounds=args.rounds,
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
    shape = (setting.batch, *setting.input_shape)
    meter = PlanMeter(model, graph, profiler, shape)
    if args.paired:
        reference = calibrated_full_ms(table, graph)
        assert reference is not None  # calibration always measures the unpruned model
        meter = PairedMeter(meter, PruningPlan.full(str(table.settings["model"]), graph), reference)
        stem += "_paired"
    report = check(table, model, graph, profiler, plans, progress=False, measure=meter)
    report["calibration_forms"] = compare_forms(table, graph, report)
    # The noise floor: the same plans measured again now (same protocol and rounds) vs. before.
    again = measure_rounds(plans[: args.repeat_check], meter, setting.rounds, "again", progress=False)
    drift = [abs(m.median_ms - r["measured_ms"]) / r["measured_ms"] * 100
             for (m, _, _), r in zip(again, report["rows"], strict=False)]
    aligned = heldout_plans(table, graph, args.aligned_plans, args.seed + 1, round_to=setting.quantum)
    random_keys = {q.key() for q in plans}
    aligned = [a for a in aligned if a.key() not in random_keys]
    report["aligned"] = None
    if aligned:
        report["aligned"] = check(table, model, graph, profiler, aligned, progress=False, measure=meter)
    if report["aligned"] is not None:
        report["aligned"]["calibration_forms"] = compare_forms(table, graph, report["aligned"])
    report["repeatability"] = {"plans": len(drift), "median_abs_pct": float(np.median(drift)) if drift else None,
                               "max_abs_pct": float(np.max(drift)) if drift else None}
    summary = {
        "command": "python benchmarks/lut_accuracy.py " + " ".join(sys.argv[1:]),
        "protocol": "paired: drift since calibration taken out" if args.paired else "plain",
        "unpruned_alongside_ms": None if not isinstance(meter, PairedMeter) else {
            "at_calibration": round(meter.reference_ms, 3), "min": round(min(meter.unpruned_ms), 3),
            "median": round(float(np.median(meter.unpruned_ms)), 3), "max": round(max(meter.unpruned_ms), 3)},
        "model": args.model, "backend": args.backend, "batch": args.batch, "input_size": args.input_size,
        "threads": args.threads, "device_key": table.device_key(), "grid": list(setting.grid),
        "quantum": setting.quantum, "rounds": setting.rounds,
        "signatures": len(table.grids), "blocks": table.num_entries(),
        "profile_seconds": {"total": round(profile_s, 1), "blocks": round(seconds["blocks_s"], 1),
                            "calibration": round(seconds["calibration_s"], 1)},
        "unstable_blocks": seconds.get("unstable_blocks", 0),
        "heldout_plans": report["plans"], "full_model_ms": round(report["full_model_measured_ms"], 3),
        "unstable_measurements": report["unstable_measurements"],
        "repeatability": {k: _r(v) for k, v in report["repeatability"].items()},
        "predictors": {k: {m: round(v, 4) for m, v in st.items()} for k, st in report["predictors"].items()},
        "aligned_predictors": None if report["aligned"] is None else {
            k: {m: round(v, 4) for m, v in st.items()} for k, st in report["aligned"]["predictors"].items()},
        "aligned_calibration_forms": None if report["aligned"] is None else {
            k: {m: _r(v) for m, v in st.items() if m != "coef"}
            for k, st in report["aligned"]["calibration_forms"].items()},
        "calibration_forms": {k: {m: _r(v) for m, v in st.items() if m != "coef"}
                              for k, st in report["calibration_forms"].items()},
        "load_average": {"before": load_before, "after": load_average()},
    }
    report["summary"] = summary
    write_json(out_dir / f"accuracy_{stem}.json", report)
    emit(summary)


if __name__ == "__main__":
    run(main)
