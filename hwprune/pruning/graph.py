"""Prunable channel groups of a model, found by Torch-Pruning's dependency graph (DepGraph).

A *group* is a set of channels that must be removed together (a conv's filters, its BN, the
next conv's input channels, every branch of a residual add, a depthwise conv). The graph is
traced once; afterwards every layer's (c_in, c_out) under any plan is arithmetic, so the latency
predictor can price thousands of candidate plans without touching the model again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from hwprune.errors import ModelError


@dataclass(frozen=True)
class LayerShape:
    """One conv or linear layer as the device will run it under some plan."""

    name: str
    kind: str  # "conv" | "linear"
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int = 1  # a conv's channel groups: 1 for a dense conv, its width for a depthwise one

    @property
    def macs(self) -> int:
        """Multiply-accumulates for one sample: the FLOPs proxy the reference predictor uses."""
        per_filter = (1 if self.depthwise else self.c_in) * self.kernel * self.kernel
        return self.c_out * per_filter * self.out_hw[0] * self.out_hw[1]


@dataclass(frozen=True)
class Group:
    """A prunable channel group, named after its root layer (the first layer whose filters it removes)."""

    name: str
    channels: int
    layers: tuple[str, ...]  # conv/linear layers whose output channels belong to the group


class ModelGraph:
    """Channel groups of one model and the coupling of each layer's width to those groups."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
        self.input_shape = tuple(input_shape)
        self.head = find_head(model)
        self._base: dict[str, LayerShape] = _trace_layers(model, self.input_shape)
        dg = build_dependency_graph(model, self.input_shape)
        names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(names.values())}
        groups: list[Group] = []
        # tie[g][layer] = how many of the layer's (in, out) channels move with group g's channels
        self._tie_out: dict[str, dict[str, int]] = {}
        self._tie_in: dict[str, dict[str, int]] = {}
        for tp_group in dg.get_all_groups(ignored_layers=[self.head], root_module_types=(nn.Conv2d, nn.Linear)):
            root = names[tp_group[0].dep.target.module]
            tie_out: dict[str, int] = defaultdict(int)
            tie_in: dict[str, int] = defaultdict(int)
            for item in tp_group:
                module = item.dep.target.module
                if not isinstance(module, (nn.Conv2d, nn.Linear)):
                    continue
                if dg.is_out_channel_pruning_fn(item.dep.handler):
                    tie_out[names[module]] += len(item.idxs)
                elif dg.is_in_channel_pruning_fn(item.dep.handler):
                    tie_in[names[module]] += len(item.idxs)
            channels = self._base[root].c_out
            if channels < 2:
                continue
            groups.append(Group(root, channels, tuple(sorted(tie_out, key=order.__getitem__))))
            self._tie_out[root], self._tie_in[root] = dict(tie_out), dict(tie_in)
        self.groups: list[Group] = sorted(groups, key=lambda g: order[g.name])
        self.group_by_name: dict[str, Group] = {g.name: g for g in self.groups}

    def layer_shapes(self, keep: dict[str, int] | None = None) -> list[LayerShape]:
        """Every conv/linear layer's shape when group ``g`` keeps ``keep[g]`` channels."""
        keep = keep or {}
        removed_out: dict[str, float] = defaultdict(float)
        removed_in: dict[str, float] = defaultdict(float)
        for g in self.groups:
            k = keep.get(g.name, g.channels)
            if k == g.channels:
                continue
            frac = (g.channels - k) / g.channels
            for layer, n in self._tie_out[g.name].items():
                removed_out[layer] += n * frac
            for layer, n in self._tie_in[g.name].items():
                removed_in[layer] += n * frac
        shapes = []
        for name, base in self._base.items():
            c_out = base.c_out - round(removed_out[name])
            c_in = c_out if base.depthwise else base.c_in - round(removed_in[name])
            shapes.append(
                LayerShape(
                    name,
                    base.kind,
                    c_in,
                    c_out,
                    base.kernel,
                    base.stride,
                    base.padding,
                    base.depthwise,
                    base.in_hw,
                    base.out_hw,
                    c_out if base.depthwise else base.groups,
                )
            )
        return shapes


def build_dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()
    try:
        example = torch.randn(1, *input_shape)
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # tracing failures come from arbitrary user models
        raise ModelError(f"cannot trace the model's channel dependencies: {exc}") from None
    finally:
        model.train(was_training)


def find_head(model: nn.Module) -> nn.Module:
    """The classifier layer: its output units are the classes and are never pruned."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                last = m
    if last is None:
        raise ModelError("model has no Conv2d or Linear layer to prune")
    return last


def _trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerShape]:
    """Record each conv/linear layer's spatial input/output size with one forward pass."""
    shapes: dict[str, LayerShape] = {}
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                shapes[name] = LayerShape(
                    name,
                    "conv",
                    module.in_channels,
                    module.out_channels,
                    module.kernel_size[0],
                    module.stride[0],
                    module.padding[0] if isinstance(module.padding, tuple) else 0,
                    module.groups > 1 and module.groups == module.in_channels == module.out_channels,
                    (x.shape[-2], x.shape[-1]),
                    (output.shape[-2], output.shape[-1]),
                    module.groups,
                )
            else:
                shapes[name] = LayerShape(
                    name, "linear", module.in_features, module.out_features, 1, 1, 0, False, (1, 1), (1, 1)
                )

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ModelError(f"model does not run on input shape {tuple(input_shape)}: {exc}") from None
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
