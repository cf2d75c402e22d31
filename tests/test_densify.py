"""Densify on use: a plan's off-grid widths are timed into the table, on the grid's clock, and searches see them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import FakeProfiler, setting

from hwprune.checkpoint import save_checkpoint
from hwprune.latency import LatencyTable, Predictor, Signature, profile_model
from hwprune.latency.build import BLOCK_WARMUP_S
from hwprune.latency.densify import densify, unmeasured_points
from hwprune.models import ModelSpec, create_model
from hwprune.profilers import BlockSpec, Measurement
from hwprune.pruning import ModelGraph, PruningPlan


class BlindSpots(FakeProfiler):
    """The fake device, ``slower`` times slower than when profiled, and ``off`` times that at widths off ``grid``."""

    def __init__(self, grid: set[tuple[int, int]], slower: float = 1.0, off: float = 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid, self.slower, self.off = grid, slower, off

    def measure_block(self, spec: BlockSpec) -> Measurement:
        m = super().measure_block(spec)
        factor = self.slower * (1 if (spec.c_in, spec.c_out) in self.grid else self.off)
        return Measurement([s * factor for s in m.samples_ms])


def _grid_points(table: LatencyTable) -> set[tuple[int, int]]:
    return {(ci, co) for _, ci, co in table.planned_points()}


def test_a_plans_off_grid_widths_are_measured_once_and_read_on_the_grids_clock(tmp_path: Path) -> None:
    model = create_model("resnet20", 3, 10)
    graph = ModelGraph(model, (3, 16, 16))
    table, _ = profile_model(
        setting(calib_plans=0), None, progress=False, profiler=FakeProfiler(repeats=3), model=model
    )
    plan = PruningPlan.full("resnet20", graph).with_keep({g.name: g.channels - 3 for g in graph.groups})
    points = unmeasured_points(table, graph, plan)
    assert points and all((ci, co) not in table.entries[sig] for sig, ci, co in points)
    before = Predictor(table, graph).predict_ms(plan)

    device = BlindSpots(_grid_points(table), slower=2.0, repeats=3)
    record = densify(table, graph, plan, device, out=tmp_path / "lut.json")

    assert record["scale"] == pytest.approx(0.5)  # the anchors read twice their stored times
    smooth = FakeProfiler(repeats=3)
    for sig, ci, co in points:  # 3x the smooth law, as on the grid's (faster) clock
        expected = 3 * smooth.measure_block(table.signatures[sig].block(ci, co)).median_ms
        assert table.lookup_ms(sig, ci, co) == pytest.approx(expected)
    assert Predictor(table, graph).predict_ms(plan) > 2 * before
    assert table.is_complete() and unmeasured_points(table, graph, plan) == []
    saved = LatencyTable.load(tmp_path / "lut.json")  # the new points are part of the checksummed record
    assert saved.entries == table.entries and saved.planned_points() == table.planned_points()

    timed = device.blocks
    assert densify(table, graph, plan, device)["points"] == [] and device.blocks == timed


def test_unstable_blocks_are_counted_not_warned_one_by_one() -> None:
    """A densify round on a busy machine reports how many blocks were unstable instead of a line per block."""
    from hwprune.profilers.base import UnstableMeasurementWarning

    class Busy(FakeProfiler):
        def measure_block(self, spec: BlockSpec) -> Measurement:
            warnings.warn("unstable timing of a block", UnstableMeasurementWarning, stacklevel=2)
            return super().measure_block(spec)

    model = create_model("resnet20", 3, 10)
    graph = ModelGraph(model, (3, 16, 16))
    table, _ = profile_model(
        setting(calib_plans=0), None, progress=False, profiler=FakeProfiler(repeats=3), model=model
    )
    plan = PruningPlan.full("resnet20", graph).with_keep({g.name: g.channels - 3 for g in graph.groups})
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        record = densify(table, graph, plan, Busy(repeats=3))
    assert not [w for w in escaped if issubclass(w.category, UnstableMeasurementWarning)]
    runs = (len(record["points"]) + len(record["anchors"])) * table.block_rounds()
    assert record["unstable_blocks"] == runs > 0  # every run of every block


def test_a_slow_spell_during_one_pass_does_not_reach_the_table() -> None:
    """Like the grid, each new width and anchor is timed in the table's passes and its faster run kept:
    a device 1.5x slower through the first half of the first pass (the anchors of some signatures and their
    widths, not the others: no anchor scale can undo that) stores what it reads once the spell is over."""
    model = create_model("resnet20", 3, 10)
    graph = ModelGraph(model, (3, 16, 16))
    table, _ = profile_model(
        setting(calib_plans=0, block_rounds=3), None, progress=False, profiler=FakeProfiler(repeats=3), model=model
    )
    plan = PruningPlan.full("resnet20", graph).with_keep({g.name: g.channels - 3 for g in graph.groups})
    points = unmeasured_points(table, graph, plan)
    per_pass = len(points) + len({sig for sig, _, _ in points})  # the new widths and one anchor per signature

    runs = [0]  # shared by the copy densify times with

    class Spell(FakeProfiler):
        def measure_block(self, spec: BlockSpec) -> Measurement:
            runs[0] += 1
            m = super().measure_block(spec)
            return m.scaled(1.5) if runs[0] <= per_pass // 2 else m

    record = densify(table, graph, plan, Spell(repeats=3))
    assert runs[0] == 3 * per_pass and record["scale"] == pytest.approx(1.0)
    smooth = FakeProfiler(repeats=3)
    for sig, ci, co in points:
        expected = smooth.measure_block(table.signatures[sig].block(ci, co)).median_ms
        assert table.value_ms(sig, ci, co) == pytest.approx(expected)


def test_the_next_search_reads_unmeasured_off_grid_widths_scaled_by_what_densify_found() -> None:
    """Off the grid the device runs 3x the (exact, bilinear) interpolation: once densify has measured some
    widths of a signature, its other off-grid widths read higher, shrunk towards the interpolation when
    the evidence is thin, while grid points, measured widths and untouched signatures read as before."""
    model = create_model("resnet20", 3, 10)
    graph = ModelGraph(model, (3, 16, 16))
    table, _ = profile_model(
        setting(calib_plans=0), None, progress=False, profiler=FakeProfiler(repeats=3), model=model
    )
    plan = PruningPlan.full("resnet20", graph).with_keep(  # stage 1 and the stem stay full: on the grid
        {g.name: g.channels - 3 for g in graph.groups if g.name.startswith(("layer2", "layer3"))}
    )
    points = unmeasured_points(table, graph, plan)
    sig, ci, co = next(p for p in points if table.grids[p[0]][0].c_in[0] + 1 < p[1] and len(table.grids[p[0]]) == 1)
    assert table.off_grid_factor(sig) == 1.0

    device = BlindSpots(_grid_points(table), off=3.0, repeats=3)
    record = densify(table, graph, plan, device)
    n = sum(p["signature"] == sig for p in record["points"])
    expected = 3.0 ** (n / (n + 2))
    assert record["off_grid_factors"][sig] == pytest.approx(expected) == table.off_grid_factor(sig)
    assert 1.0 < expected < 3.0

    grid = table.grids[sig][0]
    probe = next(
        (i, o)
        for i in range(grid.c_in[0], grid.c_in[-1])
        for o in range(grid.c_out[0], grid.c_out[-1])
        if (i, o) not in table.entries[sig]
    )
    plain = table.lookup_ms(sig, *probe, corrected=False)
    assert plain == pytest.approx(FakeProfiler(repeats=3).measure_block(table.signatures[sig].block(*probe)).median_ms)
    assert table.lookup_ms(sig, *probe) == pytest.approx(plain * expected)
    assert table.lookup_ms(sig, ci, co) == table.value_ms(sig, ci, co)  # measured: as measured
    grid_point = grid.points()[0]
    assert table.lookup_ms(sig, *grid_point) == table.value_ms(sig, *grid_point)
    untouched = [k for k in table.grids if k not in record["off_grid_factors"]]
    assert untouched and all(table.off_grid_factor(k) == 1.0 for k in untouched)


@pytest.mark.parametrize("off", [3.0, 0.3])
def test_a_plan_whose_prediction_moves_on_its_own_widths_is_searched_again(
    tmp_path: Path, monkeypatch, off: float
) -> None:
    """Off the grid the device is 3x (or 0.3x) what the table interpolates: the first plan would miss (or waste)
    the budget, so it must not be the one measured."""
    from hwprune.job import JobConfig, measure, run_job
    from hwprune.latency import plan_grids

    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    model = spec.build()
    save_checkpoint(tmp_path / "ck", model, spec, {"data": "synthetic", "seed": 0})
    graph = ModelGraph(model, (1, 32, 32))
    _, grids = plan_grids(graph, 2, (0.125, 0.25, 0.5, 0.75, 1.0), quantum=8)
    on_grid = {p for gs in grids.values() for g in gs for p in g.points()}

    warmups: dict[str, set[float]] = {"block": set(), "model": set()}  # shared by the copies the job makes

    class Device(BlindSpots):
        def measure_block(self, spec: BlockSpec) -> Measurement:
            warmups["block"].add(self.warmup_s)
            return super().measure_block(spec)

        def measure_model(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> Measurement:
            """A whole model costs what its layers cost as blocks, blind spots included."""
            warmups["model"].add(self.warmup_s)
            layers = ModelGraph(model, (1, 32, 32)).layer_shapes()
            blocks = [Signature.of(s, 2).block(s.c_in, s.c_out) for s in layers]
            return Measurement([sum(BlindSpots.measure_block(self, b).median_ms for b in blocks)] * 3)

    monkeypatch.setattr(measure, "get_profiler", lambda name, **kw: Device(on_grid, off=off, **kw))
    cfg = JobConfig(
        checkpoint=str(tmp_path / "ck"),
        out=str(tmp_path / "run"),
        budget="0.5x",
        agent="uniform",
        backend="fake",
        batch=2,
        rounds=1,
        settle_s=0.0,
        finetune_steps=2,
        batch_size=16,
        search_finetune_steps=0,
        val_samples=64,
        calibration_plans=0,
        max_tries=3,
        margin=0.2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the uncalibrated table sum is not the fake's whole-model law
        _, met = run_job(cfg)

    run = tmp_path / "run"
    tried = json.loads((run / "report.json").read_text())["search"]["tries"][0]
    first = tried["densified"][0]
    assert first["search"] == "search-1.json" and first["searched_again"]
    assert tried["target_ms"] >= first["predicted_before_ms"]
    if off > 1:
        assert first["predicted_after_ms"] > tried["target_ms"]
    else:
        assert first["predicted_after_ms"] < tried["target_ms"] * (1 - cfg.margin)
    assert (run / "search-1.2.json").is_file()
    final = PruningPlan.from_dict(tried["plan"])
    saved = LatencyTable.load(run / "lut.json")
    assert unmeasured_points(saved, graph, final) == []  # the plan measured on the device was priced as measured
    assert tried["predicted_ms"] == pytest.approx(Predictor(saved, graph).predict_ms(final))
    assert tried["cost"]["densify_s"] > 0 and met
    # Blocks, the grid's and densify's alike, are timed with the table's warm-up; whole models with the job's
    # (a timing that follows another in the same verdict, by count alone).
    assert warmups == {"block": {saved.settings["warmup_s"]}, "model": {cfg.warmup_s, 0.0}}
    assert saved.settings["warmup_s"] == BLOCK_WARMUP_S < cfg.warmup_s


@pytest.mark.parametrize(
    ("predicted", "measured"), [((11.0, 9.0, 12.0), 1), ((11.0, 10.4, 12.0), 1), ((11.0, 9.0, 9.9), 2)]
)
def test_a_try_that_runs_out_of_searches_measures_its_best_fitting_plan(
    tmp_path: Path, monkeypatch, predicted: tuple[float, ...], measured: int
) -> None:
    """Three searches against a 10 ms target: the widest plan under it is measured (9.0 of 11/9/12; 9.9, the
    last, in band, of 11/9/9.9), or the narrowest when none fits (10.4 of 11/10.4/12), never a plain last plan
    predicted over the target."""
    from types import SimpleNamespace

    from hwprune.agents import SearchResult
    from hwprune.job import search_try

    plans = [SimpleNamespace(ms=ms) for ms in predicted]
    found = iter(plans)
    cfg, loaded, ctx = _fake_search(
        monkeypatch, lambda ctx, target, path, start=None: SearchResult(next(found), [], {"wall_s": 1.0})
    )

    _, result, _ = search_try.search_try(cfg, loaded, tmp_path, ctx, None, 10.0, 1)

    assert result.plan is plans[measured]
    assert result.cost["wall_s"] == 3.0  # every search's cost counts


def test_a_resumed_try_still_reports_the_densify_round_it_did_before_the_interrupt(tmp_path: Path, monkeypatch) -> None:
    """Search 1 is densified and searched again; Ctrl-C during search 2; the resumed try's record keeps round 1."""
    from types import SimpleNamespace

    from hwprune.agents import SearchResult
    from hwprune.job import search_try

    finished: dict[str, SearchResult] = {}  # what the agent's state files would hold
    plans = {"search-1.json": SimpleNamespace(ms=12.0), "search-1.2.json": SimpleNamespace(ms=9.8)}
    interrupt = [True]

    def search(ctx, target, path, start=None):  # noqa: ANN001, ANN202
        if path.name == "search-1.2.json" and interrupt[0]:
            path.write_text("{}")  # the search had started (its state file exists) when Ctrl-C came
            raise KeyboardInterrupt
        finished[path.name] = SearchResult(plans[path.name], [], {"wall_s": 1.0})
        return finished[path.name]

    timed = {9.8}  # search 2's plan needs no new widths

    def fake_densify(table, graph, plan, profiler, out=None):  # noqa: ANN001, ANN202
        new = [] if plan.ms in timed else [["sig", 3, 5]]
        timed.add(plan.ms)
        return {"points": new, "anchors": [], "scale": 1.0, "off_grid_factors": {}, "seconds": 2.0 if new else 0.0}

    monkeypatch.setattr(search_try, "get_agent", lambda name, **kw: SimpleNamespace(search=search))
    monkeypatch.setattr(search_try, "finished_result", lambda path: finished.get(Path(path).name))
    monkeypatch.setattr(search_try, "densify", fake_densify)
    monkeypatch.setattr(search_try, "Predictor", lambda table, graph: None)
    monkeypatch.setattr(search_try, "replace", lambda ctx, **kw: ctx)
    ctx = SimpleNamespace(predict_ms=lambda plan: plan.ms)
    cfg = SimpleNamespace(agent="fake", agent_options={}, densify=True, margin=0.05)
    loaded = SimpleNamespace(graph=None, profiler=None)

    with pytest.raises(KeyboardInterrupt):
        search_try.search_try(cfg, loaded, tmp_path, ctx, None, 10.0, 1)
    interrupt[0] = False
    _, result, rounds = search_try.search_try(cfg, loaded, tmp_path, ctx, None, 10.0, 1)

    assert result.plan is plans["search-1.2.json"]
    assert [r["search"] for r in rounds] == ["search-1.json"] and rounds[0]["searched_again"]
    assert result.cost["densify_s"] == 2.0


