"""One row per cell, read from the cells' ``report.json``: ``results.csv`` and ``results.json``.

"Accuracy change" is against the control (the unpruned model given the same long fine-tune), so
extra training is not mistaken for what pruning kept; the change against the checkpoint as
trained is beside it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hwprune import __version__
from hwprune.compare.config import CompareConfig
from hwprune.compare.runner import CellOutcome
from hwprune.io import atomic_write_text, read_json, write_json
from hwprune.job.report import REPORT_KIND, REPORT_SCHEMA

RESULTS_KIND = "compare-results"
RESULTS_SCHEMA = 1
COLUMNS = (
    "cell",
    "agent",
    "predictor",  # table (hardware-aware), macs (FLOPs-targeted twin), none (the control)
    "budget",
    "status",  # done, failed, pending
    "reason",
    "budget_ms",
    "predicted_ms",
    "measured_ms",
    "measured_iqr_ms",
    "unpruned_measured_ms",
    "speedup",
    "budget_met",
    "test_accuracy",
    "accuracy_change",
    "accuracy_change_vs_checkpoint",
    "params",
    "macs",
    "macs_fraction",
    "search_wall_s",
    "evaluations",
    "search_finetune_steps",
    "finetune_steps",
    "tries",
    "ranking_from",
    "path_from",
    "run_dir",
)


def read_report(run: Path) -> dict[str, Any]:
    return read_json(run / "report.json", REPORT_KIND, REPORT_SCHEMA)


def row_of(outcome: CellOutcome) -> dict[str, Any]:
    """A cell as a row; a failed or pending one keeps its name, status and reason, the numbers empty."""
    cell = outcome.cell
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row |= {
        "cell": cell.name,
        "agent": cell.agent or "unpruned",
        "predictor": cell.predictor,
        "budget": cell.budget,
        "status": outcome.status,
        "reason": outcome.reason,
        "ranking_from": cell.ranking_from,
        "run_dir": str(outcome.run),
    }
    if outcome.status != "done":
        return row
    report = read_report(outcome.run)
    pruned, unpruned = report["pruned"], report["unpruned"]
    measured = pruned["measured"]["summary"]
    search = report.get("search") or {}
    cost = search.get("cost", {})
    row |= {
        "path_from": Path(search["continued_from"]).name if search.get("continued_from") else None,
        "budget_ms": (report.get("budget") or {}).get("ms"),
        "predicted_ms": pruned.get("predicted_ms"),
        "measured_ms": measured["median_ms"],
        "measured_iqr_ms": measured["iqr_ms"],
        "unpruned_measured_ms": unpruned["measured"]["summary"]["median_ms"],
        "speedup": unpruned["measured"]["summary"]["median_ms"] / measured["median_ms"],
        "budget_met": report.get("budget_met"),
        "test_accuracy": pruned["test_accuracy"],
        "checkpoint_test_accuracy": unpruned["test_accuracy"],
        "params": pruned["params"],
        "macs": pruned["macs"],
        "macs_fraction": pruned["macs"] / unpruned["macs"] if unpruned["macs"] else None,
        "search_wall_s": cost.get("wall_s", 0.0),
        "evaluations": cost.get("evaluations", 0),
        "search_finetune_steps": cost.get("finetune_steps", 0),
        "finetune_steps": report["finetune"]["steps"],
        "tries": len(search.get("tries", [])),
    }
    return row


def build_rows(outcomes: list[CellOutcome]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every cell's row with its accuracy changes filled in, and the references they are against."""
    rows = [row_of(o) for o in outcomes]
    done = [r for r in rows if r["status"] == "done"]
    control = next((r for r in done if r["predictor"] == "none"), None)
    checkpoint_acc = done[0]["checkpoint_test_accuracy"] if done else None  # every cell tests the same checkpoint
    for r in done:
        del r["checkpoint_test_accuracy"]
        if control is not None:
            r["accuracy_change"] = r["test_accuracy"] - control["test_accuracy"]
        if checkpoint_acc is not None:
            r["accuracy_change_vs_checkpoint"] = r["test_accuracy"] - checkpoint_acc
    references = {
        "checkpoint_test_accuracy": checkpoint_acc,
        "control_test_accuracy": control["test_accuracy"] if control else None,
        "control_measured_ms": control["measured_ms"] if control else None,
    }
    return rows, references


def write_results(cfg: CompareConfig, rows: list[dict[str, Any]], references: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(cfg.out)
    write_json(
        out / "results.json",
        {
            "kind": RESULTS_KIND,
            "schema_version": RESULTS_SCHEMA,
            "hwprune_version": __version__,
            "command": cfg.command(),
            "config": cfg.to_dict(),
            "references": references,
            "columns": list(COLUMNS),
            "rows": rows,
        },
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv(r[k]) for k in COLUMNS} for r in rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    return out / "results.csv", out / "results.json"


def _csv(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
