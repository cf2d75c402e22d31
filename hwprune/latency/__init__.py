"""Latency lookup tables (LUTs): build them on a device, predict a plan's latency, validate against measurement."""

from hwprune.latency.build import DEFAULT_FRACTIONS, TableSetting, parse_grid, plan_grids, profile_model
from hwprune.latency.fit import TableSum
from hwprune.latency.interp import Grid, axis_points, interpolate
from hwprune.latency.load import load_predictor, load_table, model_for, profiler_for, timing_like
from hwprune.latency.predictor import FlopsPredictor, LatencyPredictor, Predictor, SumPredictor
from hwprune.latency.table import TABLE_KIND, TABLE_SCHEMA, LatencyTable, Signature
from hwprune.latency.validate import check, error_stats, heldout_plans

__all__ = [
    "DEFAULT_FRACTIONS",
    "TABLE_KIND",
    "TABLE_SCHEMA",
    "FlopsPredictor",
    "Grid",
    "LatencyPredictor",
    "LatencyTable",
    "Predictor",
    "Signature",
    "SumPredictor",
    "TableSetting",
    "TableSum",
    "axis_points",
    "check",
    "error_stats",
    "heldout_plans",
    "interpolate",
    "load_predictor",
    "load_table",
    "model_for",
    "parse_grid",
    "plan_grids",
    "profile_model",
    "profiler_for",
    "timing_like",
]
