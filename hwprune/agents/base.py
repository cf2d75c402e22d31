"""What every search agent shares: the context it searches in, its result, and the registry.

Agents see latency only through an object with ``predict_ms(plan)`` and accuracy only through an
object with ``score(plan)`` (normally :class:`hwprune.evaluator.Evaluator`), so every agent is
compared on exactly the same footing and none of them can peek at the latency table or the test
split.
"""

from __future__ import annotations

import difflib
import inspect
import math
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import nn

from hwprune.agents.budget import check_feasible
from hwprune.errors import ConfigError
from hwprune.pruning import ModelGraph, PruningPlan

DEFAULT_MIN_KEEP_RATIO = 0.1


class LatencyPredictor(Protocol):
    def predict_ms(self, plan: PruningPlan) -> float: ...


class PlanEvaluator(Protocol):
    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        """(validation accuracy in [0, 1], validation loss) of the model pruned by ``plan``.

        With a ``lineage``, of the model cut to ``plan`` from the one those plans produced step by
        step (see :mod:`hwprune.evaluator`); an evaluator that scores channel counts alone may ignore it.
        """
        ...


def min_keep_count(channels: int, ratio: float, round_to: int = 1) -> int:
    """Fewest channels a group may keep: ``ratio`` of it, at least 1, rounded *up* to ``round_to``."""
    k = max(1, math.ceil(ratio * channels - 1e-9))
    if round_to > 1:
        k = math.ceil(k / round_to) * round_to
    return min(channels, k)


