"""Apply a plan: keep each group's most important filters (L2 norm unless told) and physically remove the rest."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hwprune.pruning.graph import ModelGraph, build_dependency_graph
from hwprune.pruning.importance import DEFAULT_CRITERION, FilterImportance, filter_importance
from hwprune.pruning.plan import GroupPlan, PruningPlan


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
            kept[name] = importance.kept(name, g.keep)
    pruned = copy.deepcopy(model)
    dg = build_dependency_graph(pruned, graph.input_shape)
    modules = dict(pruned.named_modules())
    for name, g in plan.groups.items():
        drop = sorted(set(range(g.original)) - set(kept[name]))
        if drop:
            root = modules[name]
            pruner = dg.get_pruner_of_module(root)
            dg.get_pruning_group(root, pruner.prune_out_channels, drop).prune()
    criterion = importance.criterion if choose and importance else plan.criterion
    groups = {n: GroupPlan(g.original, g.keep, kept[n]) for n, g in plan.groups.items()}
    return pruned, PruningPlan(plan.model, groups, criterion or DEFAULT_CRITERION)
