"""The public Python API, re-exported lazily as ``hwprune.<name>``.

Each name is imported on first use, so ``import hwprune`` stays cheap (no torch) and the CLI,
which is built on these same functions, loads only what a command needs.
"""

from __future__ import annotations

from typing import Any

LATENCY = ("profile", "predictor", "predict_ms", "check_table")
PRUNING = ("prune", "PruneResult")
PIECES = (
    "ModelGraph",
    "PruningPlan",
    "GroupPlan",
    "apply_plan",
    "save_pruned",
    "load_pruned",
    "filter_importance",
    "LatencyTable",
    "Predictor",
    "Profiler",
    "Measurement",
    "HwpruneError",
    "UserTraining",
)
__all__ = [*LATENCY, *PRUNING, *PIECES]


def __getattr__(name: str) -> Any:
    if name in LATENCY:
        from hwprune.api import latency as module
    elif name in PRUNING:
        from hwprune.api import pruning as module
    elif name in PIECES:
        from hwprune.api import pieces as module
    else:
        raise AttributeError(f"module 'hwprune.api' has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
