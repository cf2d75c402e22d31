"""How cheap can a paired verdict be? The same plans judged again and again, protocols alternating.

A paired verdict (``hwprune.job.measure.measure_judged``) times the unpruned model and the plan in
``--rounds`` interleaved rounds per session, two sessions, each timing the best of ``--runs`` runs
of ``--repeats`` samples. It is most of a compare's fixed cost. This study judges uniform plans of
a checkpoint under several protocols ("RUNSxROUNDS"), the protocols taking turns within every
repetition so all of them see the same hour, and prints per protocol and plan the mean and spread
of the verdict's ratio (plan median / unpruned median, what a relative budget reads) and the
seconds per verdict. A cheaper protocol is as good when its ratios match the default's within
the default's own spread. Each plan's budget is set at its first reading, so no first session is
decisive and every verdict takes both sessions.

    .venv/bin/python benchmarks/studies/verdict_cost.py --protocols 5x3,3x3,5x2 --verdicts 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, load_average, run  # noqa: E402

from hwprune.agents import Budget  # noqa: E402
from hwprune.job import JobConfig  # noqa: E402
from hwprune.job.measure import load_inputs, measure_judged  # noqa: E402
from hwprune.pruning import PruningPlan  # noqa: E402
from hwprune.pruning.apply import apply_plan  # noqa: E402


def protocols(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise SystemExit(f"error: --protocols takes RUNSxROUNDS items separated by commas (5x3,3x3), got {text!r}")
    return pairs  # type: ignore[return-value]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/resnet20-fmnist")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="the demo's deployment setting: 1")
    p.add_argument("--ratios", default="0.3,0.5,0.7", help="uniform keep ratios of the judged plans")
    p.add_argument("--protocols", default="5x3,3x3,5x2", help="RUNSxROUNDS per protocol, the first the reference")
    p.add_argument("--verdicts", type=int, default=4, help="verdicts per protocol and plan")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # instability is what this study measures; it reports it as numbers
    tried = protocols(args.protocols)
    deployment = {"backend": args.backend, "batch": args.batch, "threads": args.threads}
    cfg = JobConfig(checkpoint=args.checkpoint, out="-", progress=False, **deployment)
    loaded = load_inputs(cfg)
    plans = {}
    for ratio in (float(r) for r in args.ratios.split(",")):
        plan = PruningPlan.uniform(loaded.spec.name, loaded.graph, ratio)
        plans[f"uniform {ratio:g}"] = apply_plan(loaded.model, plan, loaded.graph, None)[0].eval()
    budgets: dict[str, Budget] = {}
    rows: dict[str, dict[str, list[tuple[float, float]]]] = {f"{r}x{n}": {k: [] for k in plans} for r, n in tried}
    load_before, start = load_average(), time.perf_counter()
    for rep in range(args.verdicts):
        for name, model in plans.items():
            for runs, rounds in tried[rep % len(tried) :] + tried[: rep % len(tried)]:  # turns rotate
                loaded.profiler.runs = runs
                if name not in budgets:  # this plan's own ratio: no first session is decisive
                    first = measure_judged(loaded, model, cfg, Budget.parse("1x", 1.0))
                    budgets[name] = Budget.parse(f"{first.measured.median_ms / first.unpruned.median_ms:.4f}x", 1.0)
                t0 = time.perf_counter()
                judged = measure_judged(loaded, model, replace(cfg, rounds=rounds), budgets[name])
                seconds = time.perf_counter() - t0
                rows[f"{runs}x{rounds}"][name].append((judged.measured.median_ms / judged.unpruned.median_ms, seconds))
    summary = {
        proto: {
            name: {
                "ratio_mean": round(statistics.mean(r for r, _ in got), 4),
                "ratio_sd": round(statistics.stdev(r for r, _ in got), 4) if len(got) > 1 else None,
                "ratios": [round(r, 4) for r, _ in got],
                "seconds_per_verdict": round(statistics.mean(s for _, s in got), 1),
            }
            for name, got in by_plan.items()
        }
        for proto, by_plan in rows.items()
    }
    emit(
        {
            "benchmark": "verdict_cost",
            "command": "python benchmarks/studies/verdict_cost.py " + " ".join(sys.argv[1:]),
            "checkpoint": args.checkpoint,
            "deployment": deployment,
            "repeats": cfg.repeats,
            "protocols": summary,
            "wall_s": round(time.perf_counter() - start, 1),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        }
    )


if __name__ == "__main__":
    run(main)
