"""Latency tables: JSON round-trip, interpolation, refusal of corrupt/foreign tables, resumable builds, predictors.

Most tests use a fake profiler whose "latency" is a deterministic function of the block, so they
check behaviour (what is stored, what is refused, what a resume yields) without timing anything.
The CLI tests in test_lut_check.py time real blocks, briefly.
"""

from __future__ import annotations

import copy
import itertools
import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FakeProfiler, setting
from torch import nn

from hwprune.errors import ConfigError, TableError
from hwprune.latency import (
    FlopsPredictor,
    Grid,
    LatencyTable,
    Predictor,
    Signature,
    SumPredictor,
    TableSetting,
    axis_points,
    check,
    error_stats,
    heldout_plans,
    interpolate,
    parse_grid,
    plan_grids,
    profile_model,
)
from hwprune.latency.build import new_table
from hwprune.latency.calibrate import calibration_plans
from hwprune.latency.fit import TableSum, fit
from hwprune.latency.interp import tier, tier_probes
from hwprune.latency.validate import paired_meter
from hwprune.models import create_model
from hwprune.profilers import BlockSpec, Measurement
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan


@pytest.mark.parametrize(
    ("backend", "isa", "quantum"), [("onnxruntime", "AVX512", 16), ("torch-cpu", "AVX2", 8), ("tensorrt", "AVX512", 8)]
)
def test_default_quantum_follows_the_simd_width(
    monkeypatch: pytest.MonkeyPatch, backend: str, isa: str, quantum: int
) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    assert setting(backend=backend, quantum=None).quantum == quantum
    assert setting(backend=backend, quantum=4).quantum == 4  # an explicit choice stands


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, ModelGraph]:
    model = create_model("resnet20", 3, 10)
    return model, ModelGraph(model, (3, 16, 16))


@pytest.fixture(scope="module")
def built(resnet20, tmp_path_factory) -> tuple[LatencyTable, Path]:
    out = tmp_path_factory.mktemp("lut") / "lut.json"
    table, _ = profile_model(setting(), out, progress=False, profiler=FakeProfiler(repeats=3), model=resnet20[0])
    return table, out


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


# ---- interpolation ------------------------------------------------------------------------


def test_axis_points_are_fractions_of_the_full_width() -> None:
    assert axis_points(64, (0.125, 0.25, 0.5, 1.0)) == (8, 16, 32, 64)
    assert axis_points(3, (0.125, 0.5, 1.0)) == (1, 2, 3)  # rounded, at least 1, deduplicated


