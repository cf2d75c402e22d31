"""AMC (He et al., ECCV 2018): a DDPG agent learns each channel group's keep ratio under the budget.

The agent walks the groups of :class:`~hwprune.agents.amc_env.ChannelPruningEnv` episode after
episode (one episode, one plan, every plan under the predicted target by the env's action limit),
with stable-baselines3's DDPG set up as AMC's official code sets up its own: random warm-up
episodes that only fill the replay buffer, then the policy with a decaying truncated-normal noise,
trained after every episode. The plan with the highest reward seen (the final policy's
deterministic episode included) is returned. Plans are cut from the original weights and scored
by the evaluator after its short fine-tune, like every agent's candidates.

Resume needs no pickle: every episode's actions, keep counts, scores and rewards are logged as
JSON in the search state. A resumed search re-runs the same seeded agent from the start, handing
it the logged scores instead of evaluating (seconds of replay for minutes of evaluations), and goes
on where the log ends; SB3's learning is deterministic on the CPU for a seed, so it reaches the
plan the uninterrupted search would have. Should a replay leave the logged path (another torch
build), the search goes on from there with a warning: logged plans still cost nothing to score.

Handed an earlier search of the same job (``start``: a new try, or the table corrected under it),
the agent searches again against the new target with the earlier search's logged scores in hand:
every plan it meets again is scored for free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hwprune.agents.amc_env import REWARDS, ChannelPruningEnv
from hwprune.agents.base import CostMeter, SearchAgent, SearchContext, SearchResult, check_choice, register_agent
from hwprune.agents.state import SearchState, begin_search
from hwprune.errors import ConfigError
from hwprune.progress import bars_off
from hwprune.pruning import PruningPlan

log = logging.getLogger(__name__)


@register_agent
class AMCAgent(SearchAgent):
    """Options (defaults in brackets; AMC's paper and official code beside any scaled down):

    - ``episodes`` [200; official 800]: episodes in all, warm-up included; one more, the final
      policy's deterministic episode, follows. Sized for about 5 minutes on 2 cores for the shipped
      ResNet-20 at the demo's evaluator setting (10 fine-tune steps, 1000 validation samples): the
      budget benchmark's NetAdapt searches there spent 1.15-1.8 s per evaluation (search_s over
      evaluations in benchmarks/results/budget_adherence_resnet20_*.json; a one-off timing on the
      shared VM, under a load of 4-8 from other jobs, gave 10-49 s and sized nothing); 201 episodes
      on ResNet-20 with a stand-in evaluator met 177-192 distinct plans (the others repeat and hit
      the evaluator's cache), so 180-190 evaluations x 1.15-1.8 s = 3.5-5.7 min, plus 15-35 s of
      DDPG updates (12 per episode on 300-unit networks) and latency pricing.
    - ``warmup_episodes`` [50; official 100]: random actions (uniform in [-1, 1]) that only fill the
      replay buffer; learning starts after them.
    - ``reward`` ["accuracy"]: AMC's accuracy reward; "error_log_latency" is its resource-aware form,
      -(1 - accuracy) x log(latency), with predicted latency for FLOPs.
    - ``baseline_alpha`` [0.5, the official DDPG's]: a moving average of past rewards, updated by this
      weight, is subtracted from each reward before learning (None: off).
    - ``noise_sigma`` [0.5] and ``noise_decay`` [0.95]: the exploration noise's scale on the keep
      ratio (AMC's unit; in the [-1, 1] action it is 2 / (1 - min_keep_ratio) times that) and its
      decay per episode after the warm-up.
    - ``hidden`` [300]: units in each of the actor's and the critic's two hidden layers.
    - ``actor_lr`` [1e-4], ``critic_lr`` [1e-3], ``tau`` [0.01] (soft target update),
      ``gamma`` [1.0] (discount: the reward comes once, at the end), ``batch_size`` [64].
    - ``buffer_episodes`` [100, the official 100 transitions per layer]: replay memory, in episodes.
    - ``progress`` [True]: a tqdm bar over episodes with the best reward and the time left.

    Training is once per episode, one gradient step per transition of it (as the official code
    updates once per step it replays). The networks' last-layer initialisation (official: uniform
    in +-0.003) is SB3's default.
    """

    name = "amc"
    resume_neutral = frozenset({"progress"})

    def __init__(
        self,
        *,
        episodes: int = 200,
        warmup_episodes: int = 50,
        reward: str = "accuracy",
        baseline_alpha: float | None = 0.5,
        noise_sigma: float = 0.5,
        noise_decay: float = 0.95,
        hidden: int = 300,
        actor_lr: float = 1e-4,
        critic_lr: float = 1e-3,
        tau: float = 0.01,
        gamma: float = 1.0,
        batch_size: int = 64,
        buffer_episodes: int = 100,
        progress: bool = True,
    ) -> None:
        if episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {episodes}")
        if not 0 <= warmup_episodes <= episodes:
            raise ConfigError(f"warmup_episodes must be in [0, episodes={episodes}], got {warmup_episodes}")
        if baseline_alpha is not None and not 0 < baseline_alpha <= 1:
            raise ConfigError(f"baseline_alpha must be in (0, 1] or null (off), got {baseline_alpha}")
        if noise_sigma < 0 or not 0 < noise_decay <= 1:
            raise ConfigError(f"noise_sigma must be >= 0 and noise_decay in (0, 1], got {noise_sigma}, {noise_decay}")
        if hidden < 1 or batch_size < 1 or buffer_episodes < 1:
            raise ConfigError("hidden, batch_size and buffer_episodes must be >= 1")
        if not (actor_lr > 0 and critic_lr > 0 and 0 < tau <= 1 and 0 <= gamma <= 1):
            raise ConfigError("actor_lr and critic_lr must be > 0, tau in (0, 1] and gamma in [0, 1]")
        self.episodes, self.warmup_episodes = int(episodes), int(warmup_episodes)
        self.reward = check_choice("reward", reward, REWARDS)
        self.baseline_alpha = baseline_alpha
        self.noise_sigma, self.noise_decay = float(noise_sigma), float(noise_decay)
        self.hidden, self.batch_size, self.buffer_episodes = int(hidden), int(batch_size), int(buffer_episodes)
        self.actor_lr, self.critic_lr, self.tau, self.gamma = (
            float(actor_lr),
            float(critic_lr),
            float(tau),
            float(gamma),
        )
        self.progress = progress

    def search(
        self, ctx: SearchContext, budget_ms: float, state_path: Path | None = None, start: SearchResult | None = None
    ) -> SearchResult:
        header, state, finished = begin_search(self, ctx, budget_ms, state_path)
        if finished is not None:
            return finished
        logged = episodes_of(state.history) if state is not None else []
        prior = None if state is None else state.cost | {"resumes": state.cost.get("resumes", 0) + 1}
        if logged:
            log.info("amc: resuming; replaying %d logged episodes without evaluating them", len(logged))
        earlier = episodes_of(start.history) if start is not None else []
        return AMCSearch(self, ctx, budget_ms, header, CostMeter(ctx, prior), state_path, logged, earlier).run()


def episodes_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The episode rows of an AMC search's history (not its closing summary)."""
    return [row for row in history if all(k in row for k in ("episode", "keep", "accuracy", "loss"))]


class AMCSearch:
    """One search: the env, the learner, the episode log, the best plan so far and the state file."""

    def __init__(
        self,
        agent: AMCAgent,
        ctx: SearchContext,
        budget_ms: float,
        header: dict[str, Any],
        meter: CostMeter,
        state_path: Path | None,
        logged: list[dict[str, Any]],
        earlier: list[dict[str, Any]] | None = None,
    ) -> None:
        self.agent, self.ctx, self.budget_ms, self.header = agent, ctx, budget_ms, header
        self.meter, self.state_path, self.logged = meter, state_path, logged
        n = len(ctx.graph.groups)
        self.known: dict[tuple[int, ...], tuple[float, float]] = {
            tuple(row["keep"]): (float(row["accuracy"]), float(row["loss"]))
            for row in [*(earlier or []), *logged]
            if len(row["keep"]) == n
        }
        self.env = ChannelPruningEnv(ctx, budget_ms, agent.reward, agent.baseline_alpha, score=self.score)
        lo = ctx.min_keep_ratio
        self.action_scale = 2.0 / (1.0 - lo) if lo < 1 else 1.0  # keep-ratio units -> action units
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.diverged = False
        self.phase_final = False
        self.noise: Any = None
        self.bar: tqdm | None = None

    def score(self, plan: PruningPlan) -> tuple[float, float]:
        """A plan's (accuracy, loss): from the log of this or an earlier search if it is there, else evaluated."""
        known = self.known.get(plan.key())
        return known if known is not None else self.ctx.score(plan)

    # ---- the run -----------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        from hwprune.agents.amc_sb3 import DecayingTruncatedNormalNoise, EpisodeCallback

        agent, steps = self.agent, len(self.env.groups)
        self.noise = DecayingTruncatedNormalNoise(
            agent.noise_sigma * self.action_scale, agent.noise_decay, hold=agent.warmup_episodes, seed=self.ctx.seed
        )
        model = self.learner(self.noise)
        self.bar = tqdm(
            total=agent.episodes + 1, desc="amc", unit="ep", disable=True if bars_off(agent.progress) else None
        )
        try:
            model.learn(
                total_timesteps=agent.episodes * steps, callback=EpisodeCallback(self.record), log_interval=None
            )
            self.phase_final = True
            self.final_episode(model)
        finally:
            self.bar.close()
        return self.finish()

    def learner(self, noise: Any) -> Any:
        """SB3's DDPG with AMC's recipe (see :class:`AMCAgent`), seeded by the context."""
        from hwprune.agents.amc_sb3 import AMCDDPG

        agent, steps = self.agent, len(self.env.groups)
        return AMCDDPG(
            "MlpPolicy",
            self.env,
            actor_lr=agent.actor_lr,
            critic_lr=agent.critic_lr,
            buffer_size=agent.buffer_episodes * steps,
            learning_starts=agent.warmup_episodes * steps,
            batch_size=agent.batch_size,
            tau=agent.tau,
            gamma=agent.gamma,
            train_freq=(1, "episode"),
            gradient_steps=-1,  # one update per transition of the episode
            action_noise=noise,
            policy_kwargs={"net_arch": [agent.hidden, agent.hidden]},
            seed=self.ctx.seed,
            device="cpu",
            verbose=0,
        )

    def final_episode(self, model: Any) -> None:
        """The trained policy's own plan: one episode without noise."""
        obs, _ = self.env.reset()
        while True:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, _, info = self.env.step(action)
            if terminated:
                self.record(info["pruning"])
                return

    # ---- the log -----------------------------------------------------------------------------------
    def record(self, episode: dict[str, Any]) -> None:
        """Log a finished episode, keep the best, and checkpoint (episodes replayed from the log are not re-saved)."""
        n = len(self.history)
        phase = "final" if self.phase_final else "warmup" if n < self.agent.warmup_episodes else "policy"
        sigma = self.noise.sigma / self.action_scale if phase == "policy" else None
        row = {"episode": n + 1, "phase": phase, "noise_sigma": sigma} | episode
        self.history.append(row)
        if self.best is None or row["reward"] > self.best["reward"]:
            self.best = row
        replayed = n < len(self.logged)
        if replayed and not self.diverged and self.logged[n]["keep"] != row["keep"]:
            self.diverged = True
            log.warning(
                "amc: the replay left the logged search at episode %d (another torch or stable-baselines3 build?); "
                "going on from there: the search may end at another plan than the interrupted one would have",
                n + 1,
            )
        if not replayed:
            self.save(done=False)
        assert self.bar is not None
        self.bar.update(1)
        self.bar.set_postfix(best=f"{self.best['reward']:.4f}", last=f"{row['reward']:.4f}", phase=phase)

    def best_plan(self) -> PruningPlan:
        assert self.best is not None
        names = [g.name for g in self.env.groups]
        return self.ctx.full_plan().with_keep(dict(zip(names, self.best["keep"], strict=True)))

    def save(self, done: bool, history: list[dict[str, Any]] | None = None) -> None:
        if self.state_path is None:
            return
        assert self.best is not None
        extra = {"best_episode": self.best["episode"]}
        rows = self.history if history is None else history
        SearchState(self.header, len(self.history), self.best_plan(), rows, self.meter.total(), done, extra).save(
            self.state_path
        )

    def finish(self) -> SearchResult:
        assert self.best is not None
        plan = self.best_plan()
        predicted = self.ctx.predict_ms(plan)
        summary = {
            "final": True,
            "best_episode": self.best["episode"],
            "phase": self.best["phase"],
            "keep": plan.keep,
            "predicted_ms": predicted,
            "budget_ms": self.budget_ms,
            "accuracy": self.best["accuracy"],
            "reward": self.best["reward"],
        }
        history = [*self.history, summary]
        self.save(done=True, history=history)
        log.info(
            "amc: best plan from episode %d (%s), reward %.4f, %.3f ms predicted (budget %.3f ms)",
            self.best["episode"],
            self.best["phase"],
            self.best["reward"],
            predicted,
            self.budget_ms,
        )
        return SearchResult(plan, history, self.meter.total(), predicted)
