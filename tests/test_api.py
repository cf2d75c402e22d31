"""The Python API: profile, predict, check, prune with the user's own score / finetune, save and load.

Latency is not the point here: the device is a fake whose whole-model time is proportional to the
parameter count (so half the parameters is half the latency), and every number is deterministic.
"""

from __future__ import annotations

import json
import logging
import math
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FakeProfiler
from torch import nn

import hwprune
from hwprune.errors import ArtifactError, ConfigError, HwpruneError
from hwprune.profilers import available_profilers, register_profiler
from hwprune.user_training import UserTraining, as_score

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 8, 8)
LIGHT = {"rounds": 1, "settle_s": 0.0, "calibration_plans": 3, "progress": False}


class Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Tiny(nn.Module):
    """A user's own model: conv+BN+ReLU blocks with a residual add, no registry name."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem, self.res, self.down = Block(3, 16), Block(16, 16), Block(16, 32, 2)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.res(x)
        return self.head(self.down(x).mean((2, 3)))


@register_profiler
class ParamsDevice(FakeProfiler):
    """Whole-model latency proportional to the parameters: pruning half of them halves it."""

    name = "test-api-params"

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> hwprune.Measurement:
        return hwprune.Measurement([sum(p.numel() for p in model.parameters()) * 1e-3] * 3)


def device() -> ParamsDevice:
    return ParamsDevice(threads=1, repeats=3, runs=1, warmup=0, warmup_s=0.0)


def _table(model: nn.Module, **kw: Any) -> hwprune.LatencyTable:
    return hwprune.profile(
        model, SHAPE, backend=device(), batch=2, grid=(0.25, 0.5, 1.0), calib_plans=3, quantum=1, progress=False, **kw
    )


@pytest.fixture(scope="module")
def trained() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def table(trained: Tiny) -> hwprune.LatencyTable:
    return _table(trained)


class Calls:
    """The user's functions, counting their calls: score rewards kept parameters, finetune nudges the weights."""

    def __init__(self) -> None:
        self.scores = 0
        self.finetunes: list[int] = []

    def score(self, model: nn.Module) -> float:
        self.scores += 1
        assert not model.training  # hwprune scores in eval mode
        return sum(p.numel() for p in model.parameters()) / 1e4

    def finetune(self, model: nn.Module, steps: int) -> None:
        assert model.training
        self.finetunes.append(steps)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-4 * torch.randn_like(p))  # seeded by hwprune: a plan scores the same each time


@pytest.fixture(scope="module")
def pruned(trained: Tiny, table: hwprune.LatencyTable, tmp_path_factory) -> tuple[hwprune.PruneResult, Calls, Path]:
    calls, out = Calls(), tmp_path_factory.mktemp("api") / "run"
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake device's timing warnings
        result = hwprune.prune(
            trained,
            SHAPE,
            budget="0.5x",
            table=table,
            backend=device(),
            score=calls.score,
            finetune=calls.finetune,
            finetune_steps=3,
            search_finetune_steps=1,
            out=out,
            **LIGHT,
        )
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())  # the user's model is untouched
    return result, calls, out


# ---- import ---------------------------------------------------------------------------------------


