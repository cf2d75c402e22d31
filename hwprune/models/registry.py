"""Name -> constructor registry, in the manner of timm: duplicates raise, unknown names suggest."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from hwprune.errors import ModelError

ModelFactory = Callable[[int, int], nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}
TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture without unpickling it."""

    name: str
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]

    def build(self) -> nn.Module:
        return create_model(self.name, self.in_channels, self.num_classes)

    def to_dict(self) -> dict:
        return asdict(self) | {"input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        try:
            return cls(
                name=str(data["name"]),
                in_channels=int(data["in_channels"]),
                num_classes=int(data["num_classes"]),
                input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"model spec is malformed ({exc!r}); re-create it with `hwprune train`") from None


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """Build a randomly initialised model; weights come from a checkpoint, never from a hub."""
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX) :], in_channels, num_classes)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, available_models(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(available_models())}"
        raise ModelError(f"unknown model '{name}': {hint} (or use torchvision:NAME)")
    return _REGISTRY[name](in_channels, num_classes)


def _torchvision_model(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join('torchvision:' + c for c in close)}?" if close else ""
        raise ModelError(f"unknown torchvision classification model '{arch}'. {hint}".strip())
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_stem(model, in_channels)
    return model


def _replace_stem(model: nn.Module, in_channels: int) -> None:
    """Swap the first convolution for one that takes ``in_channels`` (e.g. grayscale input)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    parent,
                    child_name,
                    nn.Conv2d(
                        in_channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        child.dilation,
                        1 if child.groups == 1 else in_channels,
                        child.bias is not None,
                    ),
                )
                return
    raise ModelError("model has no Conv2d stem to adapt to the input channels")
