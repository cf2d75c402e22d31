"""Name -> constructor registry, in the manner of timm: duplicates raise, unknown names suggest.

Three spellings of a model name: a zoo name (``resnet20``), ``torchvision:NAME``, and
``package.module:factory`` for an architecture the user defines. The last imports the user's
module, which runs its code: that is code the user chose to run by naming it (a checkpoint records
the name, so loading one imports the module again, never unpickles anything), the same trust as
installing a package that registers a model.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from hwprune.errors import ModelError, one_line

ModelFactory = Callable[[int, int], nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}
TORCHVISION_PREFIX = "torchvision:"
# package.module:factory (the factory may be an attribute path, e.g. ``models:Net.build``)
_USER_FACTORY = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


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
    if ":" in name:
        return _user_model(name, in_channels, num_classes)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, available_models(), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(available_models())}"
        raise ModelError(f"unknown model '{name}': {hint} (or use torchvision:NAME, or package.module:factory)")
    return _REGISTRY[name](in_channels, num_classes)


def _user_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """``package.module:factory``, called as ``factory(in_channels=C, num_classes=N)``; must return an nn.Module.

    Keyword arguments, so a factory cannot silently take the two numbers in the other order.
    """
    match = _USER_FACTORY.match(name)
    if match is None:
        raise ModelError(
            f"model '{name}' is neither a zoo name, torchvision:NAME nor package.module:factory "
            "(a dotted module path, a colon, then the factory's name)"
        )
    module_name, attr_path = match.groups()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not found, or the user's module raised while importing: one line either way
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ModelError(
                f"model '{name}': cannot import module '{module_name}' (no module named '{missing}'): "
                "add the folder that holds it to PYTHONPATH (e.g. PYTHONPATH=. hwprune ...)"
            ) from None
        raise ModelError(f"model '{name}': importing '{module_name}' failed: {one_line(exc)}") from None
    factory: object = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            close = difflib.get_close_matches(part, public, n=3, cutoff=0.5)
            hint = f": did you mean {', '.join(f'{module_name}:{c}' for c in close)}?" if close else ""
            raise ModelError(f"model '{name}': module '{module_name}' has no attribute '{attr_path}'{hint}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelError(
            f"model '{name}': '{attr_path}' in '{module_name}' is not callable "
            f"(an object of type {type(factory).__name__})"
        )
    call = f"{name}(in_channels={in_channels}, num_classes={num_classes})"
    try:
        model = factory(in_channels=in_channels, num_classes=num_classes)
    except Exception as exc:
        hint = " (the factory is called with the keyword arguments in_channels and num_classes)"
        raise ModelError(f"{call} raised {one_line(exc)}{hint if isinstance(exc, TypeError) else ''}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{call} returned an object of type {type(model).__name__}, not a torch.nn.Module")
    return model


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