def test_import_hwprune_stays_cheap_and_registers_the_env() -> None:
    code = (
        "import sys, gymnasium, hwprune; "
        "assert 'torch' not in sys.modules, 'import hwprune pulled in torch'; "
        "assert hwprune.ENV_ID in gymnasium.registry; "
        "assert callable(hwprune.prune) and 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_public_names_are_the_library_s_own() -> None:
    from hwprune import pruning

    assert hwprune.PruningPlan is pruning.PruningPlan and hwprune.apply_plan is pruning.apply_plan
    assert {"profile", "prune", "predict_ms", "check_table", "load_pruned", "ModelGraph"} <= set(dir(hwprune))
    with pytest.raises(AttributeError, match="no attribute 'profiel'"):
        hwprune.profiel  # noqa: B018


# ---- latency --------------------------------------------------------------------------------------


def test_profile_writes_the_table_and_predicts_plans(trained: Tiny, table: hwprune.LatencyTable, tmp_path) -> None:
    assert table.settings["model"] == "Tiny" and table.settings["batch"] == 2 and table.calibration
    full = hwprune.predict_ms(table, trained)
    graph = hwprune.ModelGraph(trained, SHAPE)
    half = hwprune.PruningPlan.uniform("Tiny", graph, 0.5)
    assert 0 < hwprune.predict_ms(table, trained, half) < full
    assert hwprune.predictor(table, trained).predict_ms(half) == hwprune.predict_ms(table, trained, half)
    saved = _table(trained, out=tmp_path / "lut.json", name="Tiny")
    assert hwprune.predict_ms(tmp_path / "lut.json", trained) == pytest.approx(hwprune.predict_ms(saved, trained))


def test_check_table_scores_the_predictors_on_held_out_plans(trained: Tiny, table: hwprune.LatencyTable) -> None:
    report = hwprune.check_table(table, trained, plans=3, backend=device(), progress=False)
    assert report["plans"] == 3 and set(report["predictors"]) == {"calibrated", "lut-sum", "flops"}
    assert all(math.isfinite(s["median_abs_pct"]) for s in report["predictors"].values())


def test_a_table_of_another_model_is_one_line(table: hwprune.LatencyTable) -> None:
    with pytest.raises(HwpruneError, match="no entries for"):
        hwprune.predict_ms(table, nn.Sequential(nn.Conv2d(3, 5, 1), nn.Flatten(), nn.Linear(5 * 64, 2)))


# ---- prune with the user's own functions ----------------------------------------------------------


def test_prune_calls_the_user_functions_and_judges_the_measured_model(trained: Tiny, pruned) -> None:  # noqa: ANN001
    result, calls, out = pruned
    assert calls.scores > 2 and 1 in calls.finetunes and calls.finetunes[-1] == 3  # short ones, then the long one
    assert result.met is True and result.budget_ms == pytest.approx(0.5 * result.unpruned.median_ms)
    assert result.measured.median_ms <= result.budget_ms
    assert result.measured.median_ms == pytest.approx(sum(p.numel() for p in result.model.parameters()) * 1e-3)
    before, after = result.macs
    assert after < before
    x = torch.randn(2, *SHAPE)
    assert result.model(x).shape == trained(x).shape
    assert result.report["pruned"]["score"] == pytest.approx(calls.score(result.model))
    assert result.report["pruned"]["test_accuracy"] is None and result.report["budget_met"] is True
    assert "| score (yours) |" in (out / "report.md").read_text()
    assert result.out == out and (out / "plan.json").is_file()


def test_save_and_load_round_trip_gives_identical_outputs(trained: Tiny, pruned, tmp_path) -> None:  # noqa: ANN001
    result, _, out = pruned
    x = torch.randn(3, *SHAPE)
    for path in (result.save(tmp_path / "mine"), out / "model"):
        loaded, spec, plan = hwprune.load_pruned(path, base_model=Tiny())
        assert spec.name == "Tiny" and plan == result.plan
        assert torch.equal(loaded(x), result.model.eval()(x))
    with pytest.raises(ArtifactError, match=r"base_model=YourNet\(\)"):
        hwprune.load_pruned(tmp_path / "mine")  # no registry builds "Tiny"


def test_a_ratio_run_needs_no_score_and_leaves_nothing_without_out(trained: Tiny, table) -> None:  # noqa: ANN001
    tuned: list[int] = []
    result = hwprune.prune(
        trained, SHAPE, ratio=0.5, table=table, backend=device(), finetune=lambda m, s: tuned.append(s), **LIGHT
    )
    assert result.met is None and result.out is None and tuned == [400]
    assert result.plan.keep_ratio() == pytest.approx(0.5, abs=0.05) and result.report["pruned"]["score"] is None


def test_resume_after_ctrl_c_ends_at_the_same_plan(trained: Tiny, table, pruned, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    straight, _, _ = pruned
    calls, out = Calls(), tmp_path / "run"
    args: dict[str, Any] = {"budget": "0.5x", "table": table, "backend": device(), "out": out, **LIGHT}
    args |= {"finetune": calls.finetune, "finetune_steps": 3, "search_finetune_steps": 1}

    def ctrl_c_at_the_fourth_score(model: nn.Module) -> float:
        if calls.scores == 3:
            raise KeyboardInterrupt
        return calls.score(model)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fake device's timing warnings
        with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.WARNING, logger="hwprune"):
            hwprune.prune(trained, SHAPE, score=ctrl_c_at_the_fourth_score, **args)
        assert "call prune again with resume=True" in caplog.text
        assert (out / "job.json").is_file() and not (out / "report.json").exists()  # kept for resume=True
        state = json.loads((out / "search-1.json").read_text())
        assert state["iteration"] >= 1 and not state["done"]  # stopped mid-search
        with pytest.raises(ConfigError, match=r"this call has seed=1 \(the run has 0\)"):
            hwprune.prune(trained, SHAPE, score=calls.score, seed=1, resume=True, **args)
        resumed = hwprune.prune(trained, SHAPE, score=calls.score, resume=True, **args)
    assert resumed.plan == straight.plan and resumed.met is True and resumed.out == out
    scores = calls.scores
    again = hwprune.prune(trained, SHAPE, score=calls.score, resume=True, **args)  # finished: read back
    assert again.plan == straight.plan and calls.scores == scores
    with pytest.raises(ConfigError, match="holds none: call without resume=True"):
        hwprune.prune(trained, SHAPE, score=calls.score, resume=True, **(args | {"out": tmp_path / "other"}))


# ---- bad input: one line --------------------------------------------------------------------------


def _refused(trained: nn.Module, table, tmp_path: Path, **kw: Any) -> str:  # noqa: ANN001
    out = tmp_path / "run"
    args: dict[str, Any] = {"budget": "0.5x", "table": table, "backend": device(), "out": out, **LIGHT}
    with pytest.raises(HwpruneError) as caught:
        hwprune.prune(trained, kw.pop("input_shape", SHAPE), **(args | kw))
    assert not out.exists()  # no partial artifact
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"budget": "fast"}, "malformed budget 'fast'"),
        ({"budget": 0.5}, 'budget must be a string like "0.5x"'),
        ({"input_shape": (1, 8, 8)}, "does not run on input_shape (1, 8, 8)"),
        ({"input_shape": (3, 8)}, "input_shape must be (C, H, W) or (N, C, H, W)"),
        ({"input_shape": (4, 3, 8, 8), "batch": 2}, "says batch 4 but batch=2"),
        ({}, "pass score="),  # a search with nothing to rank by
        ({"score": lambda m: "high"}, "score(model) must return a number"),
        ({"score": lambda m: float("nan")}, "score(model) returned nan"),
        ({"score": 0.9}, "score= must be a function"),
        ({"score": len, "data": "synthetic"}, "not both"),
        ({"score": len, "criterion": "taylor"}, "pass taylor_data="),
        ({"score": len, "margn": 0.1}, "unknown option margn=: did you mean margin=?"),
        ({"score": len, "backend": "onnx"}, "unknown backend 'onnx'"),
        ({"score": len, "distill": 0.5}, "distil inside your finetune= function"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(trained: Tiny, table, tmp_path: Path, options, needle) -> None:  # noqa: ANN001
    assert needle in _refused(trained, table, tmp_path, **options)


def test_a_score_is_a_finite_number() -> None:
    assert as_score(0.5) == 0.5 and as_score(torch.tensor(0.25)) == 0.25 and as_score(3) == 3.0
    for bad in (True, "0.9", None, torch.ones(2), float("inf")):
        with pytest.raises(ConfigError):
            as_score(bad)
    assert UserTraining().evaluate(nn.Linear(1, 1)) is None  # nothing to score by: no number invented


# ---- logging: the library logs, the CLI shows ---------------------------------------------------


def test_the_cli_prints_the_job_s_lines_only_while_a_command_runs(capsys, caplog) -> None:  # noqa: ANN001
    from hwprune.cli import _progress_lines

    job = logging.getLogger("hwprune.job.run")
    with _progress_lines():
        job.info("unpruned: 1.000 ms")
    job.info("after the command")
    assert capsys.readouterr().out == "unpruned: 1.000 ms\n"
    assert logging.getLogger("hwprune.job").handlers == []


def test_library_code_does_not_print() -> None:
    """Progress goes through logging (and tqdm); only the CLI and its commands print."""
    offenders = []
    for path in (ROOT / "hwprune").rglob("*.py"):
        if path.name == "cli.py" or "commands" in path.parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("print("):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders


# ---- the example ----------------------------------------------------------------------------------


def test_the_own_model_example_prunes_to_fewer_macs_with_the_same_output_shape(tmp_path: Path, monkeypatch) -> None:
    """examples/own_model.py --quick, on the fake device (the real CPU run is the slow test below)."""
    assert ParamsDevice.name in available_profilers()
    monkeypatch.setattr(sys, "argv", ["own_model.py", "--quick", "--backend", ParamsDevice.name, "--batch", "2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = runpy.run_path(str(ROOT / "examples" / "own_model.py"), run_name="example")["main"]()
    assert summary["macs"][1] < summary["macs"][0]
    assert summary["output_shape"][0] == summary["output_shape"][1]
    assert summary["met"] is True


@pytest.mark.slow
def test_the_own_model_example_on_this_cpu(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    cmd = [sys.executable, "examples/own_model.py", "--quick", "--backend", "torch-cpu", "--json", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "PATH": ""})
    summary = json.loads(out.read_text())
    assert summary["macs"][1] < summary["macs"][0] and summary["output_shape"][0] == summary["output_shape"][1]
