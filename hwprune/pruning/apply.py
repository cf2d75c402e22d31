"""Apply a plan: keep each group's most important filters (L2 norm unless told) and physically remove the rest."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from hwprune.errors import HwpruneError, PlanError
from hwprune.pruning.graph import ModelGraph, build_dependency_graph
from hwprune.pruning.importance import DEFAULT_CRITERION, FilterImportance, filter_importance
from hwprune.pruning.plan import GroupPlan, PruningPlan

log = logging.getLogger(__name__)


def filter_norms(dg, root: nn.Module) -> torch.Tensor:  # noqa: ANN001 - tp.DependencyGraph
    """Squared L2 norm of every channel of a group, summed over the filters that produce it.

    In a residual group several convs write the same channel; their filters are removed together,
    so the channel's score is the norm of all of them (the group-level generalisation of Li et al.).
    Kept as the reference the ``l2`` criterion of :mod:`hwprune.pruning.importance` is tested against.
    """
    pruner = dg.get_pruner_of_module(root)
    n = pruner.get_out_channels(root)
    group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(n)))
    score = torch.zeros(n, dtype=torch.float64)
    for item in group:
        module = item.dep.target.module
        if isinstance(module, (nn.Conv2d, nn.Linear)) and dg.is_out_channel_pruning_fn(item.dep.handler):
            w = module.weight.detach().double().flatten(1).pow(2).sum(1)
            score.index_add_(0, torch.as_tensor(item.root_idxs), w[torch.as_tensor(item.idxs)])
    return score


def channel_norms(model: nn.Module, graph: ModelGraph) -> dict[str, torch.Tensor]:
    """L2 norm of every channel of every group of ``model``: the importance ``apply_plan`` keeps the largest of.

    The square root of :func:`filter_norms`, so a ranking built on these orders each group's channels
    exactly as ``apply_plan`` does.
    """
    dg = build_dependency_graph(model, graph.input_shape)
    modules = dict(model.named_modules())
    return {g.name: filter_norms(dg, modules[g.name]).sqrt() for g in graph.groups}


def apply_plan(
    model: nn.Module, plan: PruningPlan, graph: ModelGraph, importance: FilterImportance | None = None
) -> tuple[nn.Module, PruningPlan]:
    """Return a pruned copy of ``model`` and the plan with the kept indices (and their criterion) filled in.

    Indices already in the plan are honoured (rebuilding a saved artifact); otherwise each group keeps
    its highest-scoring filters by ``importance`` (from :func:`filter_importance` on this ``model``;
    default: the L2 norm, computed now). A caller applying many plans to one model computes the
    importance once and passes it. The input model is left untouched.
    """
    plan = _fit_steps(plan, graph)
    plan.validate(graph)
    choose = [name for name, g in plan.groups.items() if g.kept_indices is None]
    if choose and importance is None:
        importance = filter_importance(model, graph, DEFAULT_CRITERION)
    if importance is not None:
        importance.check(graph)
    # Every group is scored before anything is removed, so a group's choice never depends on the order.
    kept: dict[str, tuple[int, ...]] = {}
    for name, g in plan.groups.items():
        if g.kept_indices is not None:
            kept[name] = tuple(sorted(g.kept_indices))
        else:
            assert importance is not None  # computed above whenever a group is to be chosen
            kept[name] = importance.kept(name, g.keep, graph.cells.get(name))
    pruned = copy.deepcopy(model)
    dg = build_dependency_graph(pruned, graph.input_shape)
    modules = dict(pruned.named_modules())
    for name, g in plan.groups.items():
        drop = sorted(set(range(g.original)) - set(kept[name]))
        if drop:
            _prune_group(dg, modules[name], drop, f"group '{name}' of {plan.model}")
    criterion = importance.criterion if choose and importance else plan.criterion
    groups = {n: GroupPlan(g.original, g.keep, kept[n]) for n, g in plan.groups.items()}
    return pruned, PruningPlan(plan.model, groups, criterion or DEFAULT_CRITERION)


def _fit_steps(plan: PruningPlan, graph: ModelGraph) -> PruningPlan:
    """Correct keep counts a grouped convolution cannot take to the nearest it can, saying so.

    A count with chosen indices (a saved artifact) is left for ``validate`` to refuse: its filters
    were picked for that count and cannot be re-picked here.
    """
    fixed = plan.fit_steps(graph)
    changed = [f"{n} {plan.groups[n].keep}->{g.keep}" for n, g in fixed.groups.items() if g.keep != plan.groups[n].keep]
    if changed:
        log.warning(
            "%s: keep counts rounded to multiples of their grouped convolutions' groups: %s",
            plan.model,
            ", ".join(changed),
        )
    return fixed


def _prune_group(dg, root: nn.Module, drop: list[int], what: str) -> None:  # noqa: ANN001 - tp.DependencyGraph
    """Remove channels ``drop`` of ``root``'s group; a failure in Torch-Pruning becomes one line naming the layer.

    Torch-Pruning removes a grouped convolution's input channels at the same offsets in every group
    (a slice of its weight); hwprune keeps each group's own best channels, so those inputs are
    removed here, filter by filter, and Torch-Pruning's handler is given nothing to do.
    """
    names = {m: n for n, m in dg.model.named_modules()}
    pruner = dg.get_pruner_of_module(root)
    group = dg.get_pruning_group(root, pruner.prune_out_channels, drop)
    split_inputs = []
    for i, item in enumerate(group):
        module = item.dep.target.module
        if _is_split_conv(module) and dg.is_in_channel_pruning_fn(item.dep.handler):
            split_inputs.append((module, list(item.idxs)))
            group[i] = type(item)(item.dep, [])
    layer = names.get(root, "?")
    try:
        group.prune()
        for conv, idxs in split_inputs:
            layer = names.get(conv, "?")
            _prune_split_inputs(conv, idxs)
    except HwpruneError:
        raise
    except Exception as exc:  # Torch-Pruning's own failures, from arbitrary models
        raise PlanError(f"Torch-Pruning failed on {what} at layer '{layer}': {type(exc).__name__}: {exc}") from None


def _is_split_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and 1 < module.groups != module.out_channels


def _prune_split_inputs(conv: nn.Conv2d, idxs: list[int]) -> None:
    """Remove input channels ``idxs`` of a grouped conv; each group may lose different ones, but as many."""
    parts, per_part = conv.groups, conv.in_channels // conv.groups
    drop = set(idxs)
    keep = [[i - p * per_part for i in range(p * per_part, (p + 1) * per_part) if i not in drop] for p in range(parts)]
    if len({len(k) for k in keep}) != 1 or not keep[0]:
        raise PlanError(
            f"removing {len(drop)} input channels of a {parts}-group convolution would leave its groups unequal"
        )
    out_per_part = conv.out_channels // parts
    index = torch.tensor([keep[f // out_per_part] for f in range(conv.out_channels)], device=conv.weight.device)
    weight = conv.weight.detach()
    new = torch.gather(weight, 1, index[:, :, None, None].expand(-1, -1, *weight.shape[2:]))
    conv.weight = nn.Parameter(new, requires_grad=conv.weight.requires_grad)
    conv.in_channels = len(keep[0]) * parts
