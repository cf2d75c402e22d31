"""How long must a block warm up? A shorter timed warm-up against a longer one, paired, on a table's own blocks.

For N of a table's points (a seeded sample), times each block three times with the table's
protocol but for the warm-up: once with ``--warmup-s`` seconds (A), once with ``--short-s``
(B; 0 = the warm-up runs alone), in random order, then A again (A2). Prints JSON: the median
ratio B/A (a bias the shorter warm-up would bring), its spread beside the spread of A2/A (the
same protocol twice: the noise), and the seconds each protocol spends per block. A table times
hundreds of blocks, so a warm-up that buys nothing costs minutes.

    .venv/bin/python benchmarks/studies/block_warmup.py runs/demo/lut.json --blocks 200 --short-s 0.02
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import emit, load_average, run  # noqa: E402

from hwprune.latency import load_table  # noqa: E402
from hwprune.latency.load import profiler_for  # noqa: E402
from hwprune.profilers import BlockSpec, Profiler  # noqa: E402


def _timed(profiler: Profiler, block: BlockSpec) -> tuple[float, float]:
    """(median ms, wall seconds the whole measurement took, warm-up included)."""
    start = time.perf_counter()
    return profiler.measure_block(block).median_ms, time.perf_counter() - start


def _ratio_summary(ratios: list[float]) -> dict[str, object]:
    """Median, deciles and median distance from 1 (in %) of per-block timing ratios."""
    return {
        "median": round(statistics.median(ratios), 4),
        "deciles": [round(v, 4) for v in statistics.quantiles(ratios, n=10)],
        "median_abs_pct": round(statistics.median(abs(r - 1) for r in ratios) * 100, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lut", help="a latency table made on this machine")
    p.add_argument("--blocks", type=int, default=200, help="table points to time (a seeded sample)")
    p.add_argument("--warmup-s", type=float, default=0.1, help="the timed warm-up under test (A)")
    p.add_argument("--short-s", type=float, default=0.0, help="the shorter timed warm-up (B); 0 = runs alone")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.blocks < 10:
        p.error("--blocks must be >= 10 for deciles to mean anything")
    if not 0 <= args.short_s < args.warmup_s:
        p.error("--short-s must be >= 0 and under --warmup-s")

    load_before = load_average()
    table, _ = load_table(args.lut)
    timed_a = profiler_for(table, warmup_s=args.warmup_s)
    short = profiler_for(table, warmup_s=args.short_s)
    rng = random.Random(args.seed)
    points = sorted((sig, ci, co) for sig, entries in table.entries.items() for ci, co in entries)
    points = rng.sample(points, min(args.blocks, len(points)))
    ratios, noise, seconds_a, seconds_b = [], [], [], []
    for sig, ci, co in points:
        block = table.signatures[sig].block(ci, co)
        first_b = rng.random() < 0.5  # neither protocol always runs on a block the other just warmed
        b = _timed(short, block) if first_b else None
        a = _timed(timed_a, block)
        b = b or _timed(short, block)
        a2 = _timed(timed_a, block)
        ratios.append(b[0] / a[0])
        noise.append(a2[0] / a[0])
        seconds_a += [a[1], a2[1]]
        seconds_b.append(b[1])
    emit(
        {
            "command": "python benchmarks/studies/block_warmup.py " + " ".join(sys.argv[1:]),
            "backend": table.backend,
            "device_key": table.device_key(),
            "model": table.settings["model"],
            "batch": table.settings["batch"],
            "blocks": len(points),
            "warmup_runs": timed_a.warmup,
            "warmup_s": args.warmup_s,
            "short_s": args.short_s,
            "short_over_long": _ratio_summary(ratios),
            "long_again_over_long": _ratio_summary(noise),
            "seconds_per_block": {
                "long": round(statistics.fmean(seconds_a), 4),
                "short": round(statistics.fmean(seconds_b), 4),
            },
            "load_average": {"before": load_before, "after": load_average()},
        }
    )


if __name__ == "__main__":
    run(main)
