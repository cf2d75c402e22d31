"""The state of a training between epochs: weights, optimizer, LR schedule position, RNG streams, history.

Why: a baseline trains for hours on two cores, so a crash or Ctrl-C must cost at most the epoch
in progress, and a resumed training must end with the weights an uninterrupted one would have.
Every tensor (weights, optimizer buffers, the torch RNG states) goes into one safetensors file;
everything else (param-group settings, scheduler counters, Python and NumPy RNG states, the
history) into versioned JSON. Nothing is pickled: a state someone hands over is data, not code.

Crash safety: an epoch's tensors are written under a name of their own first, then the JSON that
names them (with their checksum), then the previous epoch's file is removed, so every moment
leaves one complete state on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwprune import __version__
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import load_weights, read_json, save_weights, write_json

KIND = "train-state"
SCHEMA_VERSION = 1
JSON_NAME = "train-state.json"
_TENSORS = "train-state-epoch{epoch}.safetensors"


@dataclass
class TrainState:
    """Everything a training loop needs to continue after ``epoch`` completed epochs."""

    epoch: int
    settings: dict[str, Any]  # what a resumed run must share with the original (epochs, lr, seed, ...)
    history: list[dict[str, Any]]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch's optimizer.state_dict() form
    scheduler: dict[str, Any]  # torch's lr_scheduler.state_dict() form (plain numbers)
    rng: dict[str, Any]  # see capture_rng
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's own record (e.g. the command's options)

    def check_settings(self, settings: dict[str, Any], source: str | Path) -> None:
        """Refuse to continue a run with other settings: the result would match neither run."""
        for key, value in settings.items():
            if key in self.settings and self.settings[key] != value:
                raise ConfigError(
                    f"the training state in {source} was made with {key}={self.settings[key]!r}, "
                    f"not {value!r}: resume with the settings it was started with"
                )

    @property
    def best_val_acc(self) -> float | None:
        accs = [r["val_acc"] for r in self.history if r.get("val_acc") == r.get("val_acc")]  # NaN: no val set
        return max(accs) if accs else None


# ---- RNG streams ---------------------------------------------------------------------------------


def capture_rng(generators: dict[str, torch.Generator], device: torch.device) -> dict[str, Any]:
    """The global Python / NumPy / torch RNGs and the loop's own generators (data order, augmentation)."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    rng: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    rng |= {f"gen_{key}": gen.get_state() for key, gen in generators.items()}
    return rng


def restore_rng(rng: dict[str, Any], generators: dict[str, torch.Generator], device: torch.device) -> None:
    version, words, gauss = rng["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    for key, gen in generators.items():
        gen.set_state(rng[f"gen_{key}"])


# ---- on disk -------------------------------------------------------------------------------------


def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor moved into ``tensors`` under a path-like name, leaving {"tensor": name}."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"tensor": prefix}
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, f"{prefix}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    if isinstance(value, dict) and set(value) == {"tensor"}:
        try:
            return tensors[value["tensor"]]
        except KeyError:
            raise ArtifactError(f"{source}: tensor {value['tensor']!r} is missing from the state file") from None
    if isinstance(value, dict):
        return {k: _join_tensors(v, tensors, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors, source) for v in value]
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_train_state(folder: str | Path) -> bool:
    return (Path(folder) / JSON_NAME).is_file()


def save_train_state(folder: str | Path, state: TrainState) -> Path:
    """Write ``state`` into ``folder`` (tensors, then the JSON naming them, then drop the older tensors)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    doc: dict[str, Any] = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "hwprune_version": __version__,
        "epoch": state.epoch,
        "settings": state.settings,
        "best_val_acc": state.best_val_acc,
        "last_val_acc": state.history[-1]["val_acc"] if state.history else None,
        "history": state.history,
        "extra": state.extra,
        # The optimizer's param groups and non-tensor state stay readable here; its buffers go to the tensors file.
        "optimizer": _split_tensors(state.optimizer, "optimizer", tensors),
        "scheduler": _split_tensors(state.scheduler, "scheduler", tensors),
        "rng": _split_tensors(state.rng, "rng", tensors),
        "model": _split_tensors(state.model, "model", tensors),
    }
    name = _TENSORS.format(epoch=state.epoch)
    save_weights(folder / name, tensors)
    doc["tensors"] = name
    doc["tensors_sha256"] = _sha256(folder / name)
    write_json(folder / JSON_NAME, doc)
    for old in folder.glob(_TENSORS.format(epoch="*")):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()
    return folder / JSON_NAME


def load_train_state(folder: str | Path) -> TrainState:
    """The state in ``folder``; a missing, corrupt or foreign one is one ArtifactError line."""
    json_path = Path(folder) / JSON_NAME
    doc = read_json(json_path, KIND, SCHEMA_VERSION)
    tensors_path = json_path.parent / str(doc.get("tensors", ""))
    if not tensors_path.is_file():
        raise ArtifactError(f"{json_path} names tensors file {tensors_path.name!r}, which is not there")
    if doc.get("tensors_sha256") != _sha256(tensors_path):
        raise ArtifactError(f"{tensors_path} does not match the checksum in {json_path}: the file is corrupt")
    tensors = load_weights(tensors_path)
    try:
        return TrainState(
            epoch=int(doc["epoch"]),
            settings=dict(doc["settings"]),
            history=list(doc["history"]),
            model=_join_tensors(doc["model"], tensors, json_path),
            optimizer=_optimizer_from_json(_join_tensors(doc["optimizer"], tensors, json_path)),
            scheduler=_join_tensors(doc["scheduler"], tensors, json_path),
            rng=_join_tensors(doc["rng"], tensors, json_path),
            extra=dict(doc.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{json_path} is malformed ({type(exc).__name__}: {exc})") from None


def _optimizer_from_json(optimizer: dict[str, Any]) -> dict[str, Any]:
    """JSON turned the per-parameter state's integer keys into strings; torch wants them back."""
    return {"state": {int(k): v for k, v in optimizer["state"].items()}, "param_groups": optimizer["param_groups"]}


def remove_train_state(folder: str | Path) -> None:
    """Once the finished checkpoint is written, the state has done its job (it is as large again as the model)."""
    folder = Path(folder)
    (folder / JSON_NAME).unlink(missing_ok=True)
    for old in folder.glob(_TENSORS.format(epoch="*")):
        old.unlink(missing_ok=True)