def test_a_missed_plan_is_not_admitted_again_by_the_tightened_target() -> None:
    """A plan predicted far under its target that misses: the next target lies under that plan's prediction.

    The numbers are MobileNetV2's uniform 0.5x cell, which tightened the old target instead, measured
    the same 23.6 ms plan three times and failed.
    """
    from hwprune.job.targets import next_target

    target = next_target(30.765, 23.603, budget_ms=27.286, measured_ms=28.5, margin=0.05)
    assert target < 23.603
    assert target == pytest.approx(23.603 * 27.286 * 0.95 / 28.5)
    # a plan predicted over its target (within the densify tolerance) is scaled from the target
    assert next_target(10.0, 10.04, budget_ms=10.0, measured_ms=12.0, margin=0.05) == pytest.approx(10.0 * 9.5 / 12)


def test_a_relative_budget_s_first_target_takes_the_lower_of_the_table_s_unpruned_prediction_and_reference() -> None:
    """The numbers are the 1-thread demo table's: it predicted the unpruned ResNet-20 at 25.13 ms, 6.6 % over
    the readings its calibration was paired with (23.57), and the first plan found at half of 25.13 missed.
    An absolute budget, and a table without calibration, keep the budget as it is."""
    from types import SimpleNamespace

    from hwprune.agents import Budget
    from hwprune.job.targets import first_target

    paired = SimpleNamespace(calibration={"reference_ms": 23.573})
    half = Budget("0.5x", 11.48, 0.5)
    assert first_target(half, 25.127, paired, margin=0.05) == pytest.approx(0.5 * 23.573 * 0.95)
    assert first_target(half, 22.0, paired, margin=0.05) == pytest.approx(0.5 * 22.0 * 0.95)  # the fit lower
    bare = SimpleNamespace(calibration=None)
    assert first_target(half, 25.127, bare, margin=0.05) == pytest.approx(0.5 * 25.127 * 0.95)
    assert first_target(Budget("10ms", 10.0), 25.127, paired, margin=0.05) == pytest.approx(9.5)


