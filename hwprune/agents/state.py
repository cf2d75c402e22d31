"""Search checkpoints: a versioned JSON file rewritten atomically after every completed iteration.

A state records *which* search it belongs to (agent, model and its groups, budget, seed, minimum
keep, rounding, trajectory options, and the predicted latency of the unpruned model, which
fingerprints the predictor) and *where* it stands (iteration, current plan, history, cost so far,
plus whatever the agent needs, e.g. a bisection interval). Resuming a state made by a different
search would silently mix two searches, so it is refused with one line naming what differs.
Work done inside an interrupted iteration is redone on resume and is not in the saved cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwprune.agents.base import SearchAgent, SearchContext, SearchResult
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import read_json, write_json
from hwprune.pruning import PruningPlan

STATE_KIND = "search-state"
STATE_SCHEMA = 1


def state_header(agent: SearchAgent, ctx: SearchContext, budget_ms: float, full_ms: float) -> dict[str, Any]:
    """Identity of one search: a state is resumed only by a search with the same header."""
    return {
        "agent": agent.name,
        "model": ctx.model_name,
        "groups": [[g.name, g.channels] for g in ctx.graph.groups],
        "budget_ms": float(budget_ms),
        "seed": int(ctx.seed),
        "min_keep_ratio": float(ctx.min_keep_ratio),
        "round_to": int(ctx.round_to),
        "options": agent.trajectory_options(),
        "full_predicted_ms": float(full_ms),
    }


def begin_search(
    agent: SearchAgent, ctx: SearchContext, budget_ms: float, state_path: Path | None
) -> tuple[dict[str, Any], SearchState | None, SearchResult | None]:
    """Where every agent's search starts: its header, the state an interrupted search left (None for a
    new one) and, when that search had finished, its result (nothing is left to do). A search that
    still has work is refused here when no plan can meet ``budget_ms``; a finished one never is."""
    header = state_header(agent, ctx, budget_ms, ctx.predict_ms(ctx.full_plan()))
    state = load_state(state_path, header) if state_path is not None else None
    if state is not None and state.done:
        return header, state, state.result(ctx.predict_ms(state.plan))
    ctx.require_feasible(budget_ms)
    return header, state, None


@dataclass
class SearchState:
    """Where a search stands after its last completed iteration."""

    header: dict[str, Any]
    iteration: int
    plan: PruningPlan
    history: list[dict[str, Any]]
    cost: dict[str, Any]
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_json(
            path,
            {
                "kind": STATE_KIND,
                "schema_version": STATE_SCHEMA,
                "header": self.header,
                "iteration": self.iteration,
                "done": self.done,
                "plan": self.plan.to_dict(),
                "history": self.history,
                "cost": self.cost,
                "extra": self.extra,
            },
        )

    def result(self, predicted_ms: float | None = None) -> SearchResult:
        lineage = tuple(PruningPlan.from_dict(p) for p in self.extra.get("lineage", ()))
        return SearchResult(self.plan, list(self.history), dict(self.cost), predicted_ms, lineage)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def load_state(path: Path, header: dict[str, Any]) -> SearchState | None:
    """The state at ``path`` if it exists and belongs to the search ``header`` describes.

    A missing file means a fresh search (``None``); a file from another search raises ConfigError.
    """
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path, STATE_KIND, STATE_SCHEMA)
    try:
        saved = dict(data["header"])
        differ = [k for k in header if not _same(saved.get(k), header[k])]
        if differ:
            what = "; ".join(f"{k}: {_short(saved.get(k))} there, {_short(header[k])} here" for k in differ[:3])
            raise ConfigError(
                f"search state {path} belongs to another search ({what}): resume with the same "
                "settings, or start with a fresh state path"
            )
        return _parse(data, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"search state {path} is malformed ({exc!r}): delete it to start over") from None


def _parse(data: dict[str, Any], path: Path) -> SearchState:
    return SearchState(
        header=dict(data["header"]),
        iteration=int(data["iteration"]),
        plan=PruningPlan.from_dict(data["plan"], source=str(path)),
        history=list(data["history"]),
        cost=dict(data["cost"]),
        done=bool(data["done"]),
        extra=dict(data.get("extra") or {}),
    )


def _short(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finished_result(path: Path) -> SearchResult | None:
    """The result a search left at ``path`` if it completed, whatever predictor it ran under.

    A resumed job re-reads the searches it already finished; the table may have gained measured
    points since (``latency/densify.py``), which changes the header a resume would check, but a
    finished search has nothing left to resume.
    """
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path, STATE_KIND, STATE_SCHEMA)
    if not data.get("done"):
        return None
    try:
        return _parse(data, path).result()
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"search state {path} is malformed ({exc!r}): delete it to start over") from None
