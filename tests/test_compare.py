"""`hwprune compare` end to end on a tiny checkpoint and a fake device, and its pure parts."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
from conftest import FakeProfiler
from test_prune_cli import checkpoint  # noqa: F401 - the tiny checkpoint fixture, module-scoped

from hwprune.cli import main
from hwprune.compare import Cell, outcomes_of, plan_cells, runner
from hwprune.compare.results import COLUMNS
from hwprune.errors import BudgetError, ConfigError
from hwprune.job import measure
from hwprune.job.report import threads_phrase
from hwprune.latency import FlopsPredictor
from hwprune.models import ModelSpec
from hwprune.pruning import ModelGraph, PruningPlan

TINY = [
    "--backend",
    "fake",
    "--batch",
    "2",
    "--repeats",
    "3",
    "--runs",
    "1",
    "--rounds",
    "1",
    "--settle-s",
    "0",
    "--finetune-steps",
    "2",
    "--batch-size",
    "16",
    "--search-finetune-steps",
    "0",
    "--val-samples",
    "64",
    "--calibration-plans",
    "4",
    "--max-tries",
    "2",
    "--margin",
    "0.2",
]
LEGR = ["legr.population=2", "legr.tournament=1", "legr.generations=1", "legr.progress=false"]
"""A LeGR search of three scores: enough to learn a ranking the other budget thresholds."""
LEGR_OPTIONS = [a for o in LEGR for a in ("--agent-option", o)]


@pytest.fixture
def device(monkeypatch) -> list[str]:
    """A fake device for every job; returns the list of run directories whose jobs started (in order)."""
    monkeypatch.setattr(measure, "get_profiler", lambda name, **kw: FakeProfiler(**kw))
    started: list[str] = []
    real = runner.run_job

    def run_job(cfg, **kw):  # noqa: ANN001, ANN003, ANN202
        started.append(Path(cfg.out).name)
        return real(cfg, **kw)

    monkeypatch.setattr(runner, "run_job", run_job)
    return started


def _compare(*args: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake device's timing-noise and busier-machine warnings
        return main(["compare", *args])


def test_a_compare_writes_results_plot_and_report_and_resumes_without_rerunning(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    device: list[str],
    capsys,
) -> None:
    out = tmp_path / "cmp"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--budgets", "0.6x,0.4x"]
    matrix = ["--agents", "uniform,legr", "--twins", "uniform", "--distill", "0.5"]
    assert _compare(*args, *matrix, *LEGR_OPTIONS, *TINY) == 0
    names = ["unpruned-finetuned", "uniform-0.4x", "legr-0.4x", "uniform-0.4x-macs"]
    names += ["uniform-0.6x", "legr-0.6x", "uniform-0.6x-macs"]
    assert device == names  # the control, then the learn-at (middle) budget first; one table, profiled once
    assert (out / "lut.json").is_file() and not any((out / "cells").glob("*/lut.json.tmp"))
    printed = capsys.readouterr().out
    assert "compare: cell 1 of 7: unpruned model + the same fine-tune" in printed
    assert "compare: cell 7 of 7: uniform at 0.6x, MACs-targeted twin" in printed and "left for" in printed

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and [r["cell"] for r in rows] == names
    data = json.loads((out / "results.json").read_text())
    assert data["kind"] == "compare-results" and [r["cell"] for r in data["rows"]] == names
    by = {r["cell"]: r for r in data["rows"]}
    control = by["unpruned-finetuned"]
    assert control["predictor"] == "none" and control["budget_met"] is None and control["accuracy_change"] == 0
    assert control["finetune_steps"] == 2 and control["macs_fraction"] == 1
    for name in names[1:]:
        r = by[name]
        assert r["status"] == "done" and r["measured_ms"] > 0 and r["measured_iqr_ms"] >= 0
        assert r["macs"] < control["macs"] and r["params"] < control["params"]
        assert r["test_accuracy"] - control["test_accuracy"] == pytest.approx(r["accuracy_change"])
        assert r["accuracy_change_vs_checkpoint"] == pytest.approx(
            r["test_accuracy"] - data["references"]["checkpoint_test_accuracy"]
        )
        assert isinstance(r["budget_met"], bool) and r["tries"] >= 1 and r["finetune_steps"] == 2
        assert r["predictor"] == ("macs" if name.endswith("-macs") else "table")
    # The twin searched for exactly the budget's share of the MACs: its prediction is that share of the scale.
    twin = json.loads((out / "cells" / "uniform-0.4x-macs" / "report.json").read_text())
    assert twin["search"]["predictor"]["name"] == "flops" and len(twin["search"]["tries"]) == 1
    assert twin["search"]["tries"][0]["target_ms"] == pytest.approx(twin["budget"]["ms_at_start"])
    assert by["uniform-0.4x-macs"]["macs_fraction"] <= 0.4
    assert "share of the unpruned MACs" in (out / "cells" / "uniform-0.4x-macs" / "report.md").read_text()
    assert "comes from the latency table" in (out / "cells" / "uniform-0.4x" / "report.md").read_text()
    assert by["legr-0.4x"]["evaluations"] > 0 and by["uniform-0.4x"]["evaluations"] == 0
    # LeGR learned its ranking once, at the learn-at budget; the other budget thresholded it, evaluating nothing.
    assert by["legr-0.6x"]["ranking_from"] == "legr-0.4x" and by["legr-0.6x"]["evaluations"] == 0
    legr = json.loads((out / "cells" / "legr-0.6x" / "job.json").read_text())["config"]
    assert legr["ranking"] == str(out / "cells" / "legr-0.4x" / "ranking.json")

    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    text = (out / "report.md").read_text()
    assert "![test accuracy against measured latency](pareto.png)" in text
    assert "| uniform | macs | 0.4x |" in text and "Device fingerprint: backend=fake" in text
    threads = threads_phrase(
        json.loads((out / "cells" / "uniform-0.4x" / "report.json").read_text())["deployment"]["threads"]
    )
    assert f"batch 2, {threads}, seed 0" in text  # the device's own count, worded as a cell's report words it
    assert f"{threads}. Latency" in (out / "cells" / "uniform-0.4x" / "report.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("hwprune compare "))
    assert "--budgets 0.6x,0.4x --agents uniform,legr --twins uniform" in command
    assert "--agent-option legr.generations=1" in command
    assert "--backend fake" in command and "--finetune-steps 2" in command and "--margin 0.2" in command
    # Every cell, the control too, was taught by the unpruned model: the same fine-tune for all.
    assert "--distill 0.5" in command and "2-step fine-tune (distilled from the unpruned model, weight 0.5)" in text
    assert {json.loads((out / "cells" / n / "report.json").read_text())["finetune"]["distill"] for n in names} == {0.5}

    # --resume: every finished cell is read back, none is run again.
    device.clear()
    (out / "report.md").unlink()
    assert _compare("--resume", str(out)) == 0
    assert device == [] and (out / "report.md").read_text() == text


def test_resume_continues_an_interrupted_cell_and_skips_finished_ones(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    device: list[str],
    monkeypatch,
    capsys,
) -> None:
    """Ctrl-C in the second cell's long fine-tune: --resume runs neither the first cell again nor the second
    from scratch (its run directory resumes), then the third."""
    out = tmp_path / "cmp"
    real = measure.long_finetune
    calls: list[str] = []

    def interrupting(cfg, loaded, model):  # noqa: ANN001, ANN202
        calls.append(Path(cfg.out).name)
        if Path(cfg.out).name == "uniform-0.5x":
            raise KeyboardInterrupt
        return real(cfg, loaded, model)

    monkeypatch.setattr(measure, "long_finetune", interrupting)
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--budgets", "0.5x", "--agents", "uniform,legr"]
    assert _compare(*args, "--twins", "none", *LEGR_OPTIONS, *TINY) == 130
    assert "continue with: hwprune compare --resume" in capsys.readouterr().err
    assert device == ["unpruned-finetuned", "uniform-0.5x"] and (out / "cells" / "uniform-0.5x" / "job.json").exists()

    monkeypatch.setattr(measure, "long_finetune", real)
    device.clear()
    assert _compare("--resume", str(out)) == 0
    assert device == ["uniform-0.5x", "legr-0.5x"]
    assert (out / "cells" / "uniform-0.5x" / "search-1.json").is_file()  # the search it had finished, kept
    _, outcomes = outcomes_of(out)
    assert [o.status for o in outcomes] == ["done"] * 3


def test_a_failed_cell_is_recorded_and_the_rest_runs(
    checkpoint: Path,  # noqa: F811
    tmp_path: Path,
    device: list[str],
) -> None:
    """0.001x is under what any plan can reach: that cell fails with its one-line reason; the other budget runs,
    the failure lands in every output, and --resume does not retry it."""
    out = tmp_path / "cmp"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--budgets", "0.5x,0.001x", "--agents", "uniform"]
    assert _compare(*args, "--twins", "none", "--no-control", *TINY) == 1  # every file written, one cell failed
    rows = json.loads((out / "results.json").read_text())["rows"]
    done, failed = rows  # in the order given: no LeGR, so no budget runs first
    assert (failed["cell"], failed["status"]) == ("uniform-0.001x", "failed") and "\n" not in failed["reason"]
    assert "budget" in failed["reason"] and failed["measured_ms"] is None and failed["accuracy_change"] is None
    assert done["status"] == "done" and done["accuracy_change"] is None  # no control: nothing to change against
    assert not (out / "cells" / "uniform-0.001x").exists()  # the job removed its fresh run
    report = (out / "report.md").read_text()
    assert "- `uniform-0.001x`: " in report
    command = next(line for line in report.splitlines() if line.startswith("hwprune compare "))
    assert "--twins none" in command and '""' not in command  # what the options parse back as no twins
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    device.clear()
    assert _compare("--resume", str(out)) == 1 and device == []


def test_a_legr_cell_without_its_ranking_fails_without_running() -> None:
    from hwprune.compare.config import CompareConfig
    from hwprune.compare.runner import CellOutcome, run_cell

    cfg = CompareConfig(checkpoint="ck", out="/nonexistent/cmp", budgets=["0.5x", "0.3x"], agents=["legr"], twins=[])
    cell = cfg.cells()[-1]  # a budget that thresholds the ranking learned by another cell
    source = next(c for c in cfg.cells() if c.name == cell.ranking_from)
    learned = CellOutcome(source, Path("/nonexistent"), "failed", "no plan met the budget")
    outcome = run_cell(cfg, cell, [learned], None)  # refused before any input is needed
    assert not outcome.ran and outcome.status == "failed"
    assert f"{source.name} failed (no plan met the budget)" in outcome.reason


# ---- the pure parts -----------------------------------------------------------------------------


def test_the_matrix_runs_the_control_then_the_learn_at_budget_first_and_legr_thresholds_its_ranking() -> None:
    cells = plan_cells(["0.7x", "0.5x", "0.3x"], ["uniform", "legr"], ["uniform", "legr"])
    assert [c.name for c in cells] == [
        "unpruned-finetuned",
        "uniform-0.5x",
        "legr-0.5x",
        "uniform-0.5x-macs",
        "legr-0.5x-macs",
        "uniform-0.7x",
        "legr-0.7x",
        "uniform-0.7x-macs",
        "legr-0.7x-macs",
        "uniform-0.3x",
        "legr-0.3x",
        "uniform-0.3x-macs",
        "legr-0.3x-macs",
    ]
    by = {c.name: c for c in cells}
    assert by["legr-0.7x"].ranking_from == "legr-0.5x" and by["legr-0.3x-macs"].ranking_from == "legr-0.5x-macs"
    assert by["legr-0.5x"].ranking_from is None and by["uniform-0.3x"].ranking_from is None
    assert [c.name for c in plan_cells(["4ms", "2ms"], ["legr"], [], "4ms", control=False)] == ["legr-4ms", "legr-2ms"]
    no_legr = plan_cells(["0.7x", "0.5x", "0.3x"], ["uniform"], [], control=False)
    assert [c.name for c in no_legr] == ["uniform-0.7x", "uniform-0.5x", "uniform-0.3x"]
    assert Cell(None, "none", None).label == "unpruned model + the same fine-tune"


def test_netadapt_cells_continue_the_path_of_the_tightest_budget_run_before() -> None:
    cells = {c.name: c for c in plan_cells(["0.7x", "0.5x", "0.3x", "4ms"], ["netadapt", "legr"], ["netadapt"], "0.5x")}
    assert cells["netadapt-0.5x"].path_from is None  # LeGR learns at 0.5x, so it runs first
    assert cells["netadapt-0.7x"].path_from == "netadapt-0.5x" and cells["netadapt-0.3x"].path_from == "netadapt-0.5x"
    assert cells["netadapt-0.3x-macs"].path_from == "netadapt-0.5x-macs" and cells["netadapt-4ms"].path_from is None
    assert cells["legr-0.3x"].path_from is None
    in_order = {c.name: c.path_from for c in plan_cells(["0.7x", "0.5x", "0.3x"], ["netadapt"], [], control=False)}
    assert in_order == {"netadapt-0.7x": None, "netadapt-0.5x": "netadapt-0.7x", "netadapt-0.3x": "netadapt-0.5x"}


@pytest.mark.parametrize(
    ("budgets", "learn_at", "error", "match"),
    [
        (["0.5x", "0.5x"], None, ConfigError, "more than once"),
        (["half"], None, BudgetError, "malformed budget"),
        ([], None, ConfigError, "empty"),
        (["0.7x", "0.5x"], "0.3x", ConfigError, "not one of --budgets"),  # with legr among the agents
    ],
)
def test_a_bad_matrix_is_refused(budgets: list[str], learn_at: str | None, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        plan_cells(budgets, ["uniform", "legr"], [], learn_at)


@pytest.mark.parametrize(("threads", "said"), [(1, "1 thread"), (2, "2 threads"), (None, "all threads")])
def test_reports_say_the_thread_count_in_words(threads: int | None, said: str) -> None:
    assert threads_phrase(threads) == said


def test_the_macs_predictor_is_proportional_to_macs() -> None:
    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    graph = ModelGraph(spec.build(), (1, 32, 32))
    predictor = FlopsPredictor(graph, full_ms=8.0)
    full = PruningPlan.full("resnet20", graph)
    half = PruningPlan.uniform("resnet20", graph, 0.5)
    macs = [sum(s.macs for s in graph.layer_shapes(p.keep)) for p in (full, half)]
    assert predictor.predict_ms(full) == pytest.approx(8.0)
    assert predictor.predict_ms(half) == pytest.approx(8.0 * macs[1] / macs[0])
    assert 0.2 < macs[1] / macs[0] < 0.35  # halving channels quarters most convolutions' MACs

    from hwprune.agents import Budget
    from hwprune.job.macs_twin import macs_predictor

    class Loaded:
        pass

    loaded = Loaded()
    loaded.graph = graph
    budget = Budget("0.5x", 4.0, 0.5)  # fixed from an unpruned model measured at 8 ms
    twin = macs_predictor(loaded, budget, base=None)  # type: ignore[arg-type]
    assert twin.predict_ms(full) == pytest.approx(8.0)  # so the 4 ms target is exactly half the MACs
    assert twin.predict_ms(half) / twin.predict_ms(full) == pytest.approx(macs[1] / macs[0])
