"""AMC's channel-pruning environment (He et al., ECCV 2018) as a Gymnasium env, under a latency target.

One episode walks the model's prunable channel groups in order; one step decides one group's keep
count. The budget is a hard constraint, as AMC makes FLOPs one: each action is limited so that,
with every later group at its floor keep, the episode can still meet the target, so every
completed episode's plan meets it. Latency is not monotone in width on a SIMD backend (an aligned
width can run faster than a narrower odd one), so the limit is found by pricing the group's allowed
keeps, widest first from the one asked for, not by bisection.

The env sees latency only through ``ctx.predict_ms`` and accuracy only through the evaluator
(``ctx.score``, or the ``score`` callable handed in), like every agent. It is registered as
``hwprune/ChannelPruning-v0``: after ``import hwprune``, ``gymnasium.make("hwprune/ChannelPruning-v0",
ctx=ctx, target_ms=...)`` builds it, for any RL library.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from hwprune.agents.base import SearchContext, check_choice
from hwprune.errors import ConfigError
from hwprune.pruning import Group, LayerShape, PruningPlan

REWARDS = ("accuracy", "error_log_latency")
KINDS = ("conv", "depthwise", "grouped", "linear")
FEATURES = (
    "index",
    "kind",
    "c_in",
    "c_out",
    "stride",
    "kernel",
    "feature_map",
    "latency_share",
    "reduced",
    "rest",
    "previous_action",
)
"""The observation, in order: AMC's layer embedding, with latency where AMC has FLOPs."""

Scorer = Callable[[PruningPlan], tuple[float, float]]


