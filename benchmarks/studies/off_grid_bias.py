"""How well does the grid predict the widths searches choose, and does the off-grid factor help?

Reads the tables of finished prune runs (each run's ``lut.json`` holds the widths densify timed
off the grids) and, leaving each such width out in turn, predicts it from the rest: by the plain
interpolation, and by the interpolation scaled by ``LatencyTable.off_grid_factor`` of the
signature's other measured widths (what the next search of a run would have read). No timing:
it grades predictions against measurements the runs already made. Prints JSON: per predictor the
mean log ratio measured / predicted (the bias a plan-level sum inherits), the median absolute
error and the share within 10 %.

    .venv/bin/python benchmarks/studies/off_grid_bias.py runs/bench-budget16 runs/demo-*
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import emit, run  # noqa: E402

from hwprune.errors import TableError  # noqa: E402
from hwprune.latency import LatencyTable  # noqa: E402


def held_out(table: LatencyTable) -> list[tuple[float, float, float]]:
    """(measured, interpolated, corrected) for each off-grid width, predicted without it."""
    out = []
    for sig, values in table.entries.items():
        for point in [p for p in values if not table.on_grid(sig, p)]:
            rest = replace(table, entries=table.entries | {sig: {p: m for p, m in values.items() if p != point}})
            plain = rest.lookup_ms(sig, *point, corrected=False)
            out.append((values[point].median_ms, plain, plain * rest.off_grid_factor(sig)))
    return out


def grade(pairs: list[tuple[float, float]]) -> dict[str, float]:
    logs = [math.log(m / p) for m, p in pairs]
    errors = [abs(p - m) / m * 100 for m, p in pairs]
    return {
        "mean_log_ratio": round(statistics.fmean(logs), 4),
        "median_abs_pct": round(statistics.median(errors), 2),
        "within_10pct": round(sum(e <= 10 for e in errors) / len(errors), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (searched for lut.json) or table files")
    args = ap.parse_args()
    files = sorted({f for r in args.runs for f in ([r] if r.is_file() else r.rglob("lut.json"))})
    rows, used = [], []
    for f in files:
        try:
            found = held_out(LatencyTable.load(f))
        except TableError as exc:
            print(f"skipped {f}: {exc}", file=sys.stderr)
            continue
        if found:
            rows += found
            used.append(str(f))
    if not rows:
        raise SystemExit("no densified widths in these tables: point it at prune run directories")
    emit(
        {
            "tables": len(used),
            "widths": len(rows),
            "interpolated": grade([(m, p) for m, p, _ in rows]),
            "with_off_grid_factor": grade([(m, c) for m, _, c in rows]),
            "sources": used,
        }
    )


if __name__ == "__main__":
    run(main)
