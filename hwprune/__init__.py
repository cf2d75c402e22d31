"""hwprune: hardware-aware structured pruning of PyTorch CNNs."""

__version__ = "0.1.0"

ENV_ID = "hwprune/ChannelPruning-v0"
"""AMC's channel-pruning environment: ``gymnasium.make(ENV_ID, ctx=..., target_ms=...)`` after ``import hwprune``."""


def _register_env() -> None:
    """Register the env by a string entry point: nothing of hwprune's agents (or torch) is imported until it is made."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - a default dependency; an install without it just lacks the id
        return
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="hwprune.agents.amc_env:ChannelPruningEnv")


_register_env()