class ChannelPruningEnv(gym.Env[np.ndarray, np.ndarray]):
    """Decide each channel group's keep count in turn; the reward comes at the end of the episode.

    - Observation (:data:`FEATURES`, float32 in [0, 1]): the group's index, kind (conv,
      depthwise, grouped, linear, as 0, 1/3, 2/3, 1), c_in, c_out, stride, kernel and input
      feature-map side of its root layer, and the latency it removes alone at its floor keep, each
      min-max scaled over the model's groups; then the latency the groups already decided removed
      and the latency the groups after it can still remove (fractions of the unpruned model's
      predicted latency), and the previous group's kept fraction (1 before the first).
    - Action: a Box in [-1, 1], mapped linearly to a keep ratio in [min_keep_ratio, 1] and to the
      nearest allowed keep count (``round_to`` honoured), then limited by the budget.
    - Reward: 0 until the last group; then, from the evaluator's (accuracy, loss) of the plan,
      ``reward`` "accuracy" (AMC's accuracy reward) or "error_log_latency", -(1 - accuracy) x
      log(predicted latency in microseconds) (AMC's resource-aware form, latency for FLOPs; in
      microseconds so the logarithm stays positive). With ``baseline_alpha`` (AMC's official DDPG:
      0.5) a moving average of past rewards is subtracted before the reward is returned, as AMC
      subtracts one before learning; the raw reward is in ``info["pruning"]``. The average is the
      env's learning state and survives ``reset``; None switches it off.

    ``info["action_taken"]`` is the action that would give the keep count taken (after rounding and
    the budget's limit) directly. A learner should store the action it asked for, as AMC does: the
    limit is part of the env's dynamics, and a critic shown only limited actions never learns what
    asking for more does (SB3's DDPG, fed those, drove its actor to the upper bound and stayed there).

    The final step's ``info["pruning"]`` holds the episode: the actions, keep counts (in group
    order), how many steps the budget limited, predicted ms, accuracy, loss and rewards. ``score``
    replaces ``ctx.score`` (a search that already knows some plans' scores); it runs with the
    global random states saved and restored: the evaluator reseeds them for its seeded fine-tune,
    and a learner drawing from them must not see whether a score was computed or looked up.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        ctx: SearchContext,
        target_ms: float,
        reward: str = "accuracy",
        baseline_alpha: float | None = 0.5,
        score: Scorer | None = None,
    ) -> None:
        super().__init__()
        self.reward_form = check_choice("reward", reward, REWARDS)
        if baseline_alpha is not None and not 0 < baseline_alpha <= 1:
            raise ConfigError(f"baseline_alpha must be in (0, 1] or None, got {baseline_alpha}")
        ctx.require_feasible(target_ms)
        self.ctx, self.target_ms, self.baseline_alpha = ctx, float(target_ms), baseline_alpha
        self.score_fn: Scorer = score or ctx.score
        self.groups: list[Group] = list(ctx.graph.groups)
        self.full_plan = ctx.full_plan()
        self.full_ms = ctx.predict_ms(self.full_plan)
        self.floor: dict[str, int] = ctx.floor_plan().keep
        self.allowed: dict[str, list[int]] = {g.name: ctx.allowed_keeps(g.name) for g in self.groups}
        self.static = self._static_features()
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(FEATURES),), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.baseline: float | None = None
        self._keeps: list[int] = []
        self._actions: list[float] = []
        self._limited = 0

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._keeps, self._actions, self._limited = [], [], 0
        return self._observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t = len(self._keeps)
        if t >= len(self.groups):
            raise RuntimeError("the episode is over: call reset() first")
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not math.isfinite(a):
            raise ValueError(f"action must be finite, got {a}")
        a = min(max(a, -1.0), 1.0)
        group = self.groups[t]
        desired = self.keep_for(group, a)
        keep = self.limit(t, desired)
        self._keeps.append(keep)
        self._actions.append(a)
        self._limited += keep != desired
        info: dict[str, Any] = {
            "group": group.name,
            "desired_keep": desired,
            "keep": keep,
            "limited": keep != desired,
            "action_taken": self.action_for(group, keep),
        }
        if len(self._keeps) < len(self.groups):
            return self._observation(), 0.0, False, False, info
        record = self._finish()
        info["pruning"] = record
        return self._observation(), record["learning_reward"], True, False, info

    # ---- actions and the budget ------------------------------------------------------------------
    def keep_for(self, group: Group, action: float) -> int:
        """The allowed keep count nearest the keep ratio ``action`` maps to."""
        lo = self.ctx.min_keep_ratio
        ratio = lo + (action + 1.0) / 2.0 * (1.0 - lo)
        return self.ctx.clamp_keep(group.name, ratio * group.channels)

    def action_for(self, group: Group, keep: int) -> float:
        """The action in [-1, 1] whose ratio is ``keep``'s fraction of the group (the inverse of keep_for)."""
        lo = self.ctx.min_keep_ratio
        if lo >= 1.0:
            return 1.0
        return min(max(2.0 * (keep / group.channels - lo) / (1.0 - lo) - 1.0, -1.0), 1.0)

    def plan_at(self, t: int, keep: int | None = None, later: str = "floor") -> PruningPlan:
        """The decided groups, group ``t`` at ``keep`` (full when None), the groups after it at their
        ``later`` keep ("floor" or "full")."""
        counts = {g.name: k for g, k in zip(self.groups, self._keeps[:t], strict=False)}
        if t < len(self.groups):
            counts[self.groups[t].name] = self.groups[t].channels if keep is None else keep
        if later == "floor":
            counts |= {g.name: self.floor[g.name] for g in self.groups[t + 1 :]}
        return self.full_plan.with_keep(counts)

    def fits(self, t: int, keep: int) -> bool:
        return self.ctx.predict_ms(self.plan_at(t, keep)) <= self.target_ms

    def limit(self, t: int, desired: int) -> int:
        """The widest allowed keep at most ``desired`` whose episode can still meet the target with every
        later group at its floor keep; the narrowest that can, if none at most ``desired`` can.

        One always can: the plan with this group at its floor keep is the one the previous step
        (or, at the first step, the feasibility check) priced under the target.
        """
        if self.fits(t, desired):
            return desired
        allowed = self.allowed[self.groups[t].name]
        for k in reversed([k for k in allowed if k < desired]):
            if self.fits(t, k):
                return k
        for k in (k for k in allowed if k > desired):
            if self.fits(t, k):
                return k
        raise AssertionError("the floor keep always fits")  # pragma: no cover - the invariant above

    # ---- the end of an episode -------------------------------------------------------------------
    def plan(self) -> PruningPlan:
        """The plan the decided groups make (the episode's plan once it is over)."""
        return self.full_plan.with_keep({g.name: k for g, k in zip(self.groups, self._keeps, strict=False)})

    def _finish(self) -> dict[str, Any]:
        plan = self.plan()
        predicted = self.ctx.predict_ms(plan)
        with _own_random_states():
            accuracy, loss = self.score_fn(plan)
        raw = self.reward_of(float(accuracy), predicted)
        baseline = raw if self.baseline is None else self.baseline
        learning = raw - baseline if self.baseline_alpha is not None else raw
        if self.baseline_alpha is not None:
            self.baseline = baseline + self.baseline_alpha * (raw - baseline)
        return {
            "actions": list(self._actions),
            "keep": list(self._keeps),
            "limited": self._limited,
            "predicted_ms": predicted,
            "accuracy": float(accuracy),
            "loss": float(loss),
            "reward": raw,
            "baseline": baseline if self.baseline_alpha is not None else None,
            "learning_reward": learning,
        }

    def reward_of(self, accuracy: float, predicted_ms: float) -> float:
        if self.reward_form == "accuracy":
            return accuracy
        return -(1.0 - accuracy) * math.log(max(predicted_ms * 1000.0, math.e))

    # ---- the observation ---------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        """Per group: index, kind, c_in, c_out, stride, kernel, feature map, latency share; scaled to [0, 1]."""
        shapes = {s.name: s for s in self.ctx.graph.layer_shapes()}
        rows = []
        for i, g in enumerate(self.groups):
            s = shapes[g.name]
            alone = self.full_plan.with_keep({g.name: self.floor[g.name]})
            share = max(self.full_ms - self.ctx.predict_ms(alone), 0.0) / self.full_ms
            rows.append([i, KINDS.index(_kind(s)) / 3, s.c_in, s.c_out, s.stride, s.kernel, s.in_hw[0], share])
        table = np.asarray(rows, dtype=np.float64)
        for col in (0, 2, 3, 4, 5, 6, 7):  # the kind is already a fixed code in [0, 1]
            lo, hi = table[:, col].min(), table[:, col].max()
            table[:, col] = (table[:, col] - lo) / (hi - lo) if hi > lo else 0.0
        return table

    def _observation(self) -> np.ndarray:
        t = len(self._keeps)
        row = min(t, len(self.groups) - 1)
        undecided = self.ctx.predict_ms(self.plan_at(t, later="full"))
        reduced = (self.full_ms - undecided) / self.full_ms
        rest = 0.0
        if t + 1 < len(self.groups):
            rest = (undecided - self.ctx.predict_ms(self.plan_at(t, None, later="floor"))) / self.full_ms
        previous = self._keeps[-1] / self.groups[t - 1].channels if t else 1.0
        obs = np.concatenate([self.static[row], [reduced, rest, previous]])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)


def _kind(shape: LayerShape) -> str:
    if shape.kind == "linear":
        return "linear"
    if shape.depthwise:
        return "depthwise"
    return "grouped" if shape.groups > 1 else "conv"


@contextmanager
def _own_random_states() -> Iterator[None]:
    """Run a block without moving Python's, NumPy's or torch's global random state."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
