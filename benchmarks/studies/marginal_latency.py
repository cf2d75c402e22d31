"""Which group does the table misprice in a plan? Widen one group at a time and compare measured with predicted.

A searched plan can run far over its prediction once whole (NetAdapt's ResNet-20 plans on ONNX
Runtime: 1.13-1.31x) even after every width of it was timed into the table. This takes a plan
from a prune run (a try of its ``tries.json``, predicted with the run's own densified table),
builds it with each pruned group widened back to full in turn, measures every variant as the job
does (the device's profiler, faster of --rounds interleaved rounds) and prints, per variant, the
predicted and measured latency and their changes from the plan: a group whose measured change
disagrees with the predicted one is where the table misses what the whole graph does. The
unpruned model and the uniform plan of the same predicted latency's ratio are measured alongside
as references. Run from the repository root, e.g.:

    .venv/bin/python benchmarks/studies/marginal_latency.py runs/bench-budget23/resnet20/netadapt-0.5x --try 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import _r, emit, run  # noqa: E402

from hwprune.errors import ConfigError  # noqa: E402
from hwprune.job import resume_config  # noqa: E402
from hwprune.job.measure import load_inputs  # noqa: E402
from hwprune.job.tries import load_tries  # noqa: E402
from hwprune.latency import LatencyTable, Predictor  # noqa: E402
from hwprune.pruning import PruningPlan, apply_plan  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a `hwprune prune` run directory with tries.json and lut.json")
    p.add_argument("--try", dest="try_no", type=int, default=1, help="which try's plan (1-based)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds, the faster kept")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    tries = load_tries(run_dir / "tries.json")
    if not 1 <= args.try_no <= len(tries):
        raise ConfigError(f"{run_dir} has {len(tries)} tries; choose --try between 1 and {len(tries)}")
    cfg = resume_config(run_dir)
    loaded = load_inputs(cfg)
    table = LatencyTable.load(run_dir / "lut.json", expected_key=loaded.profiler.device_key())
    predictor = Predictor(table, loaded.graph)
    full = PruningPlan.full(loaded.spec.name, loaded.graph)
    plan = full.with_keep(PruningPlan.from_dict(tries[args.try_no - 1]["plan"]).keep)  # channel counts only
    ratio = predictor.predict_ms(plan) / predictor.predict_ms(full)
    uniform = PruningPlan.uniform(plan.model, loaded.graph, ratio)
    variants = {"plan": plan, "unpruned": full, f"uniform r={ratio:.2f}": uniform}
    variants |= {
        f"{g.name} -> {g.channels}": plan.with_keep({g.name: g.channels})
        for g in loaded.graph.groups
        if plan.keep[g.name] != g.channels
    }
    deployed = {
        k: loaded.profiler.deploy(apply_plan(loaded.model, v, loaded.graph)[0].eval(), loaded.input_shape)
        for k, v in variants.items()
    }
    measured = {k: float("inf") for k in variants}
    for _ in range(args.rounds):
        for k, measure in deployed.items():
            measured[k] = min(measured[k], measure().median_ms)
    p0, m0 = predictor.predict_ms(plan), measured["plan"]
    rows = [
        {
            "variant": k,
            "keep": v.keep,
            "predicted_ms": _r(predictor.predict_ms(v)),
            "measured_ms": _r(measured[k]),
            "measured_over_predicted": _r(measured[k] / predictor.predict_ms(v)),
            "predicted_change_ms": _r(predictor.predict_ms(v) - p0),
            "measured_change_ms": _r(measured[k] - m0),
        }
        for k, v in variants.items()
    ]
    emit(
        {
            "benchmark": "marginal_latency",
            "command": "python " + " ".join(sys.argv),
            "run_dir": str(run_dir),
            "try": args.try_no,
            "rounds": args.rounds,
            "fingerprint": loaded.profiler.fingerprint(),
            "rows": rows,
        }
    )


if __name__ == "__main__":
    run(main)
