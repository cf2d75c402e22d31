"""What Torch-Pruning's dependency graph can and cannot do for a model, found before anything is pruned.

Three things a CNN zoo brings that the plain group loop does not survive:

- *Grouped convolutions* (ResNeXt, RegNet): a conv with G groups computes each output from one
  G-th of its inputs, so every one of its G input (and output) chunks must keep the same number
  of channels, or the layer no longer splits evenly. :func:`channel_cells` finds the chunks.
- *Reshapes Torch-Pruning cannot map* (ShuffleNet's channel shuffle views the channels as
  (groups, channels/groups) and transposes them): its index mapping divides by zero. The failing
  reshape is recorded instead, and every group whose channels pass through it is frozen.
- *Attention* (ViT, Swin, MaxViT): tokens are mixed by products of activations, which neither
  the channel groups nor a latency table of conv/linear blocks describe. :func:`find_attention`
  names the first such layer so the model is refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import index_mapping

from hwprune.errors import ModelError


@contextmanager
def _tolerant_reshapes(failed: list[Any]) -> Iterator[None]:
    """While building a graph, a reshape whose channel mapping fails is recorded, not raised."""
    original = index_mapping.update_reshape_index_mapping

    def guarded(graph: tp.DependencyGraph, node: Any) -> None:
        try:
            original(graph, node)
        except ArithmeticError:  # the division by a zero channel count of a shuffle's view
            failed.append(node)

    index_mapping.update_reshape_index_mapping = guarded
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping = original


def trace_dependencies(
    model: nn.Module, input_shape: tuple[int, ...], name: str = "model"
) -> tuple[tp.DependencyGraph, list[Any]]:
    """Torch-Pruning's dependency graph of ``model`` and the graph nodes whose channels it could not map."""
    was_training = model.training
    model.eval()
    failed: list[Any] = []
    try:
        example = torch.randn(1, *input_shape)
        with _tolerant_reshapes(failed):
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
        for node in failed:  # the graph re-maps indices on every query: stop it retrying these (as identities)
            node.type = tp.ops.OPTYPE.ELEMENTWISE
    except Exception as exc:  # tracing failures come from arbitrary user models
        raise ModelError(f"cannot trace {name}'s channel dependencies: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    return dg, failed


def channel_groups(
    dg: tp.DependencyGraph, head: nn.Module, untraced: list[Any]
) -> Iterator[tuple[nn.Module, Any, str | None]]:
    """Each conv/linear layer's output-channel group, as ``(root, group, None)``, or ``(root, None, why)`` if frozen.

    Torch-Pruning's ``get_all_groups`` stops at the first group it cannot build; walking the roots
    here lets one untraceable part be frozen while the rest of the model is grouped as usual.
    A layer already in an earlier group (a residual branch) roots no group of its own.
    """
    bad = {id(n) for n in untraced}
    skip = {id(m) for m in dg.IGNORED_LAYERS_IN_TRACING} | {id(head)}
    visited: set[int] = set()
    for module in list(dg.module2node):
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or id(module) in skip or id(module) in visited:
            continue
        pruner = dg.get_pruner_of_module(module)
        try:
            group = dg.get_pruning_group(
                module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module)))
            )
        except Exception as exc:  # Torch-Pruning's index mapping on graphs it only partly understands
            yield module, None, f"Torch-Pruning cannot map its channels ({type(exc).__name__}: {exc})"
            continue
        writers = [item.dep.target.module for item in group if dg.is_out_channel_pruning_fn(item.dep.handler)]
        visited.update(id(m) for m in writers)
        if any(id(m) in skip for m in writers):
            continue  # coupled to the classifier's outputs, which are the classes
        if any(id(item.dep.target) in bad or id(item.dep.source) in bad for item in group):
            yield module, None, "its channels pass through a reshape Torch-Pruning cannot follow (a channel shuffle?)"
            continue
        yield module, group, None


def _splits(module: nn.Module) -> int:
    """Equal parts a layer needs its channels in: a grouped (not depthwise) conv's groups, a GroupNorm's groups."""
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups != module.out_channels:
        return module.groups
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return module.num_groups
    return 1


def channel_cells(dg: tp.DependencyGraph, tp_group: Any, channels: int) -> torch.Tensor | None:
    """Cell of each of a group's channels: channels in one cell sit in the same part of every split layer.

    Keeping the same number of channels in every cell keeps each split layer's parts equal. None
    when no layer of the group is split; raises when the cells are of unequal size (no keep count
    but the full width would be valid), which the caller turns into a frozen group.
    """
    keys: list[list[int]] = [[] for _ in range(channels)]
    for item in tp_group:
        module = item.dep.target.module
        parts = _splits(module)
        if parts == 1:
            continue
        out_side = dg.is_out_channel_pruning_fn(item.dep.handler)
        width = dg.get_out_channels(module) if out_side else dg.get_in_channels(module)
        chunk = max(width // parts, 1)
        part_of = dict(zip(item.root_idxs, (i // chunk for i in item.idxs), strict=True))
        for r in range(channels):
            keys[r].append(part_of.get(r, -1))
    if not keys or not keys[0]:
        return None
    ids: dict[tuple[int, ...], int] = {}
    cells = torch.tensor([ids.setdefault(tuple(k), len(ids)) for k in keys], dtype=torch.long)
    sizes = torch.bincount(cells)
    if len(sizes) > 1 and not bool((sizes == sizes[0]).all()):
        raise ValueError(f"its channels fall into unequal parts of grouped layers ({sizes.tolist()})")
    return cells


class _AttentionSpy(TorchFunctionMode):
    """Notes the innermost running layer at the first product of two activations (q @ k^T, attention)."""

    _ATTENTION = {
        torch.nn.functional.scaled_dot_product_attention,
        torch.nn.functional.multi_head_attention_forward,
    }
    _PRODUCTS = {torch.matmul, torch.bmm, torch.baddbmm, torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.bmm}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.found: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        if self.found is None and (func in self._ATTENTION or self._mixes_activations(func, args)):
            self.found = self.stack[-1] if self.stack else ""
        return func(*args, **(kwargs or {}))

    def _mixes_activations(self, func: Any, args: tuple) -> bool:
        if func is torch.einsum:
            operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        elif func in self._PRODUCTS:
            operands = args
        else:
            return False
        tensors = [a for a in operands if isinstance(a, torch.Tensor)]
        return len(tensors) >= 2 and all(t.dim() >= 3 and not isinstance(t, nn.Parameter) for t in tensors)


def find_attention(model: nn.Module, example: torch.Tensor) -> str | None:
    """Name of the first layer that mixes tokens by attention in a forward pass on ``example``, or None."""
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            return name
    spy = _AttentionSpy()

    def enter(name: str):  # noqa: ANN202 - a hook factory
        def hook(*_: Any) -> None:  # a hook returning a value would replace the layer's input
            spy.stack.append(name)

        return hook

    def leave(*_: Any) -> None:  # ... or its output
        spy.stack.pop()

    hooks = []
    for name, m in model.named_modules():
        hooks += [m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), spy:
            model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if spy.found is None:
        return None
    return spy.found or type(model).__name__
