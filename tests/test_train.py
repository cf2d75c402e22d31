"""Training loops, checkpoints and the ``hwprune train`` command, on small synthetic data."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

import hwprune.train as train_loop
from hwprune import cli
from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.data import load_data
from hwprune.errors import ArtifactError, ConfigError
from hwprune.models import ModelSpec
from hwprune.train import evaluate, fine_tune, resolve_precision, score, train
from hwprune.train_state import load_train_state


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


def test_the_distilled_loss_mixes_the_labels_with_the_teacher_s_softened_outputs() -> None:
    from torch.nn import functional as F

    from hwprune.train import distilled_loss

    logits, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 1])
    hard = F.cross_entropy(logits, y)
    assert distilled_loss(logits, y, -logits, 0.0, 4.0) == pytest.approx(float(hard))  # weight 0: labels alone
    assert float(distilled_loss(logits, y, logits, 1.0, 4.0)) == pytest.approx(0.0, abs=1e-6)  # agrees: nothing
    disagree = distilled_loss(logits, y, -logits, 0.5, 4.0)
    assert float(disagree) > 0.5 * float(hard)  # a teacher that disagrees adds to the labels' half


def test_a_distilled_fine_tune_learns_from_the_teacher_and_leaves_it_as_it_was(bundle) -> None:
    start, teacher = _tiny(), _tiny()
    train(teacher, bundle, epochs=1, lr=0.05, batch_size=32, progress=False)
    teacher.train()
    taught_before = copy.deepcopy(teacher.state_dict())
    runs = {}
    for weight in (0.0, 0.7, 0.7):
        model = copy.deepcopy(start)
        fine_tune(model, bundle.train, 6, batch_size=32, seed=1, teacher=teacher if weight else None, distill=weight)
        runs.setdefault(weight, []).append(model.state_dict())
    assert all(torch.equal(runs[0.7][0][k], runs[0.7][1][k]) for k in runs[0.7][0])  # seeded, as without one
    assert not all(torch.equal(runs[0.7][0][k], runs[0.0][0][k]) for k in runs[0.0][0])  # the teacher moved it
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in taught_before.items())  # BN stats too
    assert teacher.training  # its mode restored
    for teacher_given, weight in ((None, 0.5), (teacher, 0.0), (teacher, 1.5)):
        with pytest.raises(ConfigError, match="distillation needs a teacher"):
            fine_tune(_tiny(), bundle.train, 1, teacher=teacher_given, distill=weight)


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


def test_bn_recalibration_sets_the_batch_statistics_and_restores_the_model(bundle) -> None:
    """Adaptive BN: the running statistics become the average over the batches given (not a momentum blend
    with the stale ones), and nothing else of the model changes: weights, mode and momentum."""
    model = _tiny().eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    weights = copy.deepcopy(model[0].state_dict())
    batches = [(torch.randn(16, 1, 32, 32), torch.zeros(16, dtype=torch.long)) for _ in range(3)]
    train_loop.recalibrate_bn(model, iter(batches), 2)
    with torch.no_grad():
        outs = [model[0](x) for x, _ in batches[:2]]  # the third batch is not read
    expected = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert not model.training and bn.momentum == 0.1 and bn.num_batches_tracked.item() == 2
    assert all(torch.equal(v, model[0].state_dict()[k]) for k, v in weights.items())


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


def test_cli_interrupt_before_an_epoch_ends_leaves_nothing(main, tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C in the first epoch: no epoch finished, so there is no state worth keeping."""
    monkeypatch.setattr(train_loop, "_step", _interrupt_at(1))
    out = tmp_path / "ck"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 130
    assert list(tmp_path.iterdir()) == []


TINY_TRAIN = [
    "train", "--model", "resnet20", "--data", "synthetic", "--epochs", "2", "--limit-train", "96",
    "--batch-size", "32", "--no-progress",
]  # fmt: skip


def _interrupt_at(at: int):  # noqa: ANN202 - a stand-in for train._step
    """``train._step`` that raises KeyboardInterrupt (Ctrl-C) when called for the ``at``-th time."""
    real, calls = train_loop._step, [0]

    def step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls[0] += 1
        if calls[0] == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return step