@dataclass
class SearchContext:
    """Everything an agent may use. ``min_keep_ratio`` bounds every group from below.

    The default 0.1 is low enough not to constrain searches at usual budgets (0.3x-0.7x) and high
    enough that no layer collapses to a 1-channel bottleneck, which no fine-tune recovers from.
    ``round_to`` makes every kept count a multiple of it (hardware-friendly widths; a group's
    full width is always allowed). Predictions are memoised per plan for the context's lifetime:
    a different predictor (another table, a recalibration) needs a new context.
    """

    model_name: str
    model: nn.Module
    graph: ModelGraph
    predictor: LatencyPredictor
    evaluator: PlanEvaluator
    seed: int = 0
    min_keep_ratio: float = DEFAULT_MIN_KEEP_RATIO
    round_to: int = 1
    predictor_calls: int = field(default=0, init=False)
    _predictions: dict[tuple[int, ...], float] = field(default_factory=dict, init=False, repr=False)
    _price: Callable[[PruningPlan], float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_keep_ratio <= 1:
            raise ConfigError(f"min keep ratio must be in (0, 1], got {self.min_keep_ratio}")
        if self.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.round_to}")
        sweep = getattr(self.predictor, "sweep", None)  # see predict_ms
        self._price = sweep() if sweep is not None else self.predictor.predict_ms

    # ---- plans -------------------------------------------------------------------------------
    def full_plan(self) -> PruningPlan:
        return PruningPlan.full(self.model_name, self.graph)

    def step(self, group: str) -> int:
        """Keep counts of ``group`` are multiples of this: ``round_to``, and its grouped convolutions' groups."""
        return math.lcm(self.round_to, self.graph.group_by_name[group].step)

    def min_keep(self, group: str) -> int:
        return min_keep_count(self.graph.group_by_name[group].channels, self.min_keep_ratio, self.step(group))

    def min_plan(self) -> PruningPlan:
        """Every group at its minimum keep: the fastest model any agent may return."""
        return self.full_plan().with_keep({g.name: self.min_keep(g.name) for g in self.graph.groups})

    def floor_plan(self) -> PruningPlan:
        """The fastest minimal plan: the floor of what any search can reach.

        The minimal plans are every group at its minimum keep, and that minimum rounded up to a
        multiple of 2, 4, 8 or 16: on a SIMD backend an aligned width can run faster than a
        narrower odd one, so the narrowest plan need not be the fastest. Ties go to the narrowest.
        """
        plans = [self.min_plan()] + [
            self.full_plan().with_keep(
                {g.name: self.clamp_keep(g.name, -(-self.min_keep(g.name) // m) * m) for g in self.graph.groups}
            )
            for m in (2, 4, 8, 16)
        ]
        return min(plans, key=self.predict_ms)

    def floor_ms(self) -> float:
        """Predicted latency of :meth:`floor_plan`."""
        return self.predict_ms(self.floor_plan())

    def allowed_keeps(self, group: str) -> list[int]:
        """Keep counts a group may take, ascending: multiples of ``round_to`` from the minimum, and full."""
        channels = self.graph.group_by_name[group].channels
        return sorted(set(range(self.min_keep(group), channels, self.step(group))) | {channels})

    def clamp_keep(self, group: str, k: int) -> int:
        """Nearest allowed keep count to ``k`` (ties go to the larger count)."""
        allowed = self.allowed_keeps(group)
        return min(allowed, key=lambda a: (abs(a - k), -a))

    # ---- the two oracles -----------------------------------------------------------------------
    def predict_ms(self, plan: PruningPlan) -> float:
        """Predicted latency, memoised per channel counts so bisections never pay twice.

        Searches price runs of plans that each move a group or two from the last (a threshold sweep,
        one group's candidate widths, an episode's limit): a predictor with a ``sweep`` (the latency
        table's) then reprices only the layers those groups touch, to the same figure.
        """
        key = plan.key()
        if key not in self._predictions:
            self.predictor_calls += 1
            self._predictions[key] = float(self._price(plan))
        return self._predictions[key]

    def evaluate(self, plan: PruningPlan) -> float:
        """Validation accuracy of the plan's model (after the evaluator's short fine-tune)."""
        return self.score(plan)[0]

    def score(self, plan: PruningPlan, lineage: tuple[PruningPlan, ...] = ()) -> tuple[float, float]:
        """(validation accuracy, validation cross-entropy) of the same model; the loss ranks more finely."""
        acc, loss = self.evaluator.score(plan, lineage) if lineage else self.evaluator.score(plan)
        return float(acc), float(loss)

    def require_feasible(self, budget_ms: float) -> None:
        """Refuse a budget under the predictor's floor (``floor_ms``): no plan any agent may return meets it."""
        check_feasible(budget_ms, self.floor_ms(), f"minimum keep ratio {self.min_keep_ratio}")


@dataclass
class SearchResult:
    """The chosen plan, one history row per iteration (JSON-ready), and what the search cost.

    ``lineage``: the plans a step-by-step search chose, ending at ``plan``, when its candidates were
    cut from the model those steps produced; the job then fine-tunes that model (see
    :meth:`hwprune.evaluator.Evaluator.carried`). Empty: the plan is cut from the original weights.
    """

    plan: PruningPlan
    history: list[dict[str, Any]]
    cost: dict[str, Any]
    predicted_ms: float | None = None
    lineage: tuple[PruningPlan, ...] = ()


class CostMeter:
    """Counts one search's wall time, evaluations, fine-tune steps and predictor calls.

    Counters are differences over the search (the evaluator may be shared by several searches)
    plus ``prior``: what earlier, interrupted runs of the same search had spent.
    """

    COUNTERS = ("evaluations", "cache_hits", "finetune_steps", "eval_seconds")

    def __init__(self, ctx: SearchContext, prior: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.prior = dict(prior or {})
        self._t0 = time.perf_counter()
        self._ev0 = self._evaluator_cost()
        self._pc0 = ctx.predictor_calls

    def _evaluator_cost(self) -> dict[str, Any]:
        cost = getattr(self.ctx.evaluator, "cost", None)
        return dict(cost()) if callable(cost) else {}

    def total(self) -> dict[str, Any]:
        ev = self._evaluator_cost()
        out: dict[str, Any] = {
            "wall_s": self.prior.get("wall_s", 0.0) + time.perf_counter() - self._t0,
            "predictor_calls": self.prior.get("predictor_calls", 0) + self.ctx.predictor_calls - self._pc0,
        }
        for name in self.COUNTERS:
            out[name] = self.prior.get(name, 0) + ev.get(name, 0) - self._ev0.get(name, 0)
        out["resumes"] = self.prior.get("resumes", 0)
        return out


class SearchAgent(ABC):
    """A pruning strategy. Subclasses take their options as keyword arguments with defaults.

    ``search`` must be deterministic for a given context (seed, predictor, evaluator) and budget,
    and, given ``state_path``, checkpoint after every completed iteration so that a second call
    with the same path continues where the first stopped and ends at the same plan.
    """

    name: ClassVar[str]
    #: options that do not change the search trajectory, so a resume may change them
    resume_neutral: ClassVar[frozenset[str]] = frozenset({"progress", "max_iterations"})

    def options(self) -> dict[str, Any]:
        """The agent's option values, JSON-ready (recorded in history and state files).

        Every keyword of the constructor, read back from the attribute of the same name: an agent
        stores each option under its own name, so a new option is recorded without a second list.
        """
        names = [p.name for p in inspect.signature(type(self).__init__).parameters.values() if p.name != "self"]
        return {name: getattr(self, name) for name in names}

    def trajectory_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options().items() if k not in self.resume_neutral}

    @abstractmethod
    def search(
        self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None, start: SearchResult | None = None
    ) -> SearchResult:
        """Find a plan whose predicted latency is at most ``budget_ms``.

        ``start``: an earlier search of the same job, on a table since corrected (the job times a
        plan's unmeasured widths and searches again) or against another target (a new try after
        a measured miss or slack). An agent that can continue from it instead of starting over
        may; one whose search is cheap ignores it.
        """


# ---- registry -------------------------------------------------------------------------------------
_AGENTS: dict[str, type[SearchAgent]] = {}
AgentClass = type[SearchAgent]


def register_agent(cls: AgentClass) -> AgentClass:
    """Class decorator: make ``cls`` available by ``cls.name``; a duplicate name is a bug and raises."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    if name in _AGENTS:
        raise ValueError(f"search agent '{name}' is already registered (by {_AGENTS[name].__name__})")
    _AGENTS[name] = cls
    return cls


def available_agents() -> list[str]:
    return sorted(_AGENTS)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.4)
    return f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(choices) or '(none)'}"


def get_agent(name: str, **options: Any) -> SearchAgent:
    """Build a registered agent; unknown names and unknown options get a suggestion.

    Each option is checked against the type its constructor declares (``decay: float``) before the
    constructor sees it, so ``decay=abc`` is one line naming the option and the type it takes, not
    a TypeError from inside the agent; a float must also be finite.
    """
    if name not in _AGENTS:
        raise ConfigError(f"unknown search agent '{name}': {_suggest(name, available_agents())}")
    cls = _AGENTS[name]
    params = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation that cannot be resolved here: the agent checks its values
        hints = {}
    for key, value in options.items():
        if key not in params:
            raise ConfigError(f"agent '{name}' has no option '{key}': {_suggest(key, params)}")
        if key in hints:
            options[key] = _typed_option(name, key, value, hints[key])
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:  # an agent's own check that did not raise ConfigError
        raise ConfigError(f"agent '{name}' refused its options {options}: {exc}") from None


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a text", type(None): "null"}


def _typed_option(agent: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the declared type (an int where a float is declared becomes a float), or ConfigError."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if not all(t in _TYPE_WORDS for t in allowed):
        return value  # a richer annotation: the agent checks the value itself
    for t in allowed:
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"agent '{agent}' option {key} must be a finite number, got {value}")
            return float(value)
        if t is not float and type(value) is t:
            return value
    expected = " or ".join(_TYPE_WORDS[t] for t in allowed)
    raise ConfigError(f"agent '{agent}' option {key} must be {expected}, got {value!r}")


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """Validate a string option in the same one-line style as unknown agent names."""
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}; got '{value}'")
    return value
