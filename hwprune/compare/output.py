"""The four files of a compare, written from what its directory holds (so they can be rewritten any time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.compare.plot import plot_pareto
from hwprune.compare.report import render, write_markdown
from hwprune.compare.results import build_rows, read_report, write_results
from hwprune.compare.runner import outcomes_of
from hwprune.latency import LatencyTable


def write_outputs(out: str | Path) -> Path:
    """``results.csv``, ``results.json``, ``pareto.png`` and ``report.md``; the path of the last."""
    cfg, outcomes = outcomes_of(out)
    rows, references = build_rows(outcomes)
    write_results(cfg, rows, references)
    fingerprint, model = _device(cfg.table_path(), [o.run for o in outcomes if o.status == "done"])
    budgets = ", ".join(cfg.budgets)
    plot_pareto(rows, references, Path(cfg.out), f"{model}: test accuracy vs measured latency ({budgets})")
    return write_markdown(cfg, render(cfg, rows, references, fingerprint, model))


def _device(table: Path, finished: list[Path]) -> tuple[dict[str, Any], str]:
    """The fingerprint the cells were measured with (a finished cell's report), else the table's; the model."""
    if finished:
        report = read_report(finished[0])
        return report.get("fingerprint", {}), report["model"]["name"]
    loaded = LatencyTable.load(table, allow_foreign=True)
    return loaded.fingerprint, str(loaded.settings.get("model", "model"))