def test_slack_searches_wider_only_when_the_loosened_target_can_find_a_wider_plan() -> None:
    """Far under the budget with a target that grows: search wider. Within the slack, with slack off, or
    when the loosened target is not over the old one (MobileNetV2 uniform 0.3x, which measured the same
    plan again for nothing): no."""
    from hwprune.agents import Budget
    from hwprune.job.measure import Judged
    from hwprune.job.targets import wider_target
    from hwprune.profilers import Measurement

    def judged(measured_ms: float, budget_ms: float) -> Judged:
        return Judged(Measurement([measured_ms] * 3), None, Budget(f"{budget_ms}ms", budget_ms))

    looser = wider_target(6.0, 5.9, judged(4.0, 6.0), margin=0.05, slack=0.1)  # used 67 %
    assert looser == pytest.approx(5.9 * 6.0 * 0.95 / 4.0) and looser > 6.0
    assert wider_target(6.0, 5.9, judged(5.5, 6.0), margin=0.05, slack=0.1) is None  # used 92 %
    assert wider_target(6.0, 5.9, judged(4.0, 6.0), margin=0.05, slack=0.0) is None  # off
    assert wider_target(11.192, 9.776, judged(10.531, 12.370), margin=0.05, slack=0.1) is None  # 10.91 < 11.19


