"""Filter-importance criteria: which channels of a group a plan keeps.

A group's channels are removed together with every filter that writes them (all branches of a
residual add, a depthwise conv and the conv that feeds it), so each criterion scores a *channel*
by summing its score over those writers, the group-level reading of the per-layer papers:

- ``l2`` (the default) and ``l1``: squared L2 / L1 norm of the filters (Li et al., ICLR 2017).
- ``fpgm``: summed Euclidean distance of each filter to the layer's others (He et al., CVPR 2019);
  the filters nearest the geometric median have the least and are the most replaceable.
- ``taylor``: first-order Taylor estimate of the squared loss change when the channel is removed
  (Molchanov et al., CVPR 2019): ``(sum of g*w over the channel's gate)**2`` per minibatch,
  averaged over ``batches`` seeded training minibatches. The gate sits after the BN that follows a
  writer (``gamma*dL/dgamma + beta*dL/dbeta``), or on the writer's output where no BN follows.
- ``random``: a seeded draw per group, the control of Liu et al. (ICLR 2019).

Torch-Pruning supplies the groups (which filters write which channel); the scores are computed
here because its 1.6 importance classes differ from the papers: MagnitudeImportance matches
handlers by identity and leaves depthwise filters out of a group's score (MobileNetV2's groups are
rooted at them), FPGMImportance measures distances between ``|w|**p`` (``w`` and ``-w`` look alike,
so it keeps the filter planted at the median), TaylorImportance takes ``|g*w|`` over the last
accumulated gradient instead of the per-batch square, and RandomImportance draws from the global
RNG. tests/test_importance.py plants a case for each criterion, and checks ``l1``/``l2`` against
Torch-Pruning's MagnitudeImportance on the groups where the two definitions coincide.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hwprune.data import make_loader
from hwprune.errors import ConfigError, DataError, PlanError
from hwprune.pruning.graph import ModelGraph, build_dependency_graph

CRITERIA = ("l2", "l1", "fpgm", "taylor", "random")
DEFAULT_CRITERION = "l2"
TAYLOR_BATCHES = 16
"""Training minibatches the Taylor criterion averages over (of ``TAYLOR_BATCH_SIZE``, seeded order)."""
TAYLOR_BATCH_SIZE = 64

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def check_criterion(name: str) -> str:
    """``name`` if it is a criterion, else one clear error naming the choices."""
    if name not in CRITERIA:
        raise ConfigError(
            f"unknown criterion '{name}': choose one of {', '.join(CRITERIA)} (default {DEFAULT_CRITERION})"
        )
    return name


@dataclass(frozen=True)
class FilterImportance:
    """Per-group channel scores of one model state (higher = keep), and the criterion that made them."""

    criterion: str
    scores: dict[str, torch.Tensor]

    def kept(self, group: str, keep: int, cells: torch.Tensor | None = None) -> tuple[int, ...]:
        """The ``keep`` highest-scoring channels of ``group``, ascending (ties: the lower index).

        With ``cells`` (a grouped convolution's parts, from ``ModelGraph.cells``) the channels are
        ranked within each cell and every cell keeps ``keep / cells`` of its own best.
        """
        return top_channels(self.scores[group], keep, cells)

    def check(self, graph: ModelGraph) -> None:
        """Refuse scores made for another model state (a channel count that differs)."""
        for g in graph.groups:
            score = self.scores.get(g.name)
            if score is None or len(score) != g.channels:
                raise PlanError(
                    f"filter scores for group '{g.name}' do not fit the model being pruned "
                    f"({g.channels} channels): compute them on that model"
                )


def top_channels(score: torch.Tensor, keep: int, cells: torch.Tensor | None = None) -> tuple[int, ...]:
    """Indices of the ``keep`` highest scores, ascending; with ``cells``, the same count from each cell."""
    if cells is None:
        order = torch.sort(-score, stable=True).indices
        return tuple(sorted(order[:keep].tolist()))
    n_cells = int(cells.max()) + 1
    if keep % n_cells:
        raise PlanError(f"{keep} channels cannot be kept evenly from {n_cells} grouped-convolution parts")
    chosen: list[int] = []
    for c in range(n_cells):
        members = torch.nonzero(cells == c).flatten()
        order = torch.sort(-score[members], stable=True).indices
        chosen += members[order[: keep // n_cells]].tolist()
    return tuple(sorted(chosen))


def filter_importance(
    model: nn.Module,
    graph: ModelGraph,
    criterion: str = DEFAULT_CRITERION,
    data: Dataset | Batches | None = None,
    seed: int = 0,
    batches: int = TAYLOR_BATCHES,
) -> FilterImportance:
    """Score every channel of every group of ``model`` by ``criterion``.

    ``data`` is needed by ``taylor`` only: a dataset (its first ``batches`` minibatches of 64 in a
    ``seed``-shuffled order are used) or any iterable of ``(inputs, targets)`` batches. ``seed``
    also fixes ``random``'s draw (per group, so a group's choice does not depend on the others).
    The model is left as it was (weights, mode, ``.grad``, BN statistics).
    """
    check_criterion(criterion)
    dg = build_dependency_graph(model, graph.input_shape)
    writers = _writers(dg, model, graph)
    if criterion in ("l1", "l2"):
        scores = {g.name: _magnitude(writers[g.name], g.channels, 1 if criterion == "l1" else 2) for g in graph.groups}
    elif criterion == "fpgm":
        scores = {g.name: _fpgm(writers[g.name], g.channels) for g in graph.groups}
    elif criterion == "random":
        scores = {g.name: _random(g.name, g.channels, seed) for g in graph.groups}
    else:
        if data is None:
            raise ConfigError("criterion 'taylor' needs data: pass the training split (or batches of it)")
        if batches < 1:
            raise ConfigError(f"Taylor batches must be >= 1, got {batches}")
        scores = _taylor(model, graph, writers, _first_batches(data, batches, seed))
    return FilterImportance(criterion, scores)


@dataclass(frozen=True)
class _Writer:
    """A layer whose output channels (``idxs``) are the group's channels ``root_idxs``."""

    module: nn.Module
    idxs: torch.Tensor
    root_idxs: torch.Tensor
    bn: nn.Module | None  # the affine BN right after it, where the Taylor gate sits


