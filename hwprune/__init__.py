"""hwprune: hardware-aware structured pruning of PyTorch CNNs.

The Python API (see docs/api.md)::

    import hwprune
    table = hwprune.profile(model, (3, 32, 32), batch=16)            # this device's latency table
    result = hwprune.prune(model, (3, 32, 32), budget="0.5x", table=table, score=val_acc, finetune=train)
    result.model, result.plan, result.met, result.report              # pruned nn.Module, plan, verdict, report
    pruned, spec, plan = hwprune.load_pruned("runs/mine/model", base_model=MyNet())

Names are imported on first use (``hwprune.api``), so ``import hwprune`` stays cheap.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    """``hwprune.profile``, ``hwprune.prune`` ...: the public API, imported when first asked for."""
    import hwprune.api

    if name in hwprune.api.__all__:
        return getattr(hwprune.api, name)
    raise AttributeError(f"module 'hwprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    import hwprune.api

    return sorted([*globals(), *hwprune.api.__all__])