def test_targets_after_a_miss_are_held_under_where_the_miss_puts_the_budget() -> None:
    """ResNet-20 0.5x at 305f679. Uniform: try 1 (6.612 ms predicted) measured 7.314 against 7.238, try 2
    used 76 %, and its looser target, 7.092, found try 1's plan again. Held under the miss, the target
    stops at 6.543, under that plan's prediction and over try 2's target. NetAdapt's looser 6.130 lay
    under its own miss (6.344) and stands. A search between aims with the margin, as after any miss."""
    from hwprune.agents import Budget
    from hwprune.job.targets import under_misses
    from hwprune.profilers import Measurement

    def tried(target_ms: float, predicted_ms: float, measured_ms: float, unpruned_ms: float) -> dict:
        return {
            "target_ms": target_ms,
            "predicted_ms": predicted_ms,
            "measured": Measurement([measured_ms] * 3).to_dict(),
            "unpruned_measured": Measurement([unpruned_ms] * 3).to_dict(),
        }

    half = Budget("0.5x", 7.24, 0.5)
    uniform = [tried(7.317, 6.612, 7.314, 14.476), tried(6.216, 5.734, 5.974, 15.556)]
    held = under_misses(6.216, 7.092, uniform, half, margin=0.05, reserve=0.0)
    assert held == pytest.approx(6.612 * 7.238 / 7.314) and 6.216 < held < 6.612
    assert under_misses(6.6, 7.092, uniform, half, margin=0.05, reserve=0.0) is None  # no room over 6.6
    between = under_misses(6.0, float("inf"), uniform, half, margin=0.05, reserve=0.05)
    assert between == pytest.approx(6.612 * 7.238 * 0.95 / 7.314)
    netadapt = [tried(7.317, 6.820, 8.281, 15.406), tried(6.026, 5.713, 6.475, 14.628)]
    assert under_misses(6.026, 6.130, netadapt, half, margin=0.05, reserve=0.0) == pytest.approx(6.130)
    assert under_misses(6.026, 6.130, netadapt[1:], half, margin=0.05, reserve=0.0) == pytest.approx(6.130)


