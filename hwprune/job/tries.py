"""The tries a budgeted search records in ``tries.json``, and reading them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwprune.agents import Budget
from hwprune.io import read_json, write_json
from hwprune.job.measure import Judged
from hwprune.profilers import Measurement

TRIES_KIND = "search-tries"


def load_tries(path: Path) -> list[dict[str, Any]]:
    """The tries a run recorded in ``tries.json`` (none if it has not finished one)."""
    return read_json(path, TRIES_KIND, 1)["tries"] if path.is_file() else []


def save_tries(path: Path, tries: list[dict[str, Any]]) -> None:
    write_json(path, {"kind": TRIES_KIND, "schema_version": 1, "tries": tries})


def record_of(judged: Judged) -> dict[str, Any]:
    """A judgement as tries.json keeps it (read back by :func:`judged_from`)."""
    return {
        "measured": judged.measured.to_dict(),
        "unpruned_measured": judged.unpruned.to_dict() if judged.unpruned else None,
        "budget_ms": judged.budget_ms,
    }


def judged_from(done: dict[str, Any], budget: Budget) -> Judged:
    """A recorded try as judged then (tries written before budgets were paired have no reference)."""
    unpruned = Measurement.from_dict(done["unpruned_measured"]) if done.get("unpruned_measured") else None
    return Judged(Measurement.from_dict(done["measured"]), unpruned, budget)


def summed_costs(costs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Search costs added up key by key (a cost missing a key, from an older run, counts 0)."""
    return {k: sum(c.get(k, 0) for c in costs) for k in keys}


def total_cost(tries: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["wall_s", "evaluations", "finetune_steps", "predictor_calls", "densify_s"]
    return summed_costs([t["cost"] for t in tries], keys)
