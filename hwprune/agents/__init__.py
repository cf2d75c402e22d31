"""Search agents: given a latency predictor and an evaluator, choose how many channels each group keeps."""

from hwprune.agents.base import (
    DEFAULT_MIN_KEEP_RATIO,
    LatencyPredictor,
    PlanEvaluator,
    SearchAgent,
    SearchContext,
    SearchResult,
    available_agents,
    get_agent,
    min_keep_count,
    register_agent,
)
from hwprune.agents.budget import Budget, budget_fraction, check_budget, parse_budget
from hwprune.agents.state import SearchState, load_state

# Importing the agent modules registers them.
from hwprune.agents import amc, legr, netadapt, uniform  # noqa: E402,F401  isort: skip

__all__ = [
    "DEFAULT_MIN_KEEP_RATIO",
    "Budget",
    "LatencyPredictor",
    "PlanEvaluator",
    "SearchAgent",
    "SearchContext",
    "SearchResult",
    "budget_fraction",
    "SearchState",
    "available_agents",
    "check_budget",
    "get_agent",
    "load_state",
    "min_keep_count",
    "parse_budget",
    "register_agent",
]
