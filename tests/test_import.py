"""Bringing one's own weights and architecture: ``hwprune import`` and ``--model package.module:factory``.

The user's architecture is a module file written into the test's folder and put on ``sys.path``,
as a user's own package would be; everything runs on the synthetic dataset at 32x32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_prune_cli import FAST

from hwprune.checkpoint import load_checkpoint
from hwprune.cli import main
from hwprune.data import load_data
from hwprune.errors import ArtifactError, ModelError
from hwprune.job.config import JobConfig
from hwprune.job.measure import data_needs
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import load_pruned
from hwprune.train import evaluate
from hwprune.weights import read_state_dict

MODULE = "hwp_user_nets"
FACTORY = f"{MODULE}:build"
USER_NETS = """
from torch import nn


def build(in_channels, num_classes):
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )


def fixed(in_channels, num_classes):  # a classifier sized for 32x32 inputs only
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, num_classes))


def positional(channels, classes):
    return build(channels, classes)


def boom(in_channels, num_classes):
    raise ValueError("no\\nsuch width")


def not_a_module(in_channels, num_classes):
    return 3


NOT_CALLABLE = 7
"""
IMPORT = ["import", "--model", FACTORY, "--num-classes", "10", "--in-channels", "1", "--input-size", "32x32"]


@pytest.fixture
def user_nets(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)  # import this test's file, not an earlier one
    return folder


@pytest.fixture
def trained(user_nets: Path) -> torch.nn.Module:
    """The user's model with weights that differ from a fresh init (so a load that silently skipped them fails)."""
    torch.manual_seed(3)
    model = create_model(FACTORY, 1, 10)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    return model.eval()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(t, sb[k]) for k, t in a.state_dict().items())


# ---- hwprune import -----------------------------------------------------------------------------