def _writers(dg, model: nn.Module, graph: ModelGraph) -> dict[str, list[_Writer]]:  # noqa: ANN001 - tp.DependencyGraph
    """For each group, the convs / linears that produce its channels, from Torch-Pruning's group."""
    modules = dict(model.named_modules())
    found: dict[str, list[_Writer]] = {}
    for g in graph.groups:
        root = modules[g.name]
        pruner = dg.get_pruner_of_module(root)
        group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(g.channels)))
        found[g.name] = [
            _Writer(
                item.dep.target.module,
                torch.as_tensor(item.idxs, dtype=torch.long),
                torch.as_tensor(item.root_idxs, dtype=torch.long),
                _bn_after(dg, item.dep.target.module),
            )
            for item in group
            if isinstance(item.dep.target.module, (nn.Conv2d, nn.Linear))
            and dg.is_out_channel_pruning_fn(item.dep.handler)
        ]
    return found


def _bn_after(dg, module: nn.Module) -> nn.Module | None:  # noqa: ANN001
    node = dg.module2node.get(module)
    for out in node.outputs if node is not None else ():
        if isinstance(out.module, nn.modules.batchnorm._BatchNorm) and out.module.affine:
            return out.module
    return None


def _magnitude(items: list[_Writer], n: int, p: int) -> torch.Tensor:
    """Sum over the writers of ``sum |w|**p`` of each filter (p=2: the squared L2 norm)."""
    score = torch.zeros(n, dtype=torch.float64)
    for w in items:
        filters = w.module.weight.detach().double()[w.idxs].flatten(1)
        score.index_add_(0, w.root_idxs, filters.abs().pow(p).sum(1))
    return score


def _fpgm(items: list[_Writer], n: int) -> torch.Tensor:
    """Sum over the writers of each filter's summed distance to the layer's other filters."""
    score = torch.zeros(n, dtype=torch.float64)
    for w in items:
        filters = w.module.weight.detach().double()[w.idxs].flatten(1)
        score.index_add_(0, w.root_idxs, torch.cdist(filters, filters).sum(1))
    return score


def _random(group: str, n: int, seed: int) -> torch.Tensor:
    """Seeded by (seed, group name): the same group draws the same order whatever else is pruned."""
    # torch's CPU generator keeps 32 bits of a seed: mix seed and name into them, not side by side.
    mixed = int(np.random.SeedSequence([seed, zlib.crc32(group.encode())]).generate_state(1)[0])
    generator = torch.Generator().manual_seed(mixed)
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _first_batches(data: Dataset | Batches, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = make_loader(data, TAYLOR_BATCH_SIZE, shuffle=True, seed=seed) if isinstance(data, Dataset) else data
    source: Iterator = iter(loader)
    taken = list(islice(source, n))
    if not taken:
        raise DataError("criterion 'taylor' got no batches: the data is empty")
    return taken


def _taylor(
    model: nn.Module,
    graph: ModelGraph,
    writers: dict[str, list[_Writer]],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of (sum over the channel's gates of dL/dgate)**2, the gates all at 1.

    A gate ``m`` scaling an output ``y`` has ``dL/dm = sum(dL/dy * y)``: after a BN that is
    ``gamma*dL/dgamma + beta*dL/dbeta``, on a conv's output ``sum(w*dL/dw) + b*dL/db``. Removing
    the channel sets every gate of it to 0, so the first-order loss change is their sum.
    Run in eval mode (BN statistics as deployed, and left unchanged) with ``autograd.grad``,
    so no ``.grad`` of the caller's model is touched.
    """
    gated = {id(m): m for items in writers.values() for w in items for m in [w.bn or w.module]}
    params: list[torch.nn.Parameter] = []
    for m in gated.values():
        params += [p for p in (m.weight, m.bias) if p is not None]
    device = params[0].device if params else torch.device("cpu")
    flags = [p.requires_grad for p in params]
    was_training = model.training
    channels = {g.name: g.channels for g in graph.groups}
    totals = {name: torch.zeros(n, dtype=torch.float64) for name, n in channels.items()}
    model.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        for x, y in batches:
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
                grads = dict(zip(map(id, params), torch.autograd.grad(loss, params), strict=True))
            gate = {key: _gate_grad(m, grads) for key, m in gated.items()}
            for name, items in writers.items():
                s = torch.zeros(channels[name], dtype=torch.float64)
                for w in items:
                    s.index_add_(0, w.root_idxs, gate[id(w.bn or w.module)][w.idxs])
                totals[name] += s.pow(2)
    finally:
        model.train(was_training)
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return {name: t / len(batches) for name, t in totals.items()}


def _gate_grad(module: nn.Module, grads: dict[int, torch.Tensor]) -> torch.Tensor:
    """dL/d(gate) per output channel of ``module`` (a BN, conv or linear), the gate being 1."""
    out = torch.zeros(module.weight.shape[0], dtype=torch.float64)
    for p in (module.weight, module.bias):
        if p is not None:
            out += (p.detach() * grads[id(p)]).double().reshape(len(out), -1).sum(1).cpu()
    return out
