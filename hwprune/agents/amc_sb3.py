"""The stable-baselines3 pieces of the AMC agent: the DDPG learner, its exploration noise, and a callback.

Kept apart from :mod:`hwprune.agents.amc` because stable-baselines3 takes over a second to import:
the agent imports this module only when it searches, so ``import hwprune`` and the CLI stay quick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DDPG
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise


class DecayingTruncatedNormalNoise(ActionNoise):
    """AMC's exploration: a normal of scale ``sigma`` truncated at ``limit`` x sigma, the scale
    multiplied by ``decay`` after every episode once ``hold`` episodes (the random warm-up, when no
    noise is drawn) have passed.

    AMC draws the action itself from a normal around the policy's action truncated to the action's
    bounds; an SB3 ``ActionNoise`` sees no action, so here the noise is truncated and SB3 clips the
    sum to [-1, 1]. Draws come from the noise's own seeded generator, so a run repeats.
    """

    def __init__(self, sigma: float, decay: float, hold: int = 0, seed: int = 0, limit: float = 2.0) -> None:
        super().__init__()
        self.initial_sigma, self.decay, self.hold, self.limit = sigma, decay, hold, limit
        self.episodes = 0
        self._rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        """The scale the current episode draws with."""
        return self.initial_sigma * self.decay ** max(0, self.episodes - self.hold)

    def __call__(self) -> np.ndarray:
        sigma = self.sigma
        noise = self._rng.normal(0.0, sigma, size=1)
        while abs(noise[0]) > self.limit * sigma:  # rejection: the truncated normal, exactly
            noise = self._rng.normal(0.0, sigma, size=1)
        return noise.astype(np.float32)

    def reset(self) -> None:
        """SB3 calls this at the end of every episode."""
        self.episodes += 1

    def __repr__(self) -> str:
        return f"DecayingTruncatedNormalNoise(sigma={self.initial_sigma}, decay={self.decay}, hold={self.hold})"


class AMCDDPG(DDPG):
    """SB3's DDPG with what AMC's learner does differently.

    - Two learning rates, one for the actor and one for the critic (SB3 gives both networks one).
    - Its gradient updates run on one thread: the networks are small, and a float sum split over
      another number of threads could change the last bits and, with them, a replayed search.
    """

    def __init__(self, *args: Any, actor_lr: float, critic_lr: float, **kwargs: Any) -> None:
        self.actor_lr, self.critic_lr = actor_lr, critic_lr
        super().__init__(*args, learning_rate=actor_lr, **kwargs)

    def _update_learning_rate(self, optimizers: Any) -> None:
        for optimizer, lr in ((self.actor.optimizer, self.actor_lr), (self.critic.optimizer, self.critic_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        with _one_thread():
            super().train(gradient_steps, batch_size)


class EpisodeCallback(BaseCallback):
    """Hands every finished episode's record (the env's ``info["pruning"]``) to ``on_episode``."""

    def __init__(self, on_episode: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.on_episode = on_episode

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self.on_episode(info["pruning"])
        return True


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
