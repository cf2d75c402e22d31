"""A user's trained weights, read as tensors only, and fitted to the model they name.

Why this shape: a ``.pth`` from a colleague or the internet is data, and unpickling it can run
any code, so ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` alone and a
pickled whole module (``torch.save(model)``) is refused with the one-line fix. The common ways a
state dict arrives are accepted when they are unambiguous: wrapped in a training checkpoint under
one of :data:`WRAPPER_KEYS`, or with every name prefixed by ``module.`` (DataParallel /
DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hwprune.checkpoint import nonfinite_tensor, state_mismatch
from hwprune.errors import ArtifactError, ModelError, one_line
from hwprune.io import load_weights
from hwprune.models import ModelSpec

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
"""Keys under which training scripts commonly nest the state dict in a checkpoint dict."""
PREFIXES = ("module.", "_orig_mod.")
"""Prefixes wrappers add to every name: DataParallel / DDP, and torch.compile."""
TORCH_SUFFIXES = (".pth", ".pt")
SAVE_STATE_DICT = "save the weights alone with torch.save(model.state_dict(), PATH) and import that file"


@dataclass
class StateDict:
    """Tensors by name, and what was done to find them (said to the user and kept in the checkpoint)."""

    tensors: dict[str, torch.Tensor]
    unwrapped: str | None = None  # the key of the checkpoint dict the state dict was taken from
    stripped: list[str] = field(default_factory=list)  # prefixes removed from every name

    def notes(self) -> list[str]:
        said = [f"took the state dict under key '{self.unwrapped}'"] if self.unwrapped else []
        return said + [f"stripped the '{p}' prefix from every name" for p in self.stripped]


def read_state_dict(path: str | Path) -> StateDict:
    """The tensors in ``path`` (.safetensors, or a .pth/.pt state dict), unwrapped and un-prefixed."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"--weights {path} is a directory: give a .safetensors, .pth or .pt file")
    if not path.is_file():
        raise ArtifactError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        state = StateDict(load_weights(path))
    elif path.suffix in TORCH_SUFFIXES:
        state = _unwrap(_torch_load(path), path)
    else:
        raise ArtifactError(
            f"{path}: unknown weights format '{path.suffix}': give a .safetensors file or a .pth/.pt state dict"
        )
    if not state.tensors:
        raise ArtifactError(f"{path} holds no tensors: {SAVE_STATE_DICT}")
    _strip_prefixes(state)
    return state


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise ArtifactError(
                f"{path} holds a pickled {found.group(1)} (e.g. torch.save(model)), not a state dict; hwprune never "
                f"unpickles code: {SAVE_STATE_DICT}"
            ) from None
        raise ArtifactError(f"{path} is not a readable torch state dict (corrupt or another format)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ArtifactError(f"{path} is not a readable torch state dict ({reason})") from None


def _all_tensors(obj: object) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: object, path: Path) -> StateDict:
    """A state dict as it is, or the single one nested under a :data:`WRAPPER_KEYS` key of a checkpoint dict."""
    if _all_tensors(obj):
        return StateDict(dict(obj))  # type: ignore[call-overload]  # checked by _all_tensors
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path} holds a {type(obj).__name__}, not a state dict: {SAVE_STATE_DICT}")
    nested = [k for k in WRAPPER_KEYS if _all_tensors(obj.get(k)) and obj[k]]
    if len(nested) == 1:
        return StateDict(dict(obj[nested[0]]), unwrapped=nested[0])
    keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
    if nested:
        raise ArtifactError(
            f"{path} holds several state dicts (under {', '.join(repr(k) for k in nested)}): save the one to "
            "import with torch.save(checkpoint[KEY], PATH)"
        )
    raise ArtifactError(
        f"{path} is a dict ({keys}) with no state dict under {', '.join(repr(k) for k in WRAPPER_KEYS)}: "
        f"{SAVE_STATE_DICT}"
    )


def _strip_prefixes(state: StateDict) -> None:
    """Drop a wrapper's prefix while every name carries it (``module._orig_mod.`` loses both)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(name.startswith(prefix) for name in state.tensors):
                state.tensors = {name[len(prefix) :]: t for name, t in state.tensors.items()}
                state.stripped.append(prefix)
                stripped = True


def fit_weights(spec: ModelSpec, path: str | Path) -> tuple[nn.Module, StateDict]:
    """``spec``'s model with the weights in ``path`` loaded strictly (eval mode), and how they were read.

    Names and shapes are compared before loading, so a mismatch is one line naming the first few
    tensors of each kind, with the likely fix; then one sample goes through at the spec's input.
    """
    model = spec.build()
    state = read_state_dict(path)
    expected = model.state_dict()
    mismatch = state_mismatch(expected, state.tensors)
    if mismatch:
        raise ModelError(
            f"weights in {path} do not fit model '{spec.name}' with {spec.in_channels} input channels and "
            f"{spec.num_classes} classes: tensors {mismatch}; wrong --model, --num-classes or --in-channels?"
        )
    broken = nonfinite_tensor(state.tensors)
    if broken:
        raise ArtifactError(f"weights in {path} are not finite: {broken}")
    model.load_state_dict(state.tensors, strict=True)  # fp16/bf16 tensors are copied into the fp32 parameters
    model.eval()
    check_forward(model, spec)
    return model, state


def check_forward(model: nn.Module, spec: ModelSpec) -> None:
    """One sample through the model at the declared input: a wrong --input-size fails here, not in a later command."""
    shape = (1, spec.in_channels, *spec.input_size)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as exc:  # the user's model: any error it raises is theirs to see, on one line
        raise ModelError(
            f"model '{spec.name}' does not run on a {'x'.join(map(str, shape))} input ({one_line(exc)}): "
            "wrong --input-size or --in-channels?"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, spec.num_classes):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"model '{spec.name}' returns {found} for one sample, not (1, {spec.num_classes}) class scores: "
            "wrong --num-classes, or a model that is not a classifier?"
        )
