"""Which runs a compare makes, and in what order: a pure function of the requested matrix.

A cell is one ``hwprune prune`` job: an agent at a budget under a predictor ("table": the
latency table, the hardware-aware search; "macs": its FLOPs-targeted twin), or the control (the
unpruned model given the same long fine-tune). LeGR learns its ranking once per predictor, at
``learn_at``, and its other budgets threshold that ranking, so the budget it learns at is run
first; the other budgets follow in the order given. NetAdapt walks one path through ever smaller
plans, so its cell at each later budget continues the path of its cell at the tightest budget run
before (``--continue-from``): it stops earlier on that path or goes on from its end, instead of
walking the shared part again.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwprune.agents import budget_fraction, parse_budget
from hwprune.errors import ConfigError
from hwprune.job.earlier import CONTINUES_PATH

CONTROL = "unpruned-finetuned"
LEARNS_ONCE = ("legr",)
"""Agents whose search leaves a ranking every other budget thresholds (``ranking.json``)."""


@dataclass(frozen=True)
class Cell:
    """One run of the matrix; ``agent`` None is the control (no search, no budget)."""

    agent: str | None
    predictor: str  # "table", "macs", or "none" for the control
    budget: str | None
    ranking_from: str | None = None  # the name of the cell whose ranking.json this one thresholds
    path_from: str | None = None  # the name of the cell whose search path this one continues

    @property
    def name(self) -> str:
        if self.agent is None:
            return CONTROL
        return f"{self.agent}-{self.budget}" + ("-macs" if self.predictor == "macs" else "")

    @property
    def label(self) -> str:
        """How a person reads it in progress lines and the report."""
        if self.agent is None:
            return "unpruned model + the same fine-tune"
        twin = ", MACs-targeted twin" if self.predictor == "macs" else ""
        return f"{self.agent} at {self.budget}{twin}"


def check_budgets(budgets: list[str]) -> None:
    """Every budget well formed (``0.5x`` or ``4.2ms``) and given once."""
    for b in budgets:
        budget_fraction(b)  # raises BudgetError naming a malformed one
    repeated = sorted({b for b in budgets if budgets.count(b) > 1})
    if repeated:
        raise ConfigError(f"--budgets lists {', '.join(repeated)} more than once; give each budget once")
    if not budgets:
        raise ConfigError("--budgets is empty: give at least one budget, e.g. 0.7x,0.5x,0.3x")


def default_learn_at(budgets: list[str]) -> str:
    """The middle budget as given (0.5x of 0.7x,0.5x,0.3x): a ranking learned there is thresholded
    to budgets on both sides of it."""
    return budgets[len(budgets) // 2]


def plan_cells(
    budgets: list[str], agents: list[str], twins: list[str], learn_at: str | None = None, control: bool = True
) -> list[Cell]:
    """The matrix in the order it runs: the control, then every budget (``learn_at`` first when LeGR
    runs), each with its agents on the table and then their twins."""
    check_budgets(budgets)
    learn_at = learn_at or default_learn_at(budgets)
    if learn_at not in budgets and set(LEARNS_ONCE) & {*agents, *twins}:
        raise ConfigError(f"--legr-learn-at {learn_at} is not one of --budgets {','.join(budgets)}")
    learns = bool(set(LEARNS_ONCE) & {*agents, *twins})
    order = [learn_at] + [b for b in budgets if b != learn_at] if learns else list(budgets)
    cells = [Cell(None, "none", None)] if control else []
    for budget in order:
        for predictor, names in (("table", agents), ("macs", twins)):
            for agent in names:
                ranking_from = None
                if agent in LEARNS_ONCE and budget != learn_at:
                    ranking_from = Cell(agent, predictor, learn_at).name
                path_from = _longest_path(cells, agent, predictor, budget) if agent in CONTINUES_PATH else None
                cells.append(Cell(agent, predictor, budget, ranking_from, path_from))
    return cells


def _longest_path(cells: list[Cell], agent: str, predictor: str, budget: str) -> str | None:
    """The earlier cell of ``agent`` under ``predictor`` at the tightest budget of ``budget``'s kind (a
    fraction or ms): its path holds the shared part of every looser budget's."""
    kind = budget_fraction(budget) is None
    same = [c for c in cells if c.agent == agent and c.predictor == predictor and c.budget is not None]
    same = [c for c in same if (budget_fraction(c.budget) is None) == kind]
    return min(same, key=lambda c: parse_budget(c.budget or "", 1.0)).name if same else None
