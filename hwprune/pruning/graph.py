"""Prunable channel groups of a model, found by Torch-Pruning's dependency graph (DepGraph).

A *group* is a set of channels that must be removed together (a conv's filters, its BN, the
next conv's input channels, every branch of a residual add, a depthwise conv). The graph is
traced once; afterwards every layer's (c_in, c_out) under any plan is arithmetic, so the latency
predictor can price thousands of candidate plans without touching the model again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from hwprune.errors import ModelError
from hwprune.pruning.trace import channel_cells, channel_groups, find_attention, trace_dependencies

log = logging.getLogger(__name__)


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
        per_filter = (1 if self.depthwise else self.c_in // max(self.groups, 1)) * self.kernel * self.kernel
        return self.c_out * per_filter * self.out_hw[0] * self.out_hw[1]


@dataclass(frozen=True)
class Group:
    """A prunable channel group, named after its root layer (the first layer whose filters it removes)."""

    name: str
    channels: int
    layers: tuple[str, ...]  # conv/linear layers whose output channels belong to the group
    step: int = 1  # keep counts must be multiples of it: the equal parts grouped convolutions split it into


class ModelGraph:
    """Channel groups of one model and the coupling of each layer's width to those groups.

    Groups Torch-Pruning cannot prune safely are *frozen* (left out, with a warning naming their
    layers) rather than failing the model: those passing through a reshape it cannot map (a channel
    shuffle) and those whose grouped layers split them unevenly. A group feeding or produced by a
    grouped convolution keeps a multiple of ``Group.step`` channels, the same number in every one
    of the ``cells[group]`` parts, so the convolution's groups stay equal.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int], name: str | None = None) -> None:
        self.input_shape = tuple(input_shape)
        self.model_name = name or type(model).__name__
        self._base: dict[str, LayerShape] = _trace_layers(model, self.input_shape)
        attention = find_attention(model, torch.zeros(1, *self.input_shape))
        if attention is not None:
            raise ModelError(
                f"{self.model_name} mixes tokens by attention (in '{attention}'): hwprune prunes convolutional "
                "networks, whose latency its conv/linear block tables can price; use a CNN"
            )
        modules = dict(model.named_modules())
        self.head = modules[_head_name(self._base, self.model_name)]
        dg, untraced = trace_dependencies(model, self.input_shape, self.model_name)
        names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(names.values())}
        groups: list[Group] = []
        frozen: dict[str, str] = {}
        self.cells: dict[str, torch.Tensor] = {}
        # tie[g][layer] = how many of the layer's (in, out) channels move with group g's channels
        self._tie_out: dict[str, dict[str, int]] = {}
        self._tie_in: dict[str, dict[str, int]] = {}
        for root_module, tp_group, why in channel_groups(dg, self.head, untraced):
            root = names[root_module]
            channels = self._base[root].c_out if root in self._base else 0
            if channels < 2:
                continue
            if tp_group is None:
                frozen[root] = why or "unknown"
                continue
            try:
                cells = channel_cells(dg, tp_group, channels)
            except ValueError as exc:
                frozen[root] = str(exc)
                continue
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
            step = 1 if cells is None else int(cells.max()) + 1
            if cells is not None:
                self.cells[root] = cells
            groups.append(Group(root, channels, tuple(sorted(tie_out, key=order.__getitem__)), step))
            self._tie_out[root], self._tie_in[root] = dict(tie_out), dict(tie_in)
        self.groups: list[Group] = sorted(groups, key=lambda g: order[g.name])
        self.group_by_name: dict[str, Group] = {g.name: g for g in self.groups}
        # the same ties per layer, in group order: a layer's shape reads only the groups it moves with
        self._out_ties: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self._in_ties: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for g in self.groups:
            for layer, n in self._tie_out[g.name].items():
                self._out_ties[layer].append((g.name, n))
            for layer, n in self._tie_in[g.name].items():
                self._in_ties[layer].append((g.name, n))
        self.frozen: dict[str, str] = dict(sorted(frozen.items(), key=lambda kv: order[kv[0]]))
        if self.frozen:
            shown = ", ".join(list(self.frozen)[:8]) + (
                f" (+{len(self.frozen) - 8} more)" if len(self.frozen) > 8 else ""
            )
            reasons = sorted(set(self.frozen.values()))
            log.warning(
                "%s: %d channel group(s) left unpruned, rooted at %s: %s",
                self.model_name,
                len(self.frozen),
                shown,
                "; ".join(reasons),
            )
        if not self.groups:
            raise ModelError(
                f"{self.model_name} has nothing hwprune can prune: no conv/linear layer has output channels "
                "that can be removed" + (" (every group is frozen, see the warning above)" if self.frozen else "")
            )

    def layer_shapes(self, keep: dict[str, int] | None = None) -> list[LayerShape]:
        """Every conv/linear layer's shape when group ``g`` keeps ``keep[g]`` channels."""
        keep = keep or {}
        return [self.layer_shape(name, keep) for name in self._base]

    def layer_names(self) -> list[str]:
        """The conv/linear layers, in the order :meth:`layer_shapes` lists them."""
        return list(self._base)

    def layers_of(self, group: str) -> set[str]:
        """The layers whose input or output width moves with ``group``'s channels."""
        return set(self._tie_out[group]) | set(self._tie_in[group])

    def layer_shape(self, name: str, keep: dict[str, int]) -> LayerShape:
        """Layer ``name``'s shape under ``keep``: its widths less each tied group's removed share."""
        base = self._base[name]
        c_out = base.c_out - round(self._removed(self._out_ties.get(name, ()), keep))
        c_in = c_out if base.depthwise else base.c_in - round(self._removed(self._in_ties.get(name, ()), keep))
        return LayerShape(
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

    def _removed(self, ties: Iterable[tuple[str, int]], keep: dict[str, int]) -> float:
        removed = 0.0
        for group, n in ties:
            channels = self.group_by_name[group].channels
            k = keep.get(group, channels)
            if k != channels:
                removed += n * ((channels - k) / channels)
        return removed


def build_dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (nodes it cannot map are left to :class:`ModelGraph`)."""
    return trace_dependencies(model, input_shape, type(model).__name__)[0]


def find_head(model: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """The classifier layer: its output units are the classes and are never pruned."""
    return dict(model.named_modules())[_head_name(_trace_layers(model, input_shape), type(model).__name__)]


def _head_name(layers: dict[str, LayerShape], model_name: str) -> str:
    """The last conv/linear layer to run: a Linear classifier, or a conv one as in SqueezeNet."""
    if not layers:
        raise ModelError(f"{model_name} has no Conv2d or Linear layer to prune")
    return list(layers)[-1]


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
