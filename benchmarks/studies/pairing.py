"""Does pairing with the unpruned model help? A table's calibration plans and held-out plans, both ways, one session.

Every round times, for every plan (the table's calibration plans, then --plans held-out ones),
the unpruned model and right after it the plan. Read *alone*, a plan is its own measurement
(the faster of the rounds); read *paired*, it is the plan's ratio to the unpruned reading just
before it (the lower of the rounds) times the median of all unpruned readings, as `profile` and
`lut-check` read plans since f0ad703. Each protocol's calibration plans are fitted the way
`profile` fits them and scored on its held-out plans. Prints JSON. Run from the repository root:

    .venv/bin/python benchmarks/studies/pairing.py runs/demo/lut.json --plans 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import _r, emit, load_average, run  # noqa: E402

from hwprune.errors import ConfigError  # noqa: E402
from hwprune.latency import TableSum, error_stats, heldout_plans, load_table, model_for  # noqa: E402
from hwprune.latency.calibrate import MIN_PLANS, PlanMeter, calibration_plans  # noqa: E402
from hwprune.latency.fit import (
    apply_fit,  # noqa: E402
    fit,  # noqa: E402
)
from hwprune.profilers import Measurement  # noqa: E402
from hwprune.pruning import PruningPlan  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lut", help="a latency table from `hwprune profile` (its calibration plans are re-measured)")
    p.add_argument("--plans", type=int, default=20, help="held-out random plans")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.plans < 1 or args.rounds < 2:
        p.error("--plans must be >= 1 and --rounds >= 2 (the round-to-round figure compares two rounds)")
    load_before = load_average()
    table, profiler = load_table(args.lut)
    model, graph = model_for(table)
    s = table.settings
    if int(s.get("calib_plans", 0)) < MIN_PLANS:
        raise ConfigError(f"{args.lut} has no calibration to re-measure: profile it with --calib-plans >= {MIN_PLANS}")
    calib = calibration_plans(str(s["model"]), graph, int(s["calib_plans"]), int(s["calib_seed"]), int(s["quantum"]))
    plans = calib + heldout_plans(table, graph, args.plans, args.seed)
    meter, full = PlanMeter.for_table(table, model, graph, profiler), PruningPlan.full(str(s["model"]), graph)
    pairs: list[list[tuple[float, float]]] = [[] for _ in plans]
    start = time.perf_counter()
    for _ in range(args.rounds):
        for i, plan in enumerate(plans):
            pairs[i].append((meter(full).median_ms, meter(plan).median_ms))
    reference = statistics.median(a for pr in pairs for a, _ in pr)
    readings = {
        "alone": [min(b for _, b in pr) for pr in pairs],
        "paired": [reference * min(b / a for a, b in pr) for pr in pairs],
    }
    sums = TableSum(table, graph, corrected=False)
    features = [sums.features(plan) for plan in plans[len(calib) :]]
    out = {}
    for protocol, ys in readings.items():
        rows = [
            {"keep": plan.keep, "measurement": Measurement([y]).to_dict()} for plan, y in zip(calib, ys, strict=False)
        ]
        f = fit(table, graph, rows, str(s.get("calib_form", "auto")))
        predicted = [apply_fit(f["coef"], f["offset_ms"], x) for x in features]
        out[protocol] = {
            "form": f["form"],
            **{k: _r(v) for k, v in error_stats(predicted, ys[len(calib) :]).items()},
            "round_to_round_median_pct": _r(
                statistics.median(abs(_ratio(pr, 1, protocol) / _ratio(pr, 0, protocol) - 1) * 100 for pr in pairs)
            ),
        }
    emit(
        {
            "command": "python benchmarks/studies/pairing.py " + " ".join(sys.argv[1:]),
            "lut": args.lut,
            "model": s["model"],
            "backend": table.backend,
            "batch": s["batch"],
            "calibration_plans": len(calib),
            "heldout_plans": args.plans,
            "rounds": args.rounds,
            "seconds": _r(time.perf_counter() - start, 1),
            "unpruned_readings_ms": {
                "min": _r(min(a for pr in pairs for a, _ in pr)),
                "median": _r(reference),
                "max": _r(max(a for pr in pairs for a, _ in pr)),
            },
            "load_average": {"before": load_before, "after": load_average()},
            **out,
        }
    )


def _ratio(pair: list[tuple[float, float]], i: int, protocol: str) -> float:
    """Round ``i`` of a plan read alone (its own median) or paired (its ratio to the unpruned model)."""
    alongside, plan = pair[i]
    return plan / alongside if protocol == "paired" else plan


if __name__ == "__main__":
    run(main, "nothing was written")
