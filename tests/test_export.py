"""`hwprune export` on a pruned ResNet-20 run: parity of the written file, its timing, and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_prune_cli import FAST, checkpoint  # noqa: F401 - the tiny checkpoint fixture, module-scoped

from hwprune.cli import main
from hwprune.export import OnnxFormat
from hwprune.job.config import JobConfig, start_run
from hwprune.pruning import load_pruned

TIMING = ["--repeats", "3", "--runs", "1", "--rounds", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, checkpoint: Path) -> Path:  # noqa: F811 - the imported fixture
    """A `hwprune prune --ratio 0.5` run (deployment batch 2), made the fast way test_prune_cli makes them."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["prune", "--checkpoint", str(checkpoint), "--ratio", "0.5", "--out", str(out), *FAST]) == 0
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def _reference(run_dir: Path, x: torch.Tensor) -> torch.Tensor:
    model, _spec, _plan = load_pruned(run_dir / "model")
    with torch.no_grad():
        return model(x)


def _record(path: Path) -> dict:
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["kind"] == "export" and record["schema_version"] == 1
    return record


def test_onnx_export_matches_pytorch_and_is_timed_beside_the_unpruned(run_dir: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    out = tmp_path / "r20.onnx"
    assert main(["export", "--run", str(run_dir), "--format", "onnx", "--out", str(out), *TIMING]) == 0
    printed = capsys.readouterr().out
    record = _record(out)
    assert record["input_shape"] == [2, 1, 32, 32]  # the run's deployment batch
    assert 0 <= record["parity"]["max_abs_diff"] <= 1e-4 and "max abs difference" in printed
    # The file on its own runtime, on another batch, agrees with the pruned PyTorch model.
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - _reference(run_dir, x).numpy()).max() <= 1e-4
    latency = record["latency"]
    assert latency["backend"] == "onnxruntime" and latency["model"]["summary"]["median_ms"] > 0
    assert latency["unpruned"]["summary"]["median_ms"] > 0 and latency["speedup"] > 0
    assert latency["unpruned_weights"].startswith("checkpoint ")
    assert record["fingerprint"]["backend"] == "onnxruntime"


def test_torchscript_export_matches_pytorch(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20.pt"
    argv = ["export", "--run", str(run_dir), "--format", "torchscript", "--out", str(out), "--batch", "3"]
    assert main([*argv, *TIMING]) == 0
    record = _record(out)
    assert record["input_shape"] == [3, 1, 32, 32] and record["parity"]["max_abs_diff"] <= 1e-4
    assert record["latency"]["backend"] == "torch-cpu" and record["latency"]["unpruned"]["summary"]["median_ms"] > 0
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    expected = _reference(run_dir, x)
    scripted = torch.jit.load(str(out))  # the file this test just had written
    with torch.no_grad():
        assert (scripted(x) - expected).abs().max() <= 1e-4
    assert "Warning" not in capsys.readouterr().err  # torch.jit's notes stay out of the user's terminal


def test_a_parity_failure_is_one_line_and_writes_nothing(
    run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OnnxFormat.run_file
    monkeypatch.setattr(OnnxFormat, "run_file", lambda self, path, x: real(self, path, x) + 1e-3)
    out = tmp_path / "r20.onnx"
    assert main(["export", "--run", str(run_dir), "--format", "onnx", "--out", str(out), "--no-measure"]) == 2
    line = _one_error_line(capsys)
    assert "differs from the PyTorch model by up to 0.001" in line and "tolerance 0.0001" in line
    assert list(tmp_path.iterdir()) == []  # neither the file, nor its record, nor the temporary file


def test_a_run_without_a_model_is_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    unfinished = tmp_path / "unfinished"
    start_run(JobConfig(checkpoint=str(checkpoint), out=str(unfinished), ratio=0.5), None)
    assert main(["export", "--run", str(unfinished), "--format", "onnx"]) == 2
    line = _one_error_line(capsys)
    assert "has no model yet" in line and f"hwprune prune --resume {unfinished}" in line
    assert main(["export", "--run", str(tmp_path), "--format", "torchscript"]) == 2
    assert "holds no model to export" in _one_error_line(capsys)
    assert sorted(p.name for p in unfinished.iterdir()) == ["job.json"]  # nothing written


def test_an_existing_file_is_kept_without_overwrite(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20.pt"
    out.write_text("mine")
    argv = ["export", "--run", str(run_dir), "--format", "torchscript", "--out", str(out), "--no-measure"]
    assert main(argv) == 2
    assert "already exists" in _one_error_line(capsys) and out.read_text() == "mine"
    assert main([*argv, "--overwrite"]) == 0 and out.read_bytes()[:2] == b"PK"  # a TorchScript zip archive
    assert _record(out)["latency"] is None


def test_an_unpruned_checkpoint_exports_too(checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "full.onnx"
    argv = ["export", "--run", str(checkpoint), "--format", "onnx", "--out", str(out), "--batch", "1", *TIMING]
    assert main(argv) == 0
    latency = _record(out)["latency"]
    assert latency["model"]["summary"]["median_ms"] > 0 and "unpruned" not in latency  # it is the unpruned model


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_the_package_names_the_install_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20.engine"
    assert main(["export", "--run", str(run_dir), "--format", "tensorrt", "--out", str(out)]) == 2
    assert 'pip install "hwprune[tensorrt]"' in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_engine_matches_pytorch(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    out = tmp_path / "r20.engine"
    assert main(["export", "--run", str(run_dir), "--format", "tensorrt", "--out", str(out), *TIMING]) == 0
    record = _record(out)
    assert record["parity"]["max_abs_diff"] <= record["parity"]["tolerance"] == 1e-2  # TF32 tactics: see export.py
    assert record["latency"]["backend"] == "tensorrt" and record["latency"]["speedup"] > 0
