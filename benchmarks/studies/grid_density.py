"""How dense must the (c_in, c_out) grid be, and does splitting aligned/unaligned widths pay? Measure, then compare.

Every candidate grid (fractions + quantum) is built for the same model and setting, sharing one
cache of timed blocks (a block in two candidates is timed once; each candidate is charged the
seconds of its own blocks) and one set of whole-model measurements (calibration plans and
held-out plans do not depend on the table). Reported per candidate:

- cost: blocks and the seconds they took;
- block level: interpolation error at random off-grid widths (20..100 % of each layer), timed directly;
- model level: held-out error of the calibrated predictor and of the plain sum.

    .venv/bin/python benchmarks/studies/grid_density.py --model resnet20 --batch 32 --input-size 32x32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import _r, emit, load_average, run  # noqa: E402

from hwprune.commands.profile import parse_input_size  # noqa: E402
from hwprune.io import write_json  # noqa: E402
from hwprune.latency import LatencyTable, Signature, TableSetting, check, heldout_plans, parse_grid  # noqa: E402
from hwprune.latency.build import BLOCK_WARMUP_S, fill_table, new_table  # noqa: E402
from hwprune.latency.calibrate import PlanMeter, calibrate, calibration_plans, measure_rounds  # noqa: E402
from hwprune.models import create_model  # noqa: E402
from hwprune.profilers import keep_faster  # noqa: E402
from hwprune.pruning import ModelGraph, PruningPlan  # noqa: E402

CANDIDATES = "0.5,1@1;0.125,0.25,0.5,0.75,1@1;8@1;0.25,0.5,1@8;0.125,0.25,0.5,0.75,1@8"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", default="torch-cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", default="32x32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed samples per run")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement, the quietest kept")
    p.add_argument("--candidates", default=CANDIDATES, help="';'-separated GRID@QUANTUM")
    p.add_argument("--probes", type=int, default=6, help="random off-grid widths timed per layer grid")
    p.add_argument("--plans", type=int, default=30)
    p.add_argument("--calib-plans", type=int, default=13)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out-dir", default="benchmarks/results")
    args = p.parse_args()

    load_before = load_average()
    base = TableSetting(
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
        calib_plans=args.calib_plans,
        rounds=args.rounds,
    )
    model = create_model(base.model, base.in_channels, base.num_classes)
    graph = ModelGraph(model, base.input_shape)
    profiler = base.profiler()
    shape = (base.batch, *base.input_shape)
    runs: dict[object, list[tuple[object, float]]] = {}  # block -> its timed runs and their seconds
    asked: dict[object, int] = {}  # per candidate: how many runs of a block it has consumed

    def block(spec):
        """The k-th run of a block for this candidate, timed only the first time any candidate asks."""
        k = asked.get(spec, 0)
        asked[spec] = k + 1
        done = runs.setdefault(spec, [])
        if k >= len(done):
            t0 = time.perf_counter()
            done.append((profiler.measure_block(spec), time.perf_counter() - t0))
        return done[k][0]

    # Whole-model runs do not depend on the table: measure calibration and held-out plans once, in rounds.
    calib = calibration_plans(base.model, graph, base.calib_plans, base.calib_seed, base.quantum)
    stub = LatencyTable("", {}, base.to_dict(), {}, {}, {}, calibration={"plans": [{"keep": p.keep} for p in calib]})
    heldout = heldout_plans(stub, graph, args.plans, 0)
    every = calib + heldout
    results = measure_rounds(every, PlanMeter(model, graph, profiler, shape), base.rounds, "plans", progress=False)
    plans = {p.key(): m for p, (m, _, _) in zip(every, results, strict=True)}

    def plan_ms(plan: PruningPlan):
        return plans[plan.key()]

    # Off-grid probes: random widths per layer, timed directly, shared by every candidate.
    rng = np.random.default_rng(1)
    probes = []
    for layer in graph.layer_shapes():
        sig = Signature.of(layer, base.batch)
        for _ in range(args.probes):
            ci = (
                layer.c_in
                if layer.name == graph.layer_shapes()[0].name
                else int(rng.integers(max(1, layer.c_in // 5), layer.c_in + 1))
            )
            co = int(rng.integers(max(1, layer.c_out // 5), layer.c_out + 1))
            if layer.depthwise:
                ci = co
            if layer.kind == "linear":
                co = layer.c_out
            probes.append((sig, ci, co, (layer.c_in, layer.c_out)))
    for _ in range(base.rounds):
        for s, ci, co, _ in probes:
            block(s.block(ci, co))

    def best(spec) -> float:
        kept = None
        for m, _ in runs[spec][: base.rounds]:
            kept = keep_faster(kept, m)
        return kept.median_ms

    probe_values = {(s.key(), ci, co): best(s.block(ci, co)) for s, ci, co, _ in probes}

    rows = []
    for text in args.candidates.split(";"):
        grid_text, _, q = text.partition("@")
        setting = TableSetting(**{**base.__dict__, "grid": parse_grid(grid_text), "quantum": int(q or 1)})
        asked.clear()
        table = new_table(setting, graph, profiler)
        fill_table(table, profiler, None, progress=False, measure=block)
        calibrate(table, model, graph, profiler, None, progress=False, measure=plan_ms)
        report = check(table, model, graph, profiler, heldout, progress=False, measure=plan_ms)
        errs = [
            abs(table.lookup_ms(s.key(), ci, co, full=full) - probe_values[(s.key(), ci, co)])
            / probe_values[(s.key(), ci, co)]
            * 100
            for s, ci, co, full in probes
        ]
        cost = sum(
            sec
            for k, ci, co in table.planned_points()
            for _, sec in runs[table.signatures[k].block(ci, co)][: base.rounds]
        )
        rows.append(
            {
                "grid": list(setting.grid),
                "quantum": setting.quantum,
                "blocks": table.num_entries(),
                "block_seconds": round(cost, 1),
                "probe_median_abs_pct": round(float(np.median(errs)), 2),
                "probe_p95_abs_pct": round(float(np.percentile(errs, 95)), 2),
                "model": {
                    k: {m: _r(v) for m, v in st.items()} for k, st in report["predictors"].items() if k != "flops"
                },
            }
        )
    summary = {
        "command": "python benchmarks/studies/grid_density.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "backend": args.backend,
        "batch": args.batch,
        "input_size": args.input_size,
        "threads": args.threads,
        "device_key": profiler.device_key(),
        "heldout_plans": len(heldout),
        "rounds": base.rounds,
        "probes": len(probes),
        "candidates": rows,
        "load_average": {"before": load_before, "after": load_average()},
    }
    stem = f"{args.model.replace(':', '-')}_{args.backend}_b{args.batch}_{args.input_size}"
    write_json(Path(args.out_dir) / f"grid_{stem}.json", summary)
    emit(summary)


if __name__ == "__main__":
    run(main)
