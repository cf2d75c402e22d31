"""How reproducible is a whole-model latency measurement on this machine? The floor under any predictor.

Measures the same K pruned variants (the first is the unpruned model) round-robin R times with
the profiler's protocol (warm-up, best of --runs runs of --repeats samples), and with single runs
of 3x the samples for contrast, then prints JSON: per round, every plan's median; per plan, the
spread of its medians across rounds; how much of that spread is shared by all plans in a round
(a machine-wide speed state) rather than per-measurement noise; and the spread of each plan's
ratio to the unpruned model timed just before it, which is what a relative budget and a paired
calibration read. A predictor graded against single measurements cannot show a median error
below about half the typical round-to-round drift.

``--threads 1,2`` compares thread counts, interleaved round by round so both see the same hour.

    .venv/bin/python benchmarks/noise_floor.py --model resnet20 --backend onnxruntime --batch 32
    .venv/bin/python benchmarks/noise_floor.py --threads 1,2 --rounds 8 --plans 8
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, load_average, run  # noqa: E402

from hwprune.latency.allocator import pin_allocator  # noqa: E402
from hwprune.latency.calibrate import PlanMeter  # noqa: E402
from hwprune.models import create_model  # noqa: E402
from hwprune.profilers import get_profiler  # noqa: E402
from hwprune.pruning import ModelGraph, PruningPlan  # noqa: E402


def drift(medians: np.ndarray) -> dict[str, float]:
    """Per plan: (max - min) / min over rounds, in %; the round-to-round |change| in %; the coefficient
    of variation over rounds of each plan's median and of its ratio to the unpruned model (column 0)."""
    spread = (medians.max(axis=0) - medians.min(axis=0)) / medians.min(axis=0) * 100
    steps = np.abs(np.diff(medians, axis=0)) / medians[:-1] * 100
    ratios = medians[:, 1:] / medians[:, :1]
    return {
        "max_min_spread_pct_median": float(np.median(spread)),
        "max_min_spread_pct_max": float(spread.max()),
        "round_to_round_abs_pct_median": float(np.median(steps)),
        "cv_pct_median": float(np.median(_cv(medians)) * 100),
        "ratio_to_unpruned_cv_pct_median": float(np.median(_cv(ratios)) * 100),
        "ratio_to_unpruned_cv_pct_max": float(_cv(ratios).max() * 100),
    }


def _cv(values: np.ndarray) -> np.ndarray:
    return values.std(axis=0) / values.mean(axis=0)


def summary(medians: np.ndarray) -> dict:
    shared = medians / medians.mean(axis=0)  # each plan relative to its own mean
    return {
        **drift(medians),
        "round_speed_factor": [round(float(v), 4) for v in shared.mean(axis=1)],
        "residual_after_round_factor_pct_median": float(
            np.median(np.abs(shared / shared.mean(axis=1, keepdims=True) - 1)) * 100
        ),
        "medians_ms": [[round(float(v), 3) for v in r] for r in medians],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--threads", default="2", help="CPU threads, or a comma list to compare (e.g. 1,2)")
    p.add_argument("--plans", type=int, default=6)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    pin_allocator()
    warnings.simplefilter("ignore")  # instability is what this script measures; it reports it as numbers
    in_channels, classes = (3, 1000) if ":" in args.model else (1, 10)
    model = create_model(args.model, in_channels, classes).eval()
    graph = ModelGraph(model, (in_channels, args.input_size, args.input_size))
    rng = np.random.default_rng(args.seed)
    plans = [PruningPlan.full(args.model, graph)]
    plans += [PruningPlan.random(args.model, graph, rng, low=0.2, high=1.0) for _ in range(args.plans - 1)]
    shape = (args.batch, in_channels, args.input_size, args.input_size)
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise SystemExit(f"error: --threads takes counts separated by commas (1,2), got {args.threads!r}") from None
    protocols = {
        f"best_of_{args.runs}x{args.repeats}": {"repeats": args.repeats, "runs": args.runs},
        f"single_run_{3 * args.repeats}": {"repeats": 3 * args.repeats, "runs": 1},
    }
    meters = {
        (name, t): PlanMeter(model, graph, get_profiler(args.backend, threads=t, **kw), shape)
        for name, kw in protocols.items()
        for t in thread_counts
    }
    load_before, start = load_average(), time.perf_counter()
    rows: dict[tuple[str, int], list[list[float]]] = {key: [] for key in meters}
    for _ in range(args.rounds):  # every setting once per round: all of them see the same hour
        for key, meter in meters.items():
            rows[key].append([meter(plan).median_ms for plan in plans])
    by_threads = {str(t): {name: summary(np.array(rows[(name, t)])) for name in protocols} for t in thread_counts}
    emit(
        {
            "benchmark": "noise_floor",
            "command": "python benchmarks/noise_floor.py " + " ".join(sys.argv[1:]),
            "model": args.model,
            "backend": args.backend,
            "batch": args.batch,
            "threads": thread_counts,
            "plans": args.plans,
            "rounds": args.rounds,
            **(
                {"protocols": by_threads[str(thread_counts[0])]}
                if len(thread_counts) == 1
                else {"by_threads": by_threads}
            ),
            "wall_s": round(time.perf_counter() - start, 1),
            "load_average": {"before": load_before, "after": load_average()},
        }
    )


if __name__ == "__main__":
    run(main)
