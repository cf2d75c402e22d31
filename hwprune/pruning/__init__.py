"""Structured pruning: the only room that touches Torch-Pruning."""

from hwprune.pruning.apply import apply_plan, channel_norms, filter_norms
from hwprune.pruning.artifact import load_pruned, save_pruned
from hwprune.pruning.graph import Group, LayerShape, ModelGraph
from hwprune.pruning.importance import (
    CRITERIA,
    DEFAULT_CRITERION,
    TAYLOR_BATCHES,
    FilterImportance,
    check_criterion,
    filter_importance,
)
from hwprune.pruning.plan import GroupPlan, PruningPlan, round_channels

__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "TAYLOR_BATCHES",
    "FilterImportance",
    "Group",
    "GroupPlan",
    "LayerShape",
    "ModelGraph",
    "PruningPlan",
    "apply_plan",
    "channel_norms",
    "check_criterion",
    "filter_importance",
    "filter_norms",
    "load_pruned",
    "round_channels",
    "save_pruned",
]
