"""Training loops, checkpoints and the ``hwprune train`` command, on small synthetic data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from hwprune import cli
from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.data import load_data
from hwprune.errors import ArtifactError, ConfigError
from hwprune.models import ModelSpec
from hwprune.train import evaluate, fine_tune, resolve_precision, score, train


def _tiny() -> nn.Module:
    """A few-thousand-parameter CNN: enough to learn the synthetic classes, fast on two cores."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(512, 10)
    )


@pytest.fixture(scope="module")
def bundle():
    return load_data("synthetic")


def test_short_train_beats_chance(bundle) -> None:
    model = _tiny()
    before = evaluate(model, bundle.test)
    history = train(model, bundle, epochs=3, lr=0.05, batch_size=32, progress=False)
    after = evaluate(model, bundle.test)
    assert len(history["epochs"]) == 3 and history["epochs"][-1]["loss"] < history["epochs"][0]["loss"]
    assert after > 0.3 and after > before
    assert 0.0 <= history["val_acc"] <= 1.0


def test_evaluate_restores_mode_and_limits_samples(bundle) -> None:
    model = _tiny().train()
    acc = evaluate(model, bundle.test, max_samples=10)
    assert model.training and acc * 10 == round(acc * 10)


def test_fine_tune_same_seed_gives_identical_weights(bundle) -> None:
    start = _tiny()
    runs = []
    for seed in (5, 5, 6):
        model = copy.deepcopy(start)
        fine_tune(model, bundle.train, steps=8, batch_size=32, seed=seed, augment=bundle.augment)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], v) for k, v in start.state_dict().items())


def test_bf16_fine_tune_is_seeded_mixed_precision(bundle) -> None:
    """bf16 autocast changes the arithmetic (weights differ from fp32's), not the weights' dtype,
    and the same seed still gives bit-identical weights."""
    start = _tiny()
    runs = {}
    for name, precision in (("bf16", "bf16"), ("bf16 again", "bf16"), ("fp32", "fp32")):
        model = copy.deepcopy(start)
        fine_tune(model, bundle.train, steps=6, batch_size=32, seed=3, precision=precision)
        runs[name] = model.state_dict()
    assert all(v.dtype != torch.bfloat16 for v in runs["bf16"].values())
    assert all(torch.equal(runs["bf16"][k], runs["bf16 again"][k]) for k in runs["bf16"])
    assert not all(torch.equal(runs["bf16"][k], runs["fp32"][k]) for k in runs["bf16"])


def test_bf16_score_agrees_with_fp32(bundle) -> None:
    model = _tiny()
    train(model, bundle, epochs=2, lr=0.05, batch_size=32, progress=False)
    (acc32, loss32), (acc16, loss16) = score(model, bundle.test), score(model, bundle.test, precision="bf16")
    assert abs(acc16 - acc32) <= 0.03 and loss16 == pytest.approx(loss32, rel=0.05)


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native, raising=False)
        assert resolve_precision("auto") == expected
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        resolve_precision("fp16")


def _saved_resnet(tmp_path: Path) -> tuple[nn.Module, Path]:
    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    model = spec.build()
    model.train()
    model(torch.randn(16, 1, 32, 32))  # move BN running stats off their defaults
    save_checkpoint(tmp_path / "ck", model.eval(), spec, {"data": "synthetic", "test_accuracy": 0.5})
    return model, tmp_path / "ck"


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    model, ck = _saved_resnet(tmp_path)
    x = torch.randn(4, 1, 32, 32)
    for path in (ck, ck / "model.json"):
        loaded, spec, meta = load_checkpoint(path)
        assert spec.name == "resnet20" and meta["test_accuracy"] == 0.5 and meta["kind"] == "checkpoint"
        assert not loaded.training
        with torch.inference_mode():
            assert torch.equal(loaded(x), model(x))


def _one_line_artifact_error(path: Path, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_corrupt_or_missing_weights(tmp_path: Path) -> None:
    _model, ck = _saved_resnet(tmp_path)
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _one_line_artifact_error(ck, "corrupt")
    doc = json.loads((ck / "model.json").read_text())
    del doc["weights_sha256"]  # without the checksum, safetensors itself must reject the file
    (ck / "model.json").write_text(json.dumps(doc))
    _one_line_artifact_error(ck, "corrupt")
    weights.unlink()
    _one_line_artifact_error(ck, "not found")


def test_foreign_weights_and_wrong_kind(tmp_path: Path) -> None:
    _model, ck = _saved_resnet(tmp_path)
    doc = json.loads((ck / "model.json").read_text())
    (ck / "model.json").write_text(json.dumps(doc | {"spec": doc["spec"] | {"name": "resnet32"}}))
    _one_line_artifact_error(ck, "do not fit model 'resnet32'")
    (ck / "model.json").write_text(json.dumps(doc | {"spec": doc["spec"] | {"num_classes": 100}}))
    _one_line_artifact_error(ck, "wrong shape")
    (ck / "model.json").write_text(json.dumps(doc | {"kind": "pruning-plan"}))
    _one_line_artifact_error(ck, "not a hwprune checkpoint")


@pytest.fixture
def main(monkeypatch: pytest.MonkeyPatch):
    # Only the train verb: this file tests it alone, whatever state the other verbs are in.
    monkeypatch.setattr(cli, "COMMANDS", {"train": "train"})
    return cli.main


def test_cli_train_writes_checkpoint(main, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs" / "ck"
    argv = ["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--batch-size", "64"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and str(out) in printed and len(printed.strip().splitlines()) == 1
    model, spec, meta = load_checkpoint(out)
    assert spec == ModelSpec("resnet20", 1, 10, (32, 32))
    assert meta["command"].startswith("hwprune train --model resnet20 --data synthetic --epochs 1")
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and meta["seed"] == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ck"]  # no temp folder left
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2  # refuses to clobber without --overwrite


def test_cli_unknown_model_exits_2_and_writes_nothing(main, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ck"
    assert main(["train", "--model", "resnet21", "--data", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet21'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_interrupt_leaves_nothing(main, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprune.commands import train as train_cmd

    def interrupted_save(out_dir, *args, **kwargs):
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cmd, "save_checkpoint", interrupted_save)
    out = tmp_path / "ck"
    argv = ["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--limit-train", "64"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 130
    assert list(tmp_path.iterdir()) == []
