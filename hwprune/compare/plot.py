"""``pareto.png``: test accuracy against measured latency, readable without the table.

One series per agent and predictor (solid: searched on the latency table; dashed, hollow: the
MACs-targeted twin), the control and the checkpoint as trained marked at the unpruned latency, and
each budget a vertical line at the milliseconds its cells were judged against.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server, and none needed

import matplotlib.pyplot as plt  # noqa: E402


def budget_lines(rows: list[dict[str, Any]], references: dict[str, Any]) -> dict[str, float]:
    """Each budget in ms: the median of what its cells were judged against (each cell measures the
    unpruned model beside its own), else the fraction of the control's latency."""
    lines: dict[str, float] = {}
    for budget in dict.fromkeys(r["budget"] for r in rows if r["budget"]):
        judged = [r["budget_ms"] for r in rows if r["budget"] == budget and r["budget_ms"] is not None]
        if judged:
            lines[budget] = statistics.median(judged)
        elif budget.endswith("x") and references.get("control_measured_ms"):
            lines[budget] = float(budget[:-1]) * references["control_measured_ms"]
    return lines


def plot_pareto(rows: list[dict[str, Any]], references: dict[str, Any], out: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    done = [r for r in rows if r["status"] == "done" and r["predictor"] != "none"]
    series = list(dict.fromkeys((r["agent"], r["predictor"]) for r in done))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    agents = list(dict.fromkeys(a for a, _ in series))
    for agent, predictor in series:
        points = sorted(
            (r["measured_ms"], r["test_accuracy"]) for r in done if (r["agent"], r["predictor"]) == (agent, predictor)
        )
        color = colors[agents.index(agent) % len(colors)]
        twin = predictor == "macs"
        ax.plot(
            [p[0] for p in points],
            [100 * p[1] for p in points],
            linestyle="--" if twin else "-",
            marker="o",
            markerfacecolor="white" if twin else color,
            color=color,
            label=f"{agent} (MACs-targeted twin)" if twin else f"{agent} (latency table)",
        )
    control = next((r for r in rows if r["status"] == "done" and r["predictor"] == "none"), None)
    if control is not None:
        ax.plot(
            control["measured_ms"],
            100 * control["test_accuracy"],
            "k*",
            markersize=14,
            label="unpruned + same fine-tune",
        )
        if references.get("checkpoint_test_accuracy") is not None:
            ax.plot(
                control["unpruned_measured_ms"],
                100 * references["checkpoint_test_accuracy"],
                marker="*",
                markersize=14,
                markerfacecolor="white",
                color="black",
                linestyle="none",
                label="unpruned checkpoint as trained",
            )
    for budget, ms in budget_lines(rows, references).items():
        ax.axvline(ms, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            f"{budget} budget",
            (ms, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="grey",
        )
    ax.set_xlabel("measured latency, ms per batch (median on the device)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out / "pareto.png"
    tmp = out / ".pareto.png.tmp"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