def test_each_search_of_a_try_is_handed_the_one_before_to_continue(tmp_path: Path, monkeypatch) -> None:
    """The first search gets the last try's result, each later one the search before it (NetAdapt continues them)."""
    from types import SimpleNamespace

    from hwprune.agents import SearchResult
    from hwprune.job import search_try

    previous = SearchResult(SimpleNamespace(ms=14.0), [], {"wall_s": 1.0})
    found = iter([SearchResult(SimpleNamespace(ms=ms), [], {"wall_s": 1.0}) for ms in (11.0, 9.9)])
    starts: list[SearchResult | None] = []

    def search(ctx, target, path, start=None):  # noqa: ANN001, ANN202
        starts.append(start)
        return next(found)

    cfg, loaded, ctx = _fake_search(monkeypatch, search)  # 11 ms: over the 10 ms target, so searched again

    _, result, _ = search_try.search_try(cfg, loaded, tmp_path, ctx, None, 10.0, 2, previous)

    assert result.plan.ms == 9.9
    assert starts[0] is previous and starts[1].plan.ms == 11.0


def test_a_search_far_under_its_target_is_not_repeated_when_nothing_new_was_timed(tmp_path: Path, monkeypatch) -> None:
    """The plan overshot its target by more than the margin, but densify timed no new width: the same table
    searched again gives the same plan, so it is measured as it is."""
    from types import SimpleNamespace

    from hwprune.agents import SearchResult
    from hwprune.job import search_try

    paths: list[str] = []

    def search(ctx, target, path, start=None):  # noqa: ANN001, ANN202
        paths.append(path.name)
        return SearchResult(SimpleNamespace(ms=8.0), [], {"wall_s": 1.0})

    cfg, loaded, ctx = _fake_search(monkeypatch, search)
    monkeypatch.setattr(search_try, "densify", lambda *a, **kw: {"points": [], "seconds": 0.0})

    _, result, rounds = search_try.search_try(cfg, loaded, tmp_path, ctx, None, 10.0, 1)

    assert paths == ["search-1.json"] and rounds == [] and result.plan.ms == 8.0


def _fake_search(monkeypatch, search):  # noqa: ANN001, ANN202
    """``search_try.search_try``'s collaborators faked: ``search`` as the agent's, a densify that times one new
    width per round (a search is repeated only when the table changed), predictions read off ``plan.ms``."""
    from types import SimpleNamespace

    from hwprune.job import search_try

    def densify(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return {"points": [["sig", 3, 5]], "anchors": [], "scale": 1.0, "off_grid_factors": {}, "seconds": 0.0}

    monkeypatch.setattr(search_try, "get_agent", lambda name, **kw: SimpleNamespace(search=search))
    monkeypatch.setattr(search_try, "densify", densify)
    monkeypatch.setattr(search_try, "Predictor", lambda table, graph: None)
    monkeypatch.setattr(search_try, "replace", lambda ctx, **kw: ctx)
    cfg = SimpleNamespace(agent="fake", agent_options={}, densify=True, margin=0.05)
    return cfg, SimpleNamespace(graph=None, profiler=None), SimpleNamespace(predict_ms=lambda plan: plan.ms)
