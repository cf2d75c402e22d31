"""A user's model as the library sees it: a spec (name, input, classes) and the batch it is deployed at.

A user's ``nn.Module`` has no registry name; the spec gives it one (its class name unless told) so
tables, plans and artifacts made for it can say which model they belong to, and records the input
shape and class count that the plan and the artifact are checked against.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from hwprune.errors import ConfigError
from hwprune.models import ModelSpec


def model_spec(
    model: nn.Module, input_shape: Sequence[int], batch: int | None = None, name: str | None = None
) -> tuple[ModelSpec, int]:
    """``model``'s spec and deployment batch, from ``input_shape`` as (C, H, W) or (N, C, H, W).

    The model is run once on zeros, so a shape it cannot take is one line here rather than a
    traceback deep in a profile, and its output gives the class count.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _shape(input_shape)
    if len(shape) == 4:
        if batch is not None and batch != shape[0]:
            raise ConfigError(f"input_shape {shape} says batch {shape[0]} but batch={batch}: give one of them")
        batch, shape = shape[0], shape[1:]
    batch = 1 if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
        raise ConfigError(f"batch must be a whole number >= 1, got {batch!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    classes = _num_classes(model, shape)
    spec = ModelSpec(name or type(model).__name__, shape[0], classes, (shape[1], shape[2]))
    return spec, int(batch)


def _shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ConfigError(f"input_shape must be (C, H, W) or (N, C, H, W), got {input_shape!r}") from None
    if len(shape) not in (3, 4) or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in shape
    ):
        raise ConfigError(f"input_shape must be (C, H, W) or (N, C, H, W) of positive whole numbers, got {shape!r}")
    return tuple(int(v) for v in shape)


def _num_classes(model: nn.Module, shape: tuple[int, ...]) -> int:
    """The model's output width on one zero input of ``shape``; it must be (1, classes)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape, device=_device(model)))
    except Exception as exc:  # noqa: BLE001 - any error of the user's forward means the shape does not fit
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"the model does not run on input_shape {shape} (C, H, W): {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model must return (batch, classes) logits for pruning, got {got}")
    return int(out.shape[1])


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
