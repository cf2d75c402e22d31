"""Versioned JSON and safetensors artifacts, written atomically so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from hwprune.errors import ArtifactError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, kind: str, schema_version: int) -> dict[str, Any]:
    """Read a JSON artifact of ``kind``; anything unexpected is one ArtifactError line."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a {kind} file: give the JSON file's path")
    if not path.is_file():
        raise ArtifactError(f"{kind} file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ArtifactError(f"cannot read {kind} file {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{kind} file {path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path} is not a hwprune {kind} (found kind={found!r})")
    if data.get("schema_version") != schema_version:
        raise ArtifactError(
            f"{path} has {kind} schema_version {data.get('schema_version')!r}; this hwprune reads "
            f"version {schema_version}: re-create the file with this version"
        )
    return data


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state, strict=True)`` for tensors read from safetensors.

    A state dict saved by torch carries each module's version in ``_metadata``; safetensors keeps
    tensors only, and some modules refuse a state without it (torchvision's MNASNet). The model's
    own metadata is the right one: it is the architecture the tensors were saved from.
    """
    from collections import OrderedDict

    versioned: Any = OrderedDict(state)
    versioned._metadata = getattr(model.state_dict(), "_metadata", None)
    model.load_state_dict(versioned, strict=True)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"weights file {path} is corrupt or not safetensors ({exc})") from None
