"""--criterion through the job: recorded in plan, artifact and report; threaded to the evaluator and the final cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FakeProfiler
from test_prune_cli import FAST, _half_budget_on, _one_error_line

from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.cli import main
from hwprune.data import load_data
from hwprune.evaluator import Evaluator
from hwprune.job.run import plan_by_criterion
from hwprune.models import ModelSpec
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan, filter_importance, load_pruned
from hwprune.pruning.plan import GroupPlan

SPEC = ModelSpec("resnet20", 1, 10, (32, 32))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "resnet20"
    save_checkpoint(out, SPEC.build(), SPEC, {"data": "synthetic", "seed": 0})
    return out


def _prune(checkpoint: Path, out: Path, *args: str) -> int:
    return main(["prune", "--checkpoint", str(checkpoint), "--out", str(out), *args, *FAST])


@pytest.fixture
def fake_device(monkeypatch) -> None:
    """Latency is not the point here: a fake profiler instead of timing each model."""
    from hwprune.job import measure

    monkeypatch.setattr(measure, "get_profiler", lambda name, **kw: FakeProfiler(**kw))


@pytest.mark.usefixtures("fake_device")
def test_ratio_run_records_its_criterion_and_a_plan_reapplies_or_rechooses(checkpoint: Path, tmp_path: Path) -> None:
    run = tmp_path / "fpgm"
    assert _prune(checkpoint, run, "--ratio", "0.5", "--criterion", "fpgm") == 0
    plan = PruningPlan.load(run / "plan.json")
    _, _, artifact_plan = load_pruned(run / "model")
    report = json.loads((run / "report.json").read_text())
    assert plan.criterion == artifact_plan.criterion == report["criterion"] == "fpgm"
    assert "criterion `fpgm`" in (run / "report.md").read_text()
    job = json.loads((run / "job.json").read_text())
    assert job["config"]["criterion"] == "fpgm"

    # Without --criterion a plan's recorded filters are cut again as they are; with another, re-chosen.
    same, other = tmp_path / "same", tmp_path / "l1"
    assert _prune(checkpoint, same, "--plan", str(run / "plan.json")) == 0
    assert PruningPlan.load(same / "plan.json") == plan
    assert _prune(checkpoint, other, "--plan", str(run / "plan.json"), "--criterion", "l1") == 0
    rechosen = PruningPlan.load(other / "plan.json")
    assert rechosen.criterion == "l1" and rechosen.keep == plan.keep and rechosen != plan


def test_an_unknown_criterion_is_one_line_naming_the_choices(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _prune(checkpoint, out, "--ratio", "0.5", "--criterion", "taylr") == 2
    assert "unknown criterion 'taylr': choose one of l2, l1, fpgm, taylor, random" in _one_error_line(capsys)
    assert not out.exists()


def _counts(plan: PruningPlan) -> PruningPlan:
    return PruningPlan(plan.model, {n: GroupPlan(g.original, g.keep) for n, g in plan.groups.items()})


def test_plan_by_criterion() -> None:
    indexed = PruningPlan("m", {"a": GroupPlan(4, 2, (0, 3))}, "fpgm")
    counts = _counts(indexed)
    # (plan, --criterion) -> (plan applied, criterion that chooses)
    cases = [
        (indexed, None, indexed, "fpgm"),  # its own filters, as recorded
        (indexed, "fpgm", indexed, "fpgm"),
        (indexed, "l1", counts, "l1"),  # re-chosen: counts kept, indices dropped
        (counts, None, counts, "l2"),  # the default
        (counts, "taylor", counts, "taylor"),
    ]
    for plan, requested, want, criterion in cases:
        assert plan_by_criterion(plan, requested) == (want, criterion), (plan, requested)


def test_a_budgeted_run_cuts_its_final_model_by_the_criterion(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    report, met = _half_budget_on(FakeProfiler(), checkpoint, tmp_path / "run", monkeypatch, criterion="random")
    assert met and report["criterion"] == "random"
    _, _, plan = load_pruned(tmp_path / "run" / "model")
    model, _, _ = load_checkpoint(checkpoint)
    graph = ModelGraph(model, (1, 32, 32))
    _, expected = apply_plan(model, _counts(plan), graph, filter_importance(model, graph, "random", seed=0))
    assert plan == expected


def test_the_evaluator_scores_each_model_state_once(monkeypatch) -> None:
    """Taylor's gradients are computed once for the original model however many plans are scored."""
    import hwprune.evaluator as evaluator_module

    calls = []

    def counting(model, graph, criterion, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(criterion)
        return filter_importance(model, graph, criterion, *args, **kwargs)

    monkeypatch.setattr(evaluator_module, "filter_importance", counting)
    model = SPEC.build().eval()
    graph = ModelGraph(model, (1, 32, 32))
    data = load_data("synthetic", seed=0)
    ev = Evaluator(model, graph, data, val_samples=16, criterion="taylor", taylor_batches=1)
    plans = [PruningPlan.uniform("resnet20", graph, r) for r in (0.3, 0.5, 0.7)]
    for plan in plans:
        ev.score(plan)
    _, cut = ev.cut(plans[0])
    assert calls == ["taylor"] and cut.criterion == "taylor"
    # A lineage's parent is a new model state: scored once more, then reused by its candidates.
    first = plans[2]
    ev.score(plans[1], (first,))
    ev.score(plans[0], (first,))
    assert calls == ["taylor", "taylor"]
    assert ev.carried((first,))[1].criterion == "taylor"
