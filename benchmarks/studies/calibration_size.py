"""How many whole-model calibration plans does a table need? Measured offline, on saved evidence.

A table's calibration (``hwprune profile --calib-plans``, default 13) is about half of profiling
time: every plan is timed twice, each time right after the unpruned model. This refits the
calibration on subsets of the plans a saved table measured (every subset of each size that keeps the
unpruned and the narrow plan, as ``calibration_plans`` always does), and grades each fit on the
held-out plans ``benchmarks/lut_accuracy.py`` measured against that table in the same session. No
device time: the figures are what a table calibrated on fewer plans would have predicted for
those same measurements. Prints JSON: per size, the spread over subsets of the held-out median
absolute % error and share within +-10 %.

The whole tables ``lut_accuracy.py`` writes (``lut_*.json``) are not kept in benchmarks/results/;
the ones behind docs/benchmarks.md are in git history (commit c7dcbde):

    git show c7dcbde:benchmarks/results/lut_resnet20_onnxruntime_b32_32x32_1thread_q16_29301c6.json > /tmp/lut.json
    .venv/bin/python benchmarks/studies/calibration_size.py /tmp/lut.json \\
        benchmarks/results/accuracy_resnet20_onnxruntime_b32_32x32_1thread_q16_29301c6.json --sizes 5,7,9,13
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _common

from _common import _r, emit, run  # noqa: E402

from hwprune.errors import ConfigError  # noqa: E402
from hwprune.latency import model_for  # noqa: E402
from hwprune.latency.calibrate import MIN_PLANS  # noqa: E402
from hwprune.latency.fit import (  # noqa: E402
    TableSum,
    apply_fit,
    fit,  # noqa: E402
)
from hwprune.latency.table import LatencyTable  # noqa: E402
from hwprune.pruning import PruningPlan  # noqa: E402


def grade(errors: np.ndarray) -> dict[str, float]:
    return {"median_abs_pct": float(np.median(errors)), "within_10pct": float(np.mean(errors <= 10))}


def spread(values: list[float]) -> dict[str, Any]:
    """Median and the 10th/90th percentiles over subsets: what a size gives typically and at its unluckiest."""
    return {
        "median": _r(float(np.median(values))),
        "p10": _r(float(np.percentile(values, 10))),
        "p90": _r(float(np.percentile(values, 90))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lut", help="table JSON whose calibration plans are refitted")
    p.add_argument("accuracy", help="lut_accuracy.py result JSON for that table (its held-out rows grade each fit)")
    p.add_argument("--sizes", default="5,7,9,13", help="subset sizes, each >= 3 (unpruned and narrow plan included)")
    args = p.parse_args()
    table = LatencyTable.load(args.lut, allow_foreign=True)
    rows = (table.calibration or {}).get("plans", [])
    held = json.loads(Path(args.accuracy).read_text())["rows"]
    sizes = [int(s) for s in args.sizes.split(",")]
    if not rows or any(not MIN_PLANS <= k <= len(rows) for k in sizes):
        raise ConfigError(f"--sizes must lie in [{MIN_PLANS}, {len(rows)}] (the table's calibration plans)")
    _, graph = model_for(table)
    full = PruningPlan.full(str(table.settings["model"]), graph)
    features = TableSum(table, graph).features  # the predictor reads the table with its off-grid correction
    held_x = [features(full.with_keep(r["keep"])) for r in held]
    held_y = np.array([r["measured_ms"] for r in held])
    form = str(table.settings.get("calib_form", "auto"))
    middle = list(range(1, len(rows) - 1))  # rows[0] is the unpruned model, rows[-1] the narrow plan
    out: dict[str, Any] = {}
    for k in sizes:
        medians, within, chosen = [], [], {}
        for pick in itertools.combinations(middle, k - 2):
            f = fit(table, graph, [rows[0], *(rows[i] for i in pick), rows[-1]], form)
            pred = np.array([apply_fit(f["coef"], f["offset_ms"], x) for x in held_x])
            g = grade(np.abs(pred - held_y) / held_y * 100)
            medians.append(g["median_abs_pct"])
            within.append(g["within_10pct"])
            chosen[f["form"]] = chosen.get(f["form"], 0) + 1
        out[str(k)] = {
            "subsets": len(medians),
            "median_abs_pct": spread(medians),
            "within_10pct": spread(within),
            "forms_chosen": chosen,
        }
    emit(
        {
            "benchmark": "calibration_size",
            "command": "python " + " ".join(sys.argv),
            "table": args.lut,
            "model": table.settings["model"],
            "backend": table.backend,
            "calibration_plans": len(rows),
            "heldout_plans": len(held),
            "sizes": out,
        }
    )


if __name__ == "__main__":
    run(main)
