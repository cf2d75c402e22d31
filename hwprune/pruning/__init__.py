"""Structured pruning: the only room that touches Torch-Pruning."""

from hwprune.pruning.apply import apply_plan, channel_norms, filter_norms
from hwprune.pruning.artifact import load_pruned, save_pruned
from hwprune.pruning.graph import Group, LayerShape, ModelGraph
from hwprune.pruning.plan import GroupPlan, PruningPlan, round_channels

__all__ = [
    "Group",
    "GroupPlan",
    "LayerShape",
    "ModelGraph",
    "PruningPlan",
    "apply_plan",
    "channel_norms",
    "filter_norms",
    "load_pruned",
    "round_channels",
    "save_pruned",
]
