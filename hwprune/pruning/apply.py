"""Apply a plan: keep each group's largest-L2-norm filters and physically remove the rest."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwprune.pruning.graph import ModelGraph, build_dependency_graph
from hwprune.pruning.plan import GroupPlan, PruningPlan


def filter_norms(dg, root: nn.Module) -> torch.Tensor:
    """Squared L2 norm of every channel of a group, summed over the filters that produce it.

    In a residual group several convs write the same channel; their filters are removed together,
    so the channel's score is the norm of all of them (the group-level generalisation of Li et al.).
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


def apply_plan(model: nn.Module, plan: PruningPlan, graph: ModelGraph) -> tuple[nn.Module, PruningPlan]:
    """Return a pruned copy of ``model`` and the plan with the kept indices filled in.

    Indices already in the plan are honoured (rebuilding a saved artifact); otherwise the
    largest-norm filters are kept. The input model is left untouched.
    """
    plan.validate(graph)
    pruned = copy.deepcopy(model)
    dg = build_dependency_graph(pruned, graph.input_shape)
    modules = dict(pruned.named_modules())
    # Score every group before removing anything, so a group's norms never depend on the order.
    kept: dict[str, tuple[int, ...]] = {}
    for name, g in plan.groups.items():
        if g.kept_indices is not None:
            kept[name] = tuple(sorted(g.kept_indices))
        else:
            order = torch.sort(-filter_norms(dg, modules[name]), stable=True).indices
            kept[name] = tuple(sorted(order[: g.keep].tolist()))
    for name, g in plan.groups.items():
        drop = sorted(set(range(g.original)) - set(kept[name]))
        if drop:
            root = modules[name]
            pruner = dg.get_pruner_of_module(root)
            dg.get_pruning_group(root, pruner.prune_out_channels, drop).prune()
    applied = PruningPlan(plan.model, {n: GroupPlan(g.original, g.keep, kept[n]) for n, g in plan.groups.items()})
    return pruned, applied