def test_interpolation_exact_at_grid_points_and_monotone_between() -> None:
    grid = Grid((4, 8, 16, 32), (3, 12, 24))
    rng = np.random.default_rng(0)
    # Monotone but deliberately not bilinear data (steps and a convex term), as real timings are.
    data = {(ci, co): 0.1 + ci * co * 0.01 + (ci // 8) * 0.3 + co**1.5 * 0.02 for ci, co in grid.points()}
    value = lambda ci, co: data[(ci, co)]  # noqa: E731
    for (ci, co), v in data.items():
        assert interpolate(grid, ci, co, value) == pytest.approx(v, rel=1e-12)
    for _ in range(300):
        ci, co = rng.uniform(1, 40), rng.uniform(1, 30)
        base = interpolate(grid, ci, co, value)
        assert interpolate(grid, ci + rng.uniform(0, 5), co, value) >= base - 1e-12
        assert interpolate(grid, ci, co + rng.uniform(0, 5), value) >= base - 1e-12
    # Between two grid points the value lies between their values.
    mid = interpolate(grid, 12, 12, value)
    assert data[(8, 12)] <= mid <= data[(16, 12)]


def test_depthwise_grid_is_one_dimensional() -> None:
    grid = Grid((8, 16, 32), (8, 16, 32), diagonal=True)
    assert grid.points() == [(8, 8), (16, 16), (32, 32)]
    data = {(8, 8): 1.0, (16, 16): 2.0, (32, 32): 5.0}
    assert interpolate(grid, 24, 24, lambda a, b: data[(a, b)]) == pytest.approx(3.5)
    assert interpolate(grid, 4, 4, lambda a, b: data[(a, b)]) == pytest.approx(1.0)  # flat below the grid


def test_alignment_tiers_are_corrected_from_their_probes() -> None:
    assert [tier(c, 8) for c in (7, 6, 12, 24, 32)] == [1, 2, 4, 8, 8]
    axis = axis_points(64, (0.25, 0.5, 1.0), quantum=8)
    assert axis == (17, 33, 63, 64)  # odd base points, and the full width
    ref, probes = tier_probes(axis, 64, 8)
    assert ref == 33 and [tier(p, 8) for p in probes] == [2, 4, 8]
    grid = Grid(axis, (10,), quantum=8, probes_in=probes, ref=(ref, 10))
    # Per 8 channels: 1.5 for odd widths, 1.4 / 1.2 / 1.0 for tiers 2 / 4 / 8, as on a SIMD backend.
    cost = {1: 1.5, 2: 1.4, 4: 1.2, 8: 1.0}
    data = {(ci, co): ci / 8 * cost[tier(ci, 8)] for ci, co in grid.points()}
    value = lambda ci, co: data[(ci, co)]  # noqa: E731
    for (ci, co), v in data.items():
        assert interpolate(grid, ci, co, value) == pytest.approx(v)  # exact at every measured point
    for c in range(17, 64):
        assert interpolate(grid, c, 10, value) == pytest.approx(c / 8 * cost[tier(c, 8)])
    assert interpolate(grid, 24, 10, value) < interpolate(grid, 23, 10, value)  # the hardware's truth
    for t in (1, 2, 4, 8):  # monotone within a tier
        same = [interpolate(grid, c, 10, value) for c in range(17, 64) if tier(c, 8) == t]
        assert all(b > a for a, b in itertools.pairwise(same))


def test_a_joint_probe_prices_both_widths_aligned_together() -> None:
    axis = axis_points(64, (0.25, 0.5, 1.0), quantum=8)
    ref, probes = tier_probes(axis, 64, 8)
    joint = (probes[-1], probes[-1])
    grid = Grid(axis, axis, quantum=8, probes_in=probes, probes_out=probes, ref=(ref, ref), joint=joint)
    assert joint in grid.points() and Grid.from_dict(grid.to_dict()) == grid
    # Separable tier costs, except that both widths aligned to 8 run another kernel at 0.6x.
    cost = {1: 1.5, 2: 1.4, 4: 1.2, 8: 1.0}

    def truth(ci: int, co: int) -> float:
        both = tier(ci, 8) == 8 and tier(co, 8) == 8
        return ci * co / 64 * cost[tier(ci, 8)] * cost[tier(co, 8)] / 2.25 * (0.6 if both else 1.0)

    value = lambda ci, co: truth(ci, co)  # noqa: E731
    for ci, co in ((24, 40), (48, 24), (24, 23), (23, 40), (22, 36)):
        assert interpolate(grid, ci, co, value) == pytest.approx(truth(ci, co), rel=0.02), (ci, co)
    no_joint = Grid(axis, axis, quantum=8, probes_in=probes, probes_out=probes, ref=(ref, ref))
    assert interpolate(no_joint, 24, 40, value) > 1.5 * truth(24, 40)  # the product of one-axis factors


def test_a_measured_row_is_read_as_measured_without_tier_factors() -> None:
    """Beside the full (aligned) input width, a blocked kernel pads the output channels: 64->20 costs 64->24.

    The full-width row is measured at odd output widths, which the padding already prices; the
    tier factors (measured beside an odd input width, where even outputs are cheaper) must not be
    applied on top of it, or a narrow even output looks far cheaper than it runs.
    """
    axis = axis_points(64, (0.25, 0.5, 1.0), quantum=8)
    ref, probes = tier_probes(axis, 64, 8)
    grid = Grid(axis, axis, quantum=8, probes_in=probes, probes_out=probes, ref=(ref, ref), joint=(32, 32))
    cost = {1: 1.5, 2: 1.4, 4: 1.2, 8: 1.0}

    def truth(ci: int, co: int) -> float:
        if tier(ci, 8) == 8:  # blocked kernel: output padded to a multiple of 8, no tier discount on it
            return ci * -(-co // 8) * 8 / 64 * 0.6
        return ci * co / 64 * cost[tier(ci, 8)] * cost[tier(co, 8)] / 2.25

    value = lambda ci, co: truth(ci, co)  # noqa: E731
    for co in range(18, 33):  # between the measured row points 17 and 33
        got = interpolate(grid, 64, co, value)
        assert min(truth(64, 17), truth(64, 33)) <= got <= max(truth(64, 17), truth(64, 33)), co
    assert interpolate(grid, 64, 20, value) > 0.9 * truth(64, 20)  # the product of tier factors said ~0.6x


def test_parse_grid() -> None:
    assert parse_grid("4") == (0.25, 0.5, 0.75, 1.0)
    assert parse_grid("1,0.5") == (0.5, 1.0)
    assert parse_grid("1") == (1.0,)
    for bad in ("0.5,0.9", "0", "x", "0,1"):
        with pytest.raises(ConfigError):
            parse_grid(bad)


# ---- planning -----------------------------------------------------------------------------


def test_plan_dedupes_signatures_and_freezes_unprunable_axes(resnet20) -> None:
    _, graph = resnet20
    sigs, grids = plan_grids(graph, batch=2, fractions=(0.5, 1.0), quantum=1)
    layers = graph.layer_shapes()
    assert len(sigs) < len(layers)  # the 3x3 convs of a stage share one signature
    stem = Signature.of(layers[0], 2).key()
    assert Grid((3,), (8, 16)) in grids[stem]  # image channels are not prunable...
    assert Grid((8, 16), (8, 16)) in grids[stem]  # ...while layer1's 3x3 convs share the signature
    head = Signature.of(layers[-1], 2).key()
    assert grids[head] == [Grid((32, 64), (10,))]  # nor are the classes


# ---- JSON, corruption, foreign tables ------------------------------------------------------


def test_table_round_trip(built) -> None:
    table, out = built
    loaded = LatencyTable.load(out)
    assert loaded.to_dict() | {"created": ""} == table.to_dict() | {"created": ""}
    assert loaded.is_complete() and loaded.num_entries() == len(table.planned_points())
    for sig, ci, co in table.planned_points()[:20]:
        assert loaded.lookup_ms(sig, ci, co) == table.value_ms(sig, ci, co)
    assert loaded.entries[sig][(ci, co)].samples_ms == table.entries[sig][(ci, co)].samples_ms
    data = json.loads(out.read_text())
    assert {"schema_version", "hwprune_version", "backend", "fingerprint", "created", "sha256"} <= set(data)


@pytest.mark.parametrize("damage", ["not json", "edited entry", "wrong kind", "wrong schema", "truncated"])
def test_corrupt_table_refused_with_one_line(built, tmp_path, damage) -> None:
    _, out = built
    text = out.read_text()
    data = json.loads(text)
    if damage == "not json":
        text = text[: len(text) // 2]
    elif damage == "edited entry":
        rows = next(iter(data["entries"].values()))
        rows[0]["measurement"]["samples_ms"][0] *= 0.5
        text = json.dumps(data)
    elif damage == "wrong kind":
        text = json.dumps(data | {"kind": "pruning-plan"})
    elif damage == "wrong schema":
        text = json.dumps(data | {"schema_version": 99})
    else:
        text = json.dumps({k: v for k, v in data.items() if k != "entries"})
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(TableError) as exc:
        LatencyTable.load(bad)
    one_line(exc)


def test_foreign_table_refused_unless_allowed(built, tmp_path) -> None:
    table, out = built
    here = FakeProfiler(threads=1, repeats=3).device_key()
    LatencyTable.load(out, expected_key=here)  # same device: fine
    other = FakeProfiler(threads=4, repeats=3).device_key()
    with pytest.raises(TableError) as exc:
        LatencyTable.load(out, expected_key=other)
    assert "--allow-foreign-table" in one_line(exc)
    assert LatencyTable.load(out, expected_key=other, allow_foreign=True).num_entries() == table.num_entries()


# ---- building and resuming -----------------------------------------------------------------


def test_resume_after_interruption_gives_the_same_entries(resnet20, built, tmp_path) -> None:
    model, _ = resnet20
    reference, _ = built
    out = tmp_path / "lut.json"
    with pytest.raises(KeyboardInterrupt):
        profile_model(setting(), out, progress=False, profiler=FakeProfiler(fail_after=7, repeats=3), model=model)
    partial = LatencyTable.load(out)
    assert partial.num_entries() == 7 and not partial.is_complete()  # every finished block was kept
    with pytest.raises(ConfigError):  # no silent clobbering without --resume
        profile_model(setting(), out, progress=False, profiler=FakeProfiler(repeats=3), model=model)
    resumed_profiler = FakeProfiler(repeats=3)
    resumed, _ = profile_model(setting(), out, resume=True, progress=False, profiler=resumed_profiler, model=model)
    assert resumed_profiler.blocks == reference.num_entries() * reference.block_rounds() - 7  # no run repeated
    final = LatencyTable.load(out)
    assert final.is_complete()
    assert {k: set(v) for k, v in final.entries.items()} == {k: set(v) for k, v in reference.entries.items()}
    assert final._payload()["entries"] == reference._payload()["entries"]
    assert final.calibration == reference.calibration


def test_resume_refuses_a_different_setting(resnet20, built) -> None:
    _, out = built
    with pytest.raises(TableError) as exc:
        profile_model(
            setting(batch=4), out, resume=True, progress=False, profiler=FakeProfiler(repeats=3), model=resnet20[0]
        )
    assert "batch=2" in one_line(exc)


# ---- predictors ----------------------------------------------------------------------------


def test_calibration_is_stored_with_its_plans(built, resnet20) -> None:
    table, _ = built
    _, graph = resnet20
    cal = table.calibration
    assert len(cal["plans"]) == 4 and cal["fit"]["coef"]["lut_sum_ms"] > 0
    assert cal["plans"][0]["keep"] == PruningPlan.full("resnet20", graph).keep
    quantum = int(table.settings["quantum"])
    plans = calibration_plans("resnet20", graph, 4, 7, quantum)
    assert [p.keep for p in plans] == [r["keep"] for r in cal["plans"]]
    assert plans[-1].keep == PruningPlan.uniform("resnet20", graph, 0.15).keep  # the low end is measured
    aligned = calibration_plans("resnet20", graph, 5, 7, quantum)[3]  # the third random kind
    assert quantum > 1 and all(k % quantum == 0 for k in aligned.keep.values())
    held = heldout_plans(table, graph, 10, seed=0)
    used = [r["keep"] for r in cal["plans"]]
    assert len(held) == 10 and all(p.keep not in used for p in held)


def test_a_sweep_prices_every_plan_exactly_as_pricing_it_afresh(built, resnet20) -> None:
    """LeGR's threshold sweep looks up only the layers a moved group touches; its figure decides which plan is
    taken, so it must equal predict_ms bit for bit, whichever groups move and however far."""
    table, _ = built
    _, graph = resnet20
    predictor = Predictor(table, graph)
    price, rng = predictor.sweep(), np.random.default_rng(0)
    plan = PruningPlan.full("resnet20", graph)
    for _ in range(150):
        moved = rng.choice(len(graph.groups), size=int(rng.integers(1, 4)), replace=False)
        plan = plan.with_keep({graph.groups[i].name: int(rng.integers(1, graph.groups[i].channels + 1)) for i in moved})
        assert price(plan) == predictor.predict_ms(plan)
    assert price(PruningPlan.full("resnet20", graph)) == predictor.predict_ms(PruningPlan.full("resnet20", graph))


def test_predictors_are_monotone_and_references_behave(built, resnet20) -> None:
    table, _ = built
    _, graph = resnet20
    pred, plain = Predictor(table, graph), SumPredictor(table, graph)
    full = PruningPlan.full("resnet20", graph)
    assert pred.calibrated
    fit = table.calibration["fit"]
    assert pred.predict_ms(full) == pytest.approx(fit["coef"]["lut_sum_ms"] * plain.predict_ms(full) + fit["offset_ms"])
    flops = FlopsPredictor(graph, full_ms=10.0)
    assert flops.predict_ms(full) == pytest.approx(10.0)
    assert flops.predict_ms(PruningPlan.uniform("resnet20", graph, 0.5)) < 5.0
    previous = 0.0
    for ratio in (0.2, 0.4, 0.6, 0.8, 1.0):
        value = pred.predict_ms(PruningPlan.uniform("resnet20", graph, ratio))
        assert value > previous
        previous = value
    for g in graph.groups[:4]:  # shrinking any one group never raises the prediction
        values = [pred.predict_ms(full.with_keep({g.name: k})) for k in range(1, g.channels + 1)]
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))


def test_predictor_refits_from_the_stored_calibration_measurements(built, resnet20) -> None:
    """A table made by an earlier version carries that version's fit; the measurements are what count."""
    table, _ = built
    _, graph = resnet20
    plan = PruningPlan.uniform("resnet20", graph, 0.5)
    expected = Predictor(table, graph).predict_ms(plan)
    stale = copy.deepcopy(table)
    stale.calibration["fit"]["coef"] = {"lut_sum_ms": 123.0}
    assert Predictor(stale, graph).predict_ms(plan) == pytest.approx(expected)


def test_predictor_refuses_a_table_for_another_model(built) -> None:
    table, _ = built
    other = ModelGraph(create_model("mobilenetv2", 3, 10), (3, 16, 16))
    with pytest.raises(TableError) as exc:
        Predictor(table, other)
    assert "profile" in one_line(exc)


def test_error_stats() -> None:
    stats = error_stats([105.0, 95.0, 130.0, 100.0], [100.0, 100.0, 100.0, 100.0])
    assert stats["median_abs_pct"] == pytest.approx(5.0)
    assert stats["within_10pct"] == pytest.approx(0.75)
    assert stats["max_abs_pct"] == pytest.approx(30.0)


def test_blocks_and_calibration_plans_count_their_rounds_apart(resnet20) -> None:
    """Blocks are timed in ``block_rounds`` passes, whole-model plans ``rounds`` times; a table from
    before the split (one ``rounds`` for both) still reads as complete."""
    model, _ = resnet20
    profiler = FakeProfiler(repeats=3)
    table, _ = profile_model(setting(rounds=1, block_rounds=3), None, progress=False, profiler=profiler, model=model)
    assert profiler.blocks == 3 * table.num_entries() and table.is_complete()
    assert [r["rounds"] for r in table.calibration["plans"]] == [1] * 4
    old = {k: v for k, v in table.settings.items() if k != "block_rounds"} | {"rounds": 3}
    assert TableSetting.from_dict(old).block_rounds == 3
    table.settings = old
    assert table.block_rounds() == 3 and table.is_complete()


@pytest.mark.parametrize("spell_passes", [1, 3])
def test_a_profile_reports_points_whose_kept_run_is_unstable_not_every_unstable_run(resnet20, spell_passes) -> None:
    """A slow, unstable pass is what the passes are for: only a point unstable in every pass is reported."""
    from hwprune.profilers.base import UnstableMeasurementWarning

    class Spells(FakeProfiler):
        def measure_block(self, spec: BlockSpec) -> Measurement:
            m = super().measure_block(spec)
            if self.blocks > spell_passes * points:
                return m
            warnings.warn("unstable timing of a block", UnstableMeasurementWarning, stacklevel=2)
            b = m.median_ms
            return Measurement([1.2 * b, 2.4 * b, 0.6 * b])  # slower median, wide spread

    model, _ = resnet20
    plan = setting(calib_plans=0, block_rounds=3)
    points = len(new_table(plan, ModelGraph(model, plan.input_shape), FakeProfiler()).planned_points())
    _, seconds = profile_model(plan, None, progress=False, profiler=Spells(repeats=3), model=model)
    assert seconds["unstable_blocks"] == spell_passes * points and seconds["points"] == points
    assert seconds["unstable_points"] == (points if spell_passes == 3 else 0)


def test_rounds_keep_the_faster_run(built) -> None:
    table, _ = built
    sig, ci, co = table.planned_points()[0]
    copy = LatencyTable.load(built[1])
    before = copy.rounds_done(sig, ci, co)
    slow = Measurement([99.0, 99.0, 99.0])
    copy.add(sig, ci, co, slow)
    assert copy.rounds_done(sig, ci, co) == before + 1
    assert copy.value_ms(sig, ci, co) == table.value_ms(sig, ci, co)  # the slow spell did not win
    fast = Measurement([1e-4] * 3)
    copy.add(sig, ci, co, fast)
    assert copy.value_ms(sig, ci, co) == pytest.approx(1e-4)


def test_aligned_volume_counts_only_convolutions_in_blocked_widths(built, resnet20) -> None:
    table, _ = built
    _, graph = resnet20
    sums = TableSum(table, graph)
    odd = PruningPlan.full("resnet20", graph).with_keep({g.name: g.channels - 1 for g in graph.groups})
    even = PruningPlan.uniform("resnet20", graph, 0.5, round_to=8)
    assert sums.features(odd)["aligned_melems"] == 0.0
    full = sums.features(None)
    assert 0 < sums.features(even)["aligned_melems"] < full["aligned_melems"]
    assert full["aligned_melems"] > 2 * full["act_melems"] * 0.9  # every conv: its input and its output


class Drifting(FakeProfiler):
    """A machine that changes speed state after every pruned model it runs, so a plan shares the state of the
    unpruned readings before it; the unpruned readings numbered in ``spells`` (from 1) alone run 2x slow."""

    def __init__(
        self,
        speeds: tuple[float, ...] = (1.0, 1.5, 0.8, 1.3),
        full_params: int = 0,
        spells: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.speeds, self.full_params, self.spells = speeds, full_params, spells
        self.state = self.unpruned = 0

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        m = super().measure_model(model, input_shape).scaled(self.speeds[self.state % len(self.speeds)])
        if sum(p.numel() for p in model.parameters()) < self.full_params:
            self.state += 1
            return m
        self.unpruned += 1
        return m.scaled(2.0) if self.unpruned in self.spells else m


@pytest.mark.parametrize(
    "spells",
    [frozenset(), frozenset({1}), frozenset(range(3, 40, 3))],
    ids=["no spell", "the first reading", "every third reading"],
)
def test_calibration_is_paired_so_a_drifting_machine_does_not_bend_the_fit(resnet20, spells) -> None:
    """Each plan is read beside the unpruned model: the machine's speed states cancel, the plans' ratios stay;
    an unpruned reading caught in a spell is taken again rather than scaling its plan down."""
    model, graph = resnet20
    truth = FakeProfiler(repeats=3)
    machine = Drifting(full_params=sum(p.numel() for p in model.parameters()), spells=spells, repeats=3)
    table, _ = profile_model(setting(calib_plans=6), None, progress=False, profiler=machine, model=model)
    cal = table.calibration
    ratios = [
        Measurement.from_dict(r["measurement"]).median_ms
        / truth.measure_model(apply_plan(model, _plan_of(r["keep"], graph), graph)[0], (2, 3, 16, 16)).median_ms
        for r in cal["plans"]
    ]
    assert max(ratios) / min(ratios) == pytest.approx(1.0)  # timed alone they would spread 0.8x-1.5x
    assert len(cal["alongside_ms"]) == 6 * table.required_rounds()
    assert cal["reference_ms"] == pytest.approx(statistics.median(cal["alongside_ms"]))
    full_ms = truth.measure_model(model, (2, 3, 16, 16)).median_ms
    assert {round(a / full_ms, 6) for a in cal["alongside_ms"]} <= set(machine.speeds)  # no spell was kept


def _plan_of(keep: dict[str, int], graph: ModelGraph) -> PruningPlan:
    return PruningPlan.full("resnet20", graph).with_keep(keep)


def test_lut_check_reads_plans_at_the_tables_speed(built, resnet20) -> None:
    """A machine twice as slow as at profiling: paired plans read as at profiling, plans timed alone twice as slow."""
    table, _ = built
    model, graph = resnet20
    plans = heldout_plans(table, graph, 3, seed=0)
    slow = Drifting(speeds=(2.0,), repeats=3)
    paired = check(table, model, graph, slow, plans, progress=False, measure=paired_meter(table, model, graph, slow))
    alone = check(table, model, graph, slow, plans, progress=False)
    for p, a in zip(paired["rows"], alone["rows"], strict=True):
        assert a["measured_ms"] == pytest.approx(2 * p["measured_ms"])
    assert paired["protocol"] == "paired" and alone["protocol"] == "alone"
    assert paired["unpruned_alongside"]["median_ms"] == pytest.approx(2 * table.calibration["reference_ms"])


def test_a_disturbed_calibration_falls_back_to_a_positive_scale(resnet20) -> None:
    class Backwards(FakeProfiler):
        def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
            params = sum(p.numel() for p in model.parameters())
            return Measurement([1e4 / params] * 3)  # smaller models "slower": a busy machine's story

    table, _ = profile_model(
        setting(calib_form="sum"), None, progress=False, profiler=Backwards(repeats=3), model=resnet20[0]
    )
    fit = table.calibration["fit"]
    assert fit["fallback"] and fit["coef"]["lut_sum_ms"] > 0 and fit["offset_ms"] == 0.0


@pytest.mark.parametrize(
    ("truth", "form"),
    [
        (lambda f: f["lut_sum_ms"], "identity"),
        (lambda f: 1.3 * f["lut_sum_ms"], "scale"),
        (lambda f: 1.1 * f["lut_sum_ms"] + 0.5, "sum"),
        (lambda f: 1.1 * f["lut_sum_ms"] + 0.3 * f["act_melems"] + 0.2, "sum+act"),
        (lambda f: f["lut_sum_ms"] - 0.01 * f["aligned_melems"], "scale+aligned"),
    ],
)
def test_auto_calibration_picks_the_form_that_predicts_unseen_plans(built, resnet20, truth, form) -> None:
    table, _ = built
    _, graph = resnet20
    sums = TableSum(table, graph)
    plans = calibration_plans("resnet20", graph, 10, 3, int(table.settings["quantum"]))
    rows = []
    for plan in plans:
        measured = Measurement([truth(sums.features(plan))])
        rows.append({"keep": plan.keep, "measurement": measured.to_dict()})
    result = fit(table, graph, rows, "auto")
    assert result["form"] == form, result["loo_median_abs_pct"]
    assert result["in_sample_max_abs_pct"] < 1e-6
    eager = copy.copy(table)
    eager.backend = "torch-cpu"  # runs op by op: no layout carried between layers, no aligned term
    assert "aligned" not in fit(eager, graph, rows, "auto")["form"]


def test_prune_takes_the_deployment_setting_it_is_not_given_from_the_lut(built) -> None:
    """`prune --lut T` without --backend/--batch/--threads deploys as T was profiled; what is given wins."""
    from hwprune.cli import build_parser
    from hwprune.commands.prune import settings_from_table

    parser = build_parser()
    args = parser.parse_args(["prune", "--checkpoint", "ck", "--out", "run", "--ratio", "0.5", "--lut", str(built[1])])
    settings_from_table(args)
    assert (args.backend, args.batch, args.threads) == ("fake", 2, 1)
    args = parser.parse_args(
        [
            "prune",
            "--checkpoint",
            "ck",
            "--out",
            "run",
            "--ratio",
            "0.5",
            "--lut",
            str(built[1]),
            "--backend",
            "onnxruntime",
            "--batch",
            "8",
        ]
    )
    settings_from_table(args)
    assert (args.backend, args.batch) == ("onnxruntime", 8)
    args = parser.parse_args(["prune", "--checkpoint", "ck", "--out", "run", "--ratio", "0.5"])
    settings_from_table(args)
    assert (args.backend, args.batch) == ("onnxruntime", 32)
