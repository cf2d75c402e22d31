"""The lower-level pieces a library user composes, gathered where ``hwprune.<name>`` finds them."""

from hwprune.errors import HwpruneError
from hwprune.latency import LatencyTable, Predictor
from hwprune.profilers import Measurement, Profiler
from hwprune.pruning import GroupPlan, ModelGraph, PruningPlan, apply_plan, filter_importance, load_pruned, save_pruned
from hwprune.user_training import UserTraining

__all__ = [
    "GroupPlan",
    "HwpruneError",
    "LatencyTable",
    "Measurement",
    "ModelGraph",
    "Predictor",
    "Profiler",
    "PruningPlan",
    "UserTraining",
    "apply_plan",
    "filter_importance",
    "load_pruned",
    "save_pruned",
]
