"""Bad input to every verb: exit 2, exactly one stderr line, no traceback, nothing new on disk.

One table of command lines over a few cheap inputs (an untrained checkpoint, fake-timed latency
tables, plan files). Every case must be refused before any work, which is what keeps the table
fast: nothing here trains, profiles or measures. Below it, the mechanisms that keep the next
option from slipping through: every value-taking option has a checking type, every float field
of a prune job refuses NaN, and resume refuses what it would ignore.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import FakeProfiler, setting
from test_prune_cli import FAST, checkpoint  # noqa: F401 - the tiny checkpoint fixture, module-scoped

from hwprune.agents import get_agent
from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.cli import build_parser, main
from hwprune.errors import ArtifactError, ConfigError, TableError
from hwprune.io import write_json
from hwprune.job.config import JobConfig, start_run, validate_config
from hwprune.latency import LatencyTable, profile_model
from hwprune.models import ModelSpec
from hwprune.options import join_negative_values
from hwprune.profilers import get_profiler
from hwprune.pruning import ModelGraph, PruningPlan

TRAIN = ["train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1"]
PROFILE = ["profile", "--model", "resnet20", "--grid", "1", "--calib-plans", "0"]
PRUNE = ["prune", "--checkpoint", "{ck}", "--out", "{out}", *FAST]
COMPARE = ["compare", "--checkpoint", "{ck}", "--out", "{out}", *FAST]
IMPORT = ["import", "--model", "resnet20", "--num-classes", "10", "--in-channels", "1", "--input-size", "32x32"]


def _table(path: Path, **overrides: object) -> Path:
    """A fake-timed table for the checkpoint's setting, dressed as torch-cpu at 1 thread (no block is timed)."""
    s = setting(**({"in_channels": 1, "input_size": (32, 32), "calib_plans": 0, "grid": (0.5, 1.0)} | overrides))
    table, _ = profile_model(s, None, profiler=FakeProfiler(), progress=False)
    table.backend = table.settings["backend"] = "torch-cpu"
    table.fingerprint = get_profiler("torch-cpu", threads=1).fingerprint()
    table.save(path)
    return path


def _checkpoint_with(path: Path, poison: str) -> Path:
    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    model = spec.build()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            if poison == "all" or i == 3:
                p.view(-1)[0 if poison == "one" else slice(None)] = math.nan
    save_checkpoint(path, model, spec, {"data": "synthetic", "seed": 0})
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, checkpoint: Path) -> dict[str, Path]:  # noqa: F811 - the imported fixture
    root = tmp_path_factory.mktemp("inputs")
    lut = _table(root / "lut.json")
    nan_lut = root / "nan-lut.json"
    data = json.loads(lut.read_text())
    first = next(iter(data["entries"].values()))[0]
    first["measurement"]["samples_ms"][0] = math.nan  # json writes NaN; so could any other tool
    nan_lut.write_text(json.dumps(data))
    plan = PruningPlan.uniform("resnet20", ModelGraph(load_checkpoint(checkpoint)[0], (1, 32, 32)), 0.5).to_dict()
    plans = {}
    for name, groups in (
        ("dict_groups", {g["name"]: "8" for g in plan["groups"]}),
        ("keep_str", [g | {"keep": "8"} for g in plan["groups"]]),
        ("keep_float", [g | {"keep": 7.5} for g in plan["groups"]]),
    ):
        plans[name] = root / f"{name}.json"
        write_json(plans[name], plan | {"groups": groups})
    finished = root / "finished"
    start_run(JobConfig(checkpoint=str(checkpoint), out=str(finished), ratio=0.5), None)
    write_json(finished / "report.json", {"kind": "prune-report", "schema_version": 1})
    (finished / "report.md").write_text("# report\n")
    (root / "a-file").write_text("not a folder")
    nodata_ck = root / "nodata-ck"  # as `hwprune import` writes one without --data
    save_checkpoint(
        nodata_ck,
        ModelSpec("resnet20", 1, 10, (32, 32)).build(),
        ModelSpec("resnet20", 1, 10, (32, 32)),
        {"data": None},
    )
    torch.save(ModelSpec("resnet20", 1, 10, (32, 32)).build(), root / "whole-module.pth")
    torch.save(load_checkpoint(checkpoint)[0].state_dict(), root / "r20.pth")
    (root / "garbage.pth").write_bytes(b"not a pickle" * 8)
    (root / "a-dir").mkdir()
    unfinished = root / "unfinished-training"  # a training state that records no options (not resumable)
    write_json(unfinished / "train-state.json", {"kind": "train-state", "schema_version": 1, "epoch": 1})
    return {
        "unfinished": unfinished,
        "ck": checkpoint,
        "nan_ck": _checkpoint_with(root / "nan-ck", "one"),
        "all_nan_ck": _checkpoint_with(root / "all-nan-ck", "all"),
        "lut": lut,
        "nan_lut": nan_lut,
        "other_lut": _table(root / "resnet56.json", model="resnet56"),
        "finished": finished,
        "nodata_ck": nodata_ck,
        "whole_module": root / "whole-module.pth",
        "r20_pth": root / "r20.pth",
        "garbage_pth": root / "garbage.pth",
        "file": root / "a-file",
        "dir": root / "a-dir",
        "missing": root / "missing",
        **plans,
    }