def test_resumed_training_ends_with_the_uninterrupted_weights(bundle, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, a Ctrl-C in the second, and a resume: bit for bit.

    Exact equality is the right test, not a tolerance: the state holds every input of the
    remaining computation (fp32 weights and momentum buffers in safetensors, the schedule's step
    count, every RNG stream), on the same machine and thread count the arithmetic is deterministic,
    and a state that missed anything (say the data-order generator) would diverge by far more
    than rounding.
    """
    small = load_data("synthetic", limit_train=96)

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return _tiny()

    straight = fresh()
    train(straight, small, epochs=2, lr=0.05, batch_size=32, progress=False)
    interrupted = fresh()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_loop, "_step", _interrupt_at(5))  # epoch 2 has steps 4-6
        with pytest.raises(KeyboardInterrupt):
            train(interrupted, small, epochs=2, lr=0.05, batch_size=32, progress=False, state_dir=tmp_path)
    assert load_train_state(tmp_path).epoch == 1  # the second epoch is lost, the first is not
    resumed = fresh()  # a new process: other initial weights would be overwritten by the state
    history = train(resumed, small, epochs=2, lr=0.05, batch_size=32, progress=False, state_dir=tmp_path, resume=True)
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    expected = straight.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in resumed.state_dict().items())
    assert not all(torch.equal(expected[k], v) for k, v in interrupted.state_dict().items())  # it did change


def test_resume_with_other_settings_is_refused(bundle, tmp_path: Path) -> None:
    small = load_data("synthetic", limit_train=64)
    train(_tiny(), small, epochs=2, lr=0.05, batch_size=32, progress=False, state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"made with lr=0.05, not 0.1"):
        train(_tiny(), small, epochs=2, lr=0.1, batch_size=32, progress=False, state_dir=tmp_path, resume=True)


def test_training_state_loads_without_pickle(bundle, tmp_path: Path, monkeypatch) -> None:
    """Tensors in safetensors, the rest in versioned JSON: loading never reaches pickle or torch.load."""
    small = load_data("synthetic", limit_train=64)
    model = _tiny()
    train(model, small, epochs=1, lr=0.05, batch_size=32, progress=False, state_dir=tmp_path)
    doc = json.loads((tmp_path / "train-state.json").read_text())
    assert doc["kind"] == "train-state" and doc["schema_version"] == 1 and doc["epoch"] == 1
    assert doc["optimizer"]["param_groups"][0]["momentum"] == 0.9  # the group settings are readable JSON
    assert doc["best_val_acc"] == doc["last_val_acc"] == doc["history"][0]["val_acc"]
    with safe_open(str(tmp_path / doc["tensors"]), "pt") as f:
        names = set(f.keys())
    assert {"optimizer/state/0/momentum_buffer", "rng/torch", "rng/gen_data_order", "model/0.weight"} <= names

    def forbidden(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a training state must load without unpickling")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    state = load_train_state(tmp_path)
    assert state.epoch == 1 and torch.equal(state.model["0.weight"], model.state_dict()["0.weight"])
    momentum = state.optimizer["state"][0]["momentum_buffer"]
    assert momentum.shape == model[0].weight.shape and momentum.abs().sum() > 0


def test_cli_ctrl_c_mid_epoch_then_resume(main, tmp_path: Path, monkeypatch, capsys) -> None:
    """The command keeps the last completed epoch on Ctrl-C, and --resume finishes with the straight run's weights."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main([*TINY_TRAIN, "--out", str(straight)]) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_loop, "_step", _interrupt_at(5))
        assert main([*TINY_TRAIN, "--out", str(interrupted)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (interrupted / "train-state.json").is_file() and not (interrupted / "model.json").exists()
    assert main([*TINY_TRAIN, "--out", str(interrupted)]) == 2  # a fresh start would discard it: refused
    assert "holds an unfinished training (epoch 1 of 2 done)" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match=f"continue it with `hwprune train --resume {interrupted}`"):
        load_checkpoint(interrupted)  # what prune, profile and import's users get
    state = interrupted / "train-state.json"
    doc = json.loads(state.read_text())
    doc["extra"]["options"]["device"] = "cuda:7"  # started on a machine with a GPU this one lacks
    state.write_text(json.dumps(doc))
    assert main(["train", "--resume", str(interrupted)]) == 2
    assert f"--resume {interrupted} continues on --device cuda:7: " in capsys.readouterr().err
    assert main(["train", "--resume", str(interrupted), "--device", "cpu", "--no-progress"]) == 0
    a, _, meta = load_checkpoint(straight)
    b, _, meta_b = load_checkpoint(interrupted)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert meta_b["command"] == meta["command"].replace(str(straight), str(interrupted))
    assert sorted(p.name for p in interrupted.iterdir()) == ["model.json", "model.safetensors"]  # state removed
    assert main(["train", "--resume", str(interrupted)]) == 2
    assert "has finished" in capsys.readouterr().err
