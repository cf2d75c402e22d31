"""Trained-model checkpoints: ``model.json`` (spec + provenance) beside ``model.safetensors``.

Why this shape: loading must never unpickle (a checkpoint from the internet is data, not code),
so the architecture is rebuilt from its registered name and only tensors are read. The JSON
records how the weights were made, so a shipped baseline can be reproduced and audited.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwprune import __version__
from hwprune.errors import ArtifactError, ConfigError, HwpruneError
from hwprune.io import load_into, load_weights, read_json, save_weights, write_json
from hwprune.models import ModelSpec
from hwprune.train_state import has_train_state

KIND = "checkpoint"
SCHEMA_VERSION = 1
JSON_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(out_dir: str | Path, model: nn.Module, spec: ModelSpec, meta: dict[str, Any]) -> Path:
    """Write weights, then the JSON that points at them (each atomically); returns the JSON path.

    ``meta`` carries provenance such as ``data``, ``seed``, ``epochs``, ``test_accuracy`` and
    ``command``; the reserved keys below are filled in here and win over ``meta``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    save_weights(weights, model.state_dict())
    doc = dict(meta) | {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "hwprune_version": __version__,
        "spec": spec.to_dict(),
        "weights": WEIGHTS_NAME,
        "weights_sha256": file_sha256(weights),
    }
    # Keep the identifying keys first so the file reads well.
    head = ("kind", "schema_version", "hwprune_version", "spec")
    ordered = {k: doc[k] for k in head} | {k: v for k, v in doc.items() if k not in head}
    write_json(out / JSON_NAME, ordered)
    for path in (weights, out / JSON_NAME):
        path.chmod(0o644)  # the atomic writers create private temp files; a checkpoint is for sharing
    return out / JSON_NAME


def _json_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        return p / JSON_NAME
    if p.suffix == ".safetensors":
        return p.with_name(JSON_NAME)
    return p


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """Rebuild the model from its spec and load weights strictly; returns (model in eval mode, spec, json).

    Every failure (missing file, wrong kind, corrupt or foreign weights) is one ArtifactError line.
    """
    json_path = _json_path(path)
    if not json_path.is_file() and has_train_state(json_path.parent):
        raise ArtifactError(
            f"{json_path.parent} holds an unfinished training (its saved state, no checkpoint yet): "
            f"continue it with `hwprune train --resume {json_path.parent}`"
        )
    doc = read_json(json_path, KIND, SCHEMA_VERSION)
    weights_path = json_path.parent / str(doc.get("weights", WEIGHTS_NAME))
    try:
        spec = ModelSpec.from_dict(doc.get("spec") or {})
        model = spec.build()
    except HwpruneError as exc:
        raise ArtifactError(f"checkpoint {json_path}: {exc}") from None
    if weights_path.is_file() and doc.get("weights_sha256") and file_sha256(weights_path) != doc["weights_sha256"]:
        raise ArtifactError(
            f"{weights_path} does not match the checksum in {json_path}: the file is corrupt or was replaced"
        )
    state = load_weights(weights_path)
    _check_state(model, state, weights_path, spec)
    broken = nonfinite_tensor(state)
    if broken:
        raise ArtifactError(f"weights in {weights_path} are not finite: {broken}; retrain or re-export the checkpoint")
    load_into(model, state)
    model.eval()
    return model, spec, doc


def nonfinite_tensor(state: dict[str, Any]) -> str | None:
    """The first floating-point tensor holding NaN or inf, described ("tensor fc.weight has 3 NaN/inf of 640").

    A diverged training writes weights that load, run and score chance; every search on them
    reads noise and every budget is "met". One NaN is as broken as all of them.
    """
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"tensor {name} has {bad} NaN/inf value(s) of {tensor.numel()}"
    return None


def _check_state(model: nn.Module, state: dict[str, Any], path: Path, spec: ModelSpec) -> None:
    """Compare names and shapes first, so a mismatch is one readable line, not torch's paragraph."""
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ArtifactError(f"weights in {path} do not fit model '{spec.name}': tensors {mismatch}")


def state_mismatch(expected: dict[str, Any], state: dict[str, Any], shown: int = 3) -> str | None:
    """Missing, unexpected and mis-shaped tensors as one phrase with counts and the first few names, or None.

    e.g. "2 missing (fc.weight, fc.bias); 1 of the wrong shape (conv1.weight: (8, 3, 3, 3) vs (16, 3, 3, 3))".
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]

    def first(names: list[str], describe: Callable[[str], str] = str) -> str:
        more = f", ... {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(describe(n) for n in names[:shown]) + more

    def shapes(k: str) -> str:
        return f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({first(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} of the wrong shape ({first(wrong, shapes)})")
    return "; ".join(parts) or None


def save_checkpoint_dir(
    out: str | Path, model: nn.Module, spec: ModelSpec, meta: dict[str, Any], overwrite: bool = False
) -> Path:
    """:func:`save_checkpoint` into a hidden sibling folder renamed to ``out``: readers never see half a checkpoint,
    and a failure leaves nothing behind. An existing ``out`` is replaced only with ``overwrite``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists: choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
        save_checkpoint(tmp, model, spec, meta)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return out / JSON_NAME