CASES = [
    # ---- train --------------------------------------------------------------------------------
    ("train-device-nosuch", [*TRAIN, "--device", "nosuch", "--out", "{out}"], "unknown device 'nosuch'"),
    ("train-device-gpu", [*TRAIN, "--device", "cuda:99", "--out", "{out}"], "argument --device: 'cuda:99'"),
    ("train-lr-negative", [*TRAIN, "--lr", "-0.1", "--out", "{out}"], "--lr: must be > 0, got -0.1"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan", "--out", "{out}"], "--lr: must be a finite number"),
    ("train-lr-inf", [*TRAIN, "--lr", "inf", "--out", "{out}"], "--lr: must be a finite number"),
    ("train-lr-minus-inf", [*TRAIN, "--lr", "-inf", "--out", "{out}"], "--lr: must be a finite number"),
    ("train-lr-1e999", [*TRAIN, "--lr", "1e999", "--out", "{out}"], "--lr: must be a finite number"),
    ("train-out-under-file", [*TRAIN, "--out", "{file}/ck"], "is a file, not a directory"),
    ("train-out-is-file", [*TRAIN, "--out", "{file}"], "is a file: give a directory"),
    ("train-out-empty", [*TRAIN, "--out", ""], "--out: must not be empty"),
    ("train-epochs-0", [*TRAIN, "--epochs", "0", "--out", "{out}"], "--epochs: must be >= 1, got 0"),
    ("train-batch-fraction", [*TRAIN, "--batch-size", "1.5", "--out", "{out}"], "expected a whole number"),
    ("train-threads-0", [*TRAIN, "--threads", "0", "--out", "{out}"], "--threads: must be >= 1"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1", "--out", "{out}"], "--seed: must be >= 0"),
    ("train-limit-0", [*TRAIN, "--limit-train", "0", "--out", "{out}"], "--limit-train: must be >= 1"),
    ("train-model-empty", ["train", "--model", "", "--out", "{out}"], "--model: must not be empty"),
    ("train-model-unknown", ["train", "--model", "resnet21", "--out", "{out}"], "unknown model 'resnet21'"),
    ("train-data-dir-empty", [*TRAIN, "--data-dir", "", "--out", "{out}"], "--data-dir: must not be empty"),
    ("train-no-out", TRAIN, "--out"),
    ("train-precision", [*TRAIN, "--precision", "fp16", "--out", "{out}"], "invalid choice"),
    ("train-out-unfinished", [*TRAIN, "--out", "{unfinished}"], "holds an unfinished training"),
    ("train-resume-option", ["train", "--resume", "{unfinished}", "--epochs", "3"], "drop --epochs"),
    ("train-resume-overwrite", ["train", "--resume", "{unfinished}", "--overwrite"], "drop --overwrite"),
    ("train-resume-empty", ["train", "--resume", ""], "--resume: must not be empty"),
    ("train-resume-missing", ["train", "--resume", "{missing}"], "no training state there"),
    ("train-resume-finished", ["train", "--resume", "{ck}"], "has finished"),
    ("train-resume-no-options", ["train", "--resume", "{unfinished}"], "cannot be resumed"),
    # ---- profile ------------------------------------------------------------------------------
    ("profile-out-under-file", [*PROFILE, "--out", "{file}/t.json"], "is a file, not a directory"),
    ("profile-out-dir", [*PROFILE, "--out", "{dir}"], "is a directory: give a file name"),
    ("profile-out-empty", [*PROFILE, "--out", ""], "--out: must not be empty"),
    ("profile-warmup-s-nan", [*PROFILE, "--warmup-s", "nan", "--out", "{out}"], "--warmup-s: must be a finite"),
    ("profile-warmup-s-neg", [*PROFILE, "--warmup-s", "-1", "--out", "{out}"], "--warmup-s: must be >= 0"),
    ("profile-in-channels-0", [*PROFILE, "--in-channels", "0", "--out", "{out}"], "--in-channels: must be >= 1"),
    ("profile-num-classes-0", [*PROFILE, "--num-classes", "0", "--out", "{out}"], "--num-classes: must be >= 1"),
    ("profile-resume-overwrite", [*PROFILE, "--out", "{lut}", "--resume", "--overwrite"], "not allowed with"),
    ("profile-batch-0", [*PROFILE, "--batch", "0", "--out", "{out}"], "--batch: must be >= 1"),
    ("profile-repeats-2", [*PROFILE, "--repeats", "2", "--out", "{out}"], "--repeats: must be >= 3"),
    ("profile-threads-0", [*PROFILE, "--threads", "0", "--out", "{out}"], "--threads: must be >= 1"),
    ("profile-grid-nan", [*PROFILE, "--grid", "0.5,nan,1", "--out", "{out}"], "--grid"),
    ("profile-input-size", [*PROFILE, "--input-size", "0x0", "--out", "{out}"], "--input-size must be positive"),
    ("profile-backend", [*PROFILE, "--backend", "nosuch", "--out", "{out}"], "unknown backend 'nosuch'"),
    ("profile-checkpoint-empty", ["profile", "--checkpoint", "", "--out", "{out}"], "must not be empty"),
    ("profile-checkpoint-missing", ["profile", "--checkpoint", "{missing}", "--out", "{out}"], "not found"),
    ("profile-recalibrate-alone", [*PROFILE, "--recalibrate", "--out", "{out}"], "--recalibrate"),
    ("profile-exists", [*PROFILE, "--out", "{lut}"], "--resume"),
    ("profile-resume-missing", [*PROFILE, "--resume", "--out", "{out}"], "does not exist"),
    # ---- lut-check ----------------------------------------------------------------------------
    ("lut-check-nan-table", ["lut-check", "--lut", "{nan_lut}"], "not finite at entries."),
    ("lut-check-dir-table", ["lut-check", "--lut", "{dir}"], "is a directory, not a latency-table file"),
    ("lut-check-missing-table", ["lut-check", "--lut", "{missing}"], "not found"),
    ("lut-check-lut-empty", ["lut-check", "--lut", ""], "--lut: must not be empty"),
    ("lut-check-out-empty", ["lut-check", "--lut", "{lut}", "--out", ""], "--out: must not be empty"),
    ("lut-check-out-under-file", ["lut-check", "--lut", "{lut}", "--out", "{file}/c.json"], "is a file, not"),
    ("lut-check-plans-0", ["lut-check", "--lut", "{lut}", "--plans", "0"], "--plans: must be >= 1"),
    ("lut-check-repeats-2", ["lut-check", "--lut", "{lut}", "--repeats", "2"], "--repeats: must be >= 3"),
    ("lut-check-other-model", ["lut-check", "--lut", "{lut}", "--model", "resnet56"], "not 'resnet56'"),
    ("lut-check-model-and-ck", ["lut-check", "--lut", "{lut}", "--model", "x", "--checkpoint", "y"], "not allowed"),
    # ---- prune: options -----------------------------------------------------------------------
    ("prune-decay-abc", [*PRUNE, "--budget", "0.5x", "--agent-option", "decay=abc"], "decay must be a number"),
    ("prune-decay-nan", [*PRUNE, "--budget", "0.5x", "--agent-option", "decay=NaN"], "decay must be a finite"),
    ("prune-iterations-float", [*PRUNE, "--budget", "0.5x", "--agent-option", "max_iterations=2.5"], "whole"),
    ("prune-option-no-value", [*PRUNE, "--budget", "0.5x", "--agent-option", "decay"], "expected KEY=VALUE"),
    ("prune-option-unknown", [*PRUNE, "--budget", "0.5x", "--agent-option", "decy=0.9"], "did you mean decay"),
    ("prune-settle-s-nan", [*PRUNE, "--ratio", "0.5", "--settle-s", "nan"], "--settle-s: must be a finite"),
    ("prune-ratio-nan", [*PRUNE, "--ratio", "nan"], "--ratio: must be a finite number"),
    ("prune-ratio-inf", [*PRUNE, "--ratio", "inf"], "--ratio: must be a finite number"),
    ("prune-ratio-0", [*PRUNE, "--ratio", "0"], "--ratio: must be in (0, 1]"),
    ("prune-margin-nan", [*PRUNE, "--budget", "0.5x", "--margin", "nan"], "--margin: must be a finite"),
    ("prune-min-keep-0", [*PRUNE, "--ratio", "0.5", "--min-keep-ratio", "0"], "--min-keep-ratio: must be in"),
    ("prune-max-tries-0", [*PRUNE, "--budget", "0.5x", "--max-tries", "0"], "--max-tries: must be >= 1"),
    ("prune-finetune-neg", [*PRUNE, "--ratio", "0.5", "--finetune-steps", "-1"], "--finetune-steps: must be >= 0"),
    ("prune-threads-0", [*PRUNE, "--ratio", "0.5", "--threads", "0"], "--threads: must be >= 1, got 0"),
    ("prune-batch-0", [*PRUNE, "--ratio", "0.5", "--batch", "0"], "--batch: must be >= 1, got 0"),
    ("prune-repeats-2", [*PRUNE, "--ratio", "0.5", "--repeats", "2"], "--repeats: must be >= 3"),
    ("prune-budget-minus", [*PRUNE, "--budget", "-3ms"], "budget '-3ms' must be positive"),
    ("prune-budget-minus-eq", [*PRUNE, "--budget=-3ms"], "budget '-3ms' must be positive"),
    ("prune-budget-nan", [*PRUNE, "--budget", "nanx"], "malformed budget"),
    ("prune-no-goal", PRUNE, "exactly one of"),
    ("prune-agent-unknown", [*PRUNE, "--budget", "0.5x", "--agent", "netadpt"], "did you mean netadapt"),
    (
        "prune-backend-unknown",
        ["prune", "--checkpoint", "{ck}", "--out", "{out}", "--ratio", "0.5", "--backend", "x"],
        "profiler 'x'",
    ),
    # ---- prune: paths -------------------------------------------------------------------------
    ("prune-checkpoint-empty", [*PRUNE, "--ratio", "0.5", "--checkpoint", ""], "--checkpoint: must not be empty"),
    ("prune-checkpoint-missing", [*PRUNE, "--ratio", "0.5", "--checkpoint", "{missing}"], "not found"),
    ("prune-lut-empty", [*PRUNE, "--ratio", "0.5", "--lut", ""], "--lut: must not be empty"),
    ("prune-lut-dir", [*PRUNE, "--ratio", "0.5", "--lut", "{dir}"], "is a directory, not a latency-table file"),
    ("prune-lut-missing", [*PRUNE, "--ratio", "0.5", "--lut", "{missing}"], "not found"),
    ("prune-out-empty", ["prune", "--checkpoint", "{ck}", "--ratio", "0.5", "--out", ""], "must not be empty"),
    ("prune-out-under-file", ["prune", "--checkpoint", "{ck}", "--ratio", "0.5", "--out", "{file}/r"], "is a file"),
    ("prune-out-is-file", ["prune", "--checkpoint", "{ck}", "--ratio", "0.5", "--out", "{file}"], "is a file"),
    ("prune-out-not-empty", ["prune", "--checkpoint", "{ck}", "--ratio", "0.5", "--out", "{finished}"], "--resume"),
    ("prune-no-checkpoint", ["prune", "--ratio", "0.5", "--out", "{out}"], "--checkpoint and --out are required"),
    ("prune-plan-empty", [*PRUNE, "--plan", ""], "--plan: must not be empty"),
    ("prune-plan-dict-groups", [*PRUNE, "--plan", "{dict_groups}"], "'groups' as a list"),
    ("prune-plan-keep-str", [*PRUNE, "--plan", "{keep_str}"], "keep must be a whole number, got '8'"),
    ("prune-plan-keep-float", [*PRUNE, "--plan", "{keep_float}"], "keep must be a whole number, got 7.5"),
    # ---- prune: inputs that are not healthy, or do not fit ----------------------------------
    ("prune-nan-weight", [*PRUNE, "--ratio", "0.5", "--checkpoint", "{nan_ck}"], "are not finite: tensor"),
    ("prune-all-nan", [*PRUNE, "--budget", "0.6x", "--checkpoint", "{all_nan_ck}"], "are not finite: tensor"),
    ("prune-nan-table", [*PRUNE, "--budget", "0.5x", "--lut", "{nan_lut}"], "not finite at entries."),
    ("prune-other-model-table", [*PRUNE, "--ratio", "0.5", "--lut", "{other_lut}"], "model='resnet56'"),
    ("prune-other-threads", [*PRUNE, "--budget", "0.5x", "--lut", "{lut}", "--threads", "2"], "another device"),
    # ---- prune: resume ------------------------------------------------------------------------
    ("resume-conflict", ["prune", "--resume", "{finished}", "--checkpoint", "{ck}", "--ratio", "0.3"], "drop "),
    ("resume-default-value", ["prune", "--resume", "{finished}", "--repeats", "10"], "drop --repeats"),
    ("resume-abbreviated", ["prune", "--resume", "{finished}", "--no-dens"], "drop --no-densify"),
    ("resume-empty", ["prune", "--resume", ""], "--resume: must not be empty"),
    ("resume-missing", ["prune", "--resume", "{missing}"], "no prune run there"),
    ("resume-not-a-run", ["prune", "--resume", "{dir}"], "no prune run there"),
    # ---- compare ------------------------------------------------------------------------------
    ("compare-no-checkpoint", ["compare", "--out", "{out}"], "--checkpoint and --out are required"),
    ("compare-checkpoint-missing", [*COMPARE, "--checkpoint", "{missing}"], "not found"),
    ("compare-budget-malformed", [*COMPARE, "--budgets", "0.5x,half"], "malformed budget 'half'"),
    ("compare-budget-twice", [*COMPARE, "--budgets", "0.5x,0.5x"], "0.5x more than once"),
    ("compare-budget-empty-entry", [*COMPARE, "--budgets", "0.5x,"], "has an empty entry"),
    ("compare-budgets-empty", [*COMPARE, "--budgets", ""], "--budgets: must not be empty"),
    ("compare-agent-unknown", [*COMPARE, "--agents", "uniform,netadpt"], "did you mean netadapt"),
    ("compare-twin-unknown", [*COMPARE, "--twins", "unifrm"], "did you mean uniform"),
    ("compare-nothing", [*COMPARE, "--agents", "none", "--twins", "none"], "nothing to compare"),
    ("compare-option-no-agent", [*COMPARE, "--agent-option", "episodes=3"], "write AGENT.KEY=VALUE"),
    ("compare-option-stray", [*COMPARE, "--agents", "uniform", "--agent-option", "amc.episodes=3"], "not in --agents"),
    ("compare-option-unknown", [*COMPARE, "--agent-option", "netadapt.decy=0.9"], "did you mean decay"),
    ("compare-option-nan", [*COMPARE, "--agent-option", "netadapt.decay=NaN"], "decay must be a finite"),
    ("compare-learn-at", [*COMPARE, "--budgets", "0.7x,0.5x", "--legr-learn-at", "0.3x"], "not one of --budgets"),
    ("compare-margin-nan", [*COMPARE, "--margin", "nan"], "--margin: must be a finite"),
    ("compare-other-model-table", [*COMPARE, "--lut", "{other_lut}"], "model='resnet56'"),
    ("compare-out-not-empty", ["compare", "--checkpoint", "{ck}", "--out", "{finished}"], "--resume"),
    ("compare-out-is-file", ["compare", "--checkpoint", "{ck}", "--out", "{file}"], "is a file"),
    ("compare-resume-missing", ["compare", "--resume", "{missing}"], "no compare there"),
    ("compare-resume-a-prune-run", ["compare", "--resume", "{finished}"], "no compare there"),
    ("compare-resume-conflict", ["compare", "--resume", "{finished}", "--budgets", "0.5x"], "drop --budgets"),
    # ---- export -------------------------------------------------------------------------------
    ("export-run-missing", ["export", "--run", "{missing}", "--format", "onnx"], "no such directory"),
    ("export-run-empty", ["export", "--run", "", "--format", "onnx"], "--run: must not be empty"),
    ("export-no-model", ["export", "--run", "{dir}", "--format", "onnx"], "holds no model to export"),
    ("export-unfinished-run", ["export", "--run", "{finished}", "--format", "onnx"], "has no model yet"),
    ("export-format", ["export", "--run", "{ck}", "--format", "tflite"], "invalid choice"),
    ("export-no-format", ["export", "--run", "{ck}"], "--format"),
    ("export-batch-0", ["export", "--run", "{ck}", "--format", "onnx", "--batch", "0"], "--batch: must be >= 1"),
    ("export-tolerance-nan", ["export", "--run", "{ck}", "--format", "onnx", "--tolerance", "nan"], "finite"),
    ("export-opset-torchscript", ["export", "--run", "{ck}", "--format", "torchscript", "--opset", "17"], "ONNX"),
    ("export-out-dir", ["export", "--run", "{ck}", "--format", "onnx", "--out", "{dir}"], "is a directory"),
    ("export-out-under-file", ["export", "--run", "{ck}", "--format", "onnx", "--out", "{file}/m.onnx"], "is a file"),
    ("export-out-exists", ["export", "--run", "{ck}", "--format", "onnx", "--out", "{file}"], "--overwrite"),
    ("export-repeats-2", ["export", "--run", "{ck}", "--format", "onnx", "--repeats", "2"], "--repeats: must be >= 3"),
    # ---- prune / sensitivity: a checkpoint that names no dataset ------------------------------
    ("prune-nodata-budget", [*PRUNE, "--budget", "0.5x", "--checkpoint", "{nodata_ck}"], "needs one: pass --data"),
    ("prune-nodata-finetune", [*PRUNE, "--ratio", "0.5", "--checkpoint", "{nodata_ck}"], "or --finetune-steps 0"),
    (
        "prune-nodata-taylor",
        [*PRUNE, "--ratio", "0.5", "--checkpoint", "{nodata_ck}", "--finetune-steps", "0", "--criterion", "taylor"],
        "--criterion taylor",
    ),
    ("prune-data-unknown", [*PRUNE, "--ratio", "0.5", "--data", "nosuch"], "unknown dataset 'nosuch'"),
    ("prune-data-empty", [*PRUNE, "--ratio", "0.5", "--data", ""], "--data: must not be empty"),
    ("sensitivity-nodata", ["sensitivity", "--checkpoint", "{nodata_ck}", "--out", "{out}"], "pass --data"),
    # ---- import -------------------------------------------------------------------------------
    ("import-whole-module", [*IMPORT, "--weights", "{whole_module}", "--out", "{out}"], "model.state_dict()"),
    ("import-garbage", [*IMPORT, "--weights", "{garbage_pth}", "--out", "{out}"], "not a readable torch state"),
    ("import-other-arch", [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--model", "resnet56"], "missing ("),
    ("import-classes", [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--num-classes", "5"], "wrong shape"),
    ("import-channels", [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--in-channels", "3"], "wrong shape"),
    (
        "import-safetensors-arch",
        [*IMPORT, "--weights", "{ck}/model.safetensors", "--out", "{out}", "--model", "mobilenetv2"],
        "do not fit",
    ),
    ("import-weights-missing", [*IMPORT, "--weights", "{missing}.pth", "--out", "{out}"], "not found"),
    ("import-weights-dir", [*IMPORT, "--weights", "{dir}", "--out", "{out}"], "is a directory"),
    ("import-weights-format", [*IMPORT, "--weights", "{file}", "--out", "{out}"], "unknown weights format"),
    ("import-weights-empty", [*IMPORT, "--weights", "", "--out", "{out}"], "--weights: must not be empty"),
    ("import-no-weights", [*IMPORT, "--out", "{out}"], "--weights"),
    (
        "import-module-missing",
        [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--model", "no_such_pkg.nets:build"],
        "PYTHONPATH",
    ),
    (
        "import-model-malformed",
        [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--model", "my-nets:build"],
        "package.module:factory",
    ),
    (
        "import-input-size",
        [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--input-size", "big"],
        "must look like",
    ),
    ("import-classes-0", [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--num-classes", "0"], "must be >= 1"),
    (
        "import-data-unknown",
        [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--data", "nosuch"],
        "unknown dataset",
    ),
    (
        "import-data-shape",
        [*IMPORT, "--weights", "{r20_pth}", "--out", "{out}", "--data", "synthetic", "--in-channels", "3"],
        "--data synthetic has 1 input channels",
    ),
    ("import-out-exists", [*IMPORT, "--weights", "{r20_pth}", "--out", "{dir}"], "already exists"),
    ("import-out-is-file", [*IMPORT, "--weights", "{r20_pth}", "--out", "{file}"], "is a file"),
    # ---- usage --------------------------------------------------------------------------------
    ("no-verb", [], "required"),
    ("unknown-verb", ["prun"], "invalid choice"),
    ("unknown-option", ["prune", "--no-such-option"], "unrecognized arguments"),
    ("precision", [*PRUNE, "--ratio", "0.5", "--precision", "fp16"], "invalid choice"),
]


def _tree(*roots: Path) -> dict[str, float | None]:
    """Every path under ``roots``, with its modification time for a file: what a refused command must leave alone.

    (A folder's own time may move: the check that a folder is writable creates and removes a probe file.)
    """
    return {str(p): None if p.is_dir() else p.lstat().st_mtime for root in roots for p in [root, *root.rglob("*")]}


def _argv(template: list[str], inputs: dict[str, Path], out: Path) -> list[str]:
    return [arg.format(out=out, **{k.replace("-", "_"): v for k, v in inputs.items()}) for arg in template]


def _fill(template: list[str]) -> list[str]:
    return [arg.replace("{dict_groups}", "{dict_groups}").replace("{keep-", "{keep_") for arg in template]


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch, capsys, argv: list[str], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a default output path would land here
    before = _tree(tmp_path, inputs["ck"].parent, inputs["lut"].parent)
    code = main(_argv(argv, inputs, tmp_path / "out"))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert _tree(tmp_path, inputs["ck"].parent, inputs["lut"].parent) == before


# ---- outputs the user may not write -------------------------------------------------------------


def _without_permission_override() -> list[str] | None:
    """A command prefix under which chmod binds: none for a non-root user, root without
    CAP_DAC_OVERRIDE via setpriv; None where root cannot drop it (the test then skips)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


RUNNER = """
import contextlib, io, json, sys
from hwprune.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_read_only_output_locations_are_refused_before_any_work(
    inputs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    prefix = _without_permission_override()
    if prefix is None:
        pytest.skip("root cannot drop CAP_DAC_OVERRIDE here (no setpriv or no permission to use it)")
    ro = tmp_path / "read-only"
    ro.mkdir()
    shutil.copy(inputs["lut"], ro / "lut.json")
    run = ro / "run"
    start_run(JobConfig(checkpoint=str(inputs["ck"]), out=str(run), ratio=0.5), None)
    cases = [
        ([*TRAIN, "--out", f"{ro}/ck"], f"cannot write in {ro}"),
        ([*PROFILE, "--out", f"{ro}/t.json"], f"cannot write in {ro}"),
        (["lut-check", "--lut", str(inputs["lut"]), "--out", f"{ro}/c.json"], f"cannot write in {ro}"),
        (["lut-check", "--lut", f"{ro}/lut.json"], "--out"),  # the default report, beside the table
        (["prune", "--checkpoint", str(inputs["ck"]), "--ratio", "0.5", "--out", f"{ro}/run2"], f"in {ro}"),
        (["prune", "--resume", str(run)], f"cannot write in {run}"),
    ]
    for path in (run, ro):
        path.chmod(0o555)
    try:
        before = _tree(tmp_path)
        env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1]), "TQDM_DISABLE": "1"}
        done = subprocess.run(
            [*prefix, sys.executable, "-c", RUNNER, json.dumps([argv for argv, _ in cases])],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        after = _tree(tmp_path)
    finally:
        for path in (ro, run):
            path.chmod(0o755)
    assert done.returncode == 0, done.stderr
    for (argv, needle), (code, err) in zip(cases, json.loads(done.stdout), strict=True):
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, (argv, err)
        assert "Traceback" not in err
    assert after == before


# ---- resume -------------------------------------------------------------------------------------


def test_a_finished_run_is_not_run_again(inputs: dict[str, Path], capsys) -> None:
    """Finished is not an error: exit 0, one line saying where the report is, and nothing touched."""
    before = _tree(inputs["finished"])
    assert main(["prune", "--resume", str(inputs["finished"])]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"run {inputs['finished']} is finished: its report is {inputs['finished'] / 'report.md'}"
    assert err == "" and _tree(inputs["finished"]) == before


def test_a_run_records_absolute_paths_so_it_resumes_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = JobConfig(checkpoint="ck", out="run", ratio=0.5, lut="t.json", data_dir="data")
    job = json.loads((start_run(cfg, None) / "job.json").read_text())["config"]
    assert [job[name] for name in ("checkpoint", "lut", "data_dir")] == [
        str(Path.cwd() / n) for n in ("ck", "t.json", "data")
    ]
    assert job["plan"] is None


# ---- the mechanisms -----------------------------------------------------------------------------


def _value_options() -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [
        (f"{verb} {max(a.option_strings, key=len)}", a)
        for verb, sub in verbs.items()
        for a in sub._actions
        if a.option_strings and a.nargs != 0 and a.choices is None and a.dest != "help"
    ]


@pytest.mark.parametrize("action", [a for _, a in _value_options()], ids=[n for n, _ in _value_options()])
def test_every_option_value_is_checked_while_parsing(action: argparse.Action, tmp_path: Path, monkeypatch) -> None:
    """A new option declared with ``type=float`` (NaN passes) or no type ('' passes) fails here."""
    monkeypatch.chdir(tmp_path)  # an output type probes the folder it would write in
    assert getattr(action.type, "__module__", None) == "hwprune.options", f"{action.type} is not a checking type"
    for empty in ("", "  "):
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(empty)
    try:
        numeric = isinstance(action.type("1"), int | float)
    except argparse.ArgumentTypeError:
        numeric = True  # refuses 1 (e.g. --repeats >= 3): a number type
    if numeric:
        for value in ("nan", "inf", "-inf", "1e999", "abc"):
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(value)


FLOAT_FIELDS = [f.name for f in fields(JobConfig) if "float" in str(f.type)]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_of_a_job_must_be_finite(name: str, value: float) -> None:
    assert len(FLOAT_FIELDS) >= 7
    cfg = JobConfig(checkpoint="ck", out="run", ratio=0.5)
    setattr(cfg, name, value)
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')} must be"):
        validate_config(cfg)


def test_agent_options_are_typed() -> None:
    assert get_agent("netadapt", decay=1).decay == 1.0 and isinstance(get_agent("netadapt", decay=1).decay, float)
    for option, value, says in (
        ("decay", "abc", "decay must be a number, got 'abc'"),
        ("decay", True, "decay must be a number"),
        ("decay", math.inf, "decay must be a finite number"),
        ("max_iterations", 2.5, "max_iterations must be a whole number"),
        ("progress", "yes", "progress must be true or false"),
        ("selection", 3, "selection must be a text"),
    ):
        with pytest.raises(ConfigError, match=says):
            get_agent("netadapt", **{option: value})


def test_a_nan_table_entry_is_named(inputs: dict[str, Path]) -> None:
    with pytest.raises(TableError, match=r"not finite at entries\.conv-.*\[c_in=\d+,c_out=\d+\]\.measurement"):
        LatencyTable.load(inputs["nan_lut"])


def test_a_nan_weight_is_named(inputs: dict[str, Path]) -> None:
    with pytest.raises(ArtifactError, match=r"tensor \S+ has 1 NaN/inf value\(s\) of \d+"):
        load_checkpoint(inputs["nan_ck"])


def test_diverged_training_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    from hwprune.commands import train as train_cmd

    def diverging(model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
        return {"val_acc": 0.1, "epochs": []}

    monkeypatch.setattr(train_cmd, "train", diverging)
    out = tmp_path / "ck"
    assert main([*TRAIN, "--limit-train", "64", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "lower --lr" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_negative_value_reaches_its_option() -> None:
    assert join_negative_values(["prune", "--budget", "-3ms", "--lr", "-inf", "--ratio", "0.5"]) == [
        "prune",
        "--budget=-3ms",
        "--lr=-inf",
        "--ratio",
        "0.5",
    ]
    assert join_negative_values(["--out", "-", "--budget=-1ms"]) == ["--out", "-", "--budget=-1ms"]