def test_pth_state_dict_becomes_a_checkpoint_with_unknown_accuracy(trained, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.pth"
    torch.save(trained.state_dict(), weights)
    out = tmp_path / "ck"
    assert main([*IMPORT, "--weights", str(weights), "--out", str(out)]) == 0
    assert "test accuracy unknown" in capsys.readouterr().out
    model, spec, doc = load_checkpoint(out)
    assert spec == ModelSpec(FACTORY, 1, 10, (32, 32))
    assert _same_weights(model, trained)
    assert doc["test_accuracy"] is None and doc["data"] is None
    assert doc["imported"]["weights"] == str(weights.resolve()) and doc["imported"]["unwrapped_key"] is None


def test_safetensors_with_data_records_the_test_accuracy(trained, tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_file(trained.state_dict(), str(weights))
    out = tmp_path / "ck"
    argv = ["import", "--model", FACTORY, "--num-classes", "10", "--input-size", "32x32", "--data", "synthetic"]
    assert main([*argv, "--weights", str(weights), "--out", str(out)]) == 0  # in-channels from the dataset
    model, spec, doc = load_checkpoint(out)
    assert spec.in_channels == 1 and doc["data"] == "synthetic"
    assert _same_weights(model, trained)
    assert doc["test_accuracy"] == evaluate(trained, load_data("synthetic").test)


def test_dataparallel_prefix_and_wrapping_checkpoint_dict_are_undone(trained, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.pt"
    prefixed = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"epoch": 7, "model_state_dict": prefixed, "optimizer": {"lr": 0.1}}, weights)
    out = tmp_path / "ck"
    assert main([*IMPORT, "--weights", str(weights), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "under key 'model_state_dict'" in said and "stripped the 'module.' prefix" in said
    model, _, doc = load_checkpoint(out)
    assert _same_weights(model, trained)
    assert doc["imported"]["stripped_prefixes"] == ["module."]


def test_a_pickled_whole_module_is_refused_and_nothing_is_written(trained, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "whole.pth"
    torch.save(trained, weights)
    out = tmp_path / "ck"
    assert main([*IMPORT, "--weights", str(weights), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "not a state dict" in line and "torch.save(model.state_dict(), PATH)" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["user", "whole.pth"]


def test_another_architectures_state_dict_is_refused_with_its_keys_named(user_nets, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "r20.pth"
    torch.save(create_model("resnet20", 1, 10).state_dict(), weights)
    out = tmp_path / "ck"
    assert main([*IMPORT, "--weights", str(weights), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert f"do not fit model '{FACTORY}'" in line
    assert "missing (0.bias, 0.weight, 1.bias, ... " in line  # the user model's names, first few and a count
    assert "unexpected (bn1.bias, " in line and "wrong --model" in line
    assert not out.exists()


def test_wrong_num_classes_names_the_mis_shaped_tensors(trained, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.pth"
    torch.save(trained.state_dict(), weights)
    argv = [*IMPORT, "--weights", str(weights), "--out", str(tmp_path / "ck"), "--num-classes", "5"]
    assert main(argv) == 2
    assert "2 of the wrong shape (8.weight: (10, 16) vs (5, 16), 8.bias: (10,) vs (5,))" in _error_line(capsys)


def test_a_wrong_input_size_fails_at_import_not_later(user_nets, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.pth"
    torch.save(create_model(f"{MODULE}:fixed", 1, 10).state_dict(), weights)
    argv = ["import", "--model", f"{MODULE}:fixed", "--num-classes", "10", "--in-channels", "1"]
    assert main([*argv, "--input-size", "16x16", "--weights", str(weights), "--out", str(tmp_path / "ck")]) == 2
    assert "does not run on a 1x1x16x16 input" in _error_line(capsys)
    assert not (tmp_path / "ck").exists()


def test_several_nested_state_dicts_are_ambiguous(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "model": {"a": torch.ones(1)}}, weights)
    with pytest.raises(ArtifactError, match="several state dicts"):
        read_state_dict(weights)


# ---- --model package.module:factory --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (f"{MODULE}:build", None),
        (
            "hwp_no_such_pkg.nets:build",
            "cannot import module 'hwp_no_such_pkg.nets' (no module named 'hwp_no_such_pkg')",
        ),
        (f"{MODULE}:biuld", f"has no attribute 'biuld': did you mean {MODULE}:build"),
        (f"{MODULE}:NOT_CALLABLE", "is not callable (an object of type int)"),
        (f"{MODULE}:boom", "raised ValueError: no such width"),
        (f"{MODULE}:positional", "raised TypeError"),
        (f"{MODULE}:not_a_module", "returned an object of type int, not a torch.nn.Module"),
        ("my-nets:build", "neither a zoo name, torchvision:NAME nor package.module:factory"),
    ],
)
def test_user_factory_builds_or_says_why_in_one_line(user_nets, name: str, says: str | None) -> None:
    if says is None:
        model = create_model(name, 3, 4)
        assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
        return
    with pytest.raises(ModelError) as raised:
        create_model(name, 3, 4)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_positional_only_factories_hear_the_keyword_convention(user_nets) -> None:
    with pytest.raises(ModelError, match="called with the keyword arguments in_channels and num_classes"):
        create_model(f"{MODULE}:positional", 3, 4)


def test_torchvision_prefix_is_not_read_as_a_module_path() -> None:
    with pytest.raises(ModelError, match="unknown torchvision classification model 'nosuch'"):
        create_model("torchvision:nosuch")


def test_user_architecture_end_to_end_train_prune_load(user_nets, tmp_path: Path, capsys) -> None:
    """Train one step, prune by --ratio, load the pruned artifact; then import those weights without data and prune."""
    ck = tmp_path / "ck"
    train = ["train", "--model", FACTORY, "--data", "synthetic", "--epochs", "1", "--limit-train", "16"]
    assert main([*train, "--batch-size", "16", "--no-progress", "--out", str(ck)]) == 0
    assert json.loads((ck / "model.json").read_text())["spec"]["name"] == FACTORY

    run = tmp_path / "run"
    assert main(["prune", "--checkpoint", str(ck), "--ratio", "0.5", "--out", str(run), *FAST]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["pruned"]["params"] < report["unpruned"]["params"]
    assert isinstance(report["pruned"]["test_accuracy"], float)
    model, spec, _ = load_pruned(run / "model")
    assert spec.name == FACTORY and model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)

    # The same weights brought in from outside: no dataset, so a run by --ratio skips the fine-tune.
    imported, run2 = tmp_path / "imported", tmp_path / "run2"
    assert main([*IMPORT, "--weights", str(ck / "model.safetensors"), "--out", str(imported)]) == 0
    capsys.readouterr()
    base = ["prune", "--checkpoint", str(imported), "--ratio", "0.5", "--out", str(run2), *FAST]
    assert main(base) == 2  # FAST fine-tunes 2 steps: that needs a dataset
    assert "names no dataset" in _error_line(capsys) and not run2.exists()
    assert main([*base, "--finetune-steps", "0"]) == 0
    report = json.loads((run2 / "report.json").read_text())
    assert report["pruned"]["test_accuracy"] is None and report["unpruned"]["test_accuracy"] is None
    assert "| test accuracy | - | - |" in (run2 / "report.md").read_text()
    assert load_pruned(run2 / "model")[0](torch.zeros(1, 1, 32, 32)).shape == (1, 10)

    table = tmp_path / "lut.json"
    quick = ["--grid", "1", "--calib-plans", "0", "--repeats", "3", "--runs", "1", "--block-rounds", "1"]
    assert main(["profile", "--checkpoint", str(imported), *quick, "--warmup-s", "0", "--out", str(table)]) == 0
    assert json.loads(table.read_text())["settings"]["model"] == FACTORY


@pytest.mark.parametrize(
    ("options", "needs"),
    [
        ({"ratio": 0.5, "finetune_steps": 0}, None),
        ({"plan": "p.json", "finetune_steps": 0, "criterion": "fpgm"}, None),
        ({"ratio": 0.5}, "the fine-tune after pruning (--finetune-steps 400)"),
        ({"ratio": 0.5, "finetune_steps": 0, "criterion": "taylor"}, "--criterion taylor"),
        ({"budget": "0.5x", "finetune_steps": 0}, "the search under --budget"),
    ],
)
def test_what_in_a_run_needs_a_dataset(options: dict, needs: str | None) -> None:
    found = data_needs(JobConfig(checkpoint="ck", out="run", **options))
    assert found == needs if needs is None else needs in found
