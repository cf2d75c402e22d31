"""Filter-importance criteria: a planted case per criterion, every model pruned by every criterion."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from hwprune.data import TensorImageDataset
from hwprune.errors import ArtifactError, ConfigError, PlanError
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import (
    CRITERIA,
    ModelGraph,
    PruningPlan,
    apply_plan,
    filter_importance,
    filter_norms,
    load_pruned,
    save_pruned,
)
from hwprune.pruning.graph import build_dependency_graph
from hwprune.pruning.plan import GroupPlan


class TwoConvs(nn.Module):
    """conv1 (the planted layer) -> BN -> ReLU -> conv2 -> BN -> ReLU -> pool -> linear head."""

    def __init__(self, filters: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def _planted(rows: list[list[float]]) -> tuple[TwoConvs, ModelGraph]:
    """A TwoConvs whose conv1 filters are ``rows`` (each up to 9 weights of its 3x3 kernel)."""
    model = TwoConvs(len(rows))
    w = torch.zeros(len(rows), 9)
    for i, row in enumerate(rows):
        w[i, : len(row)] = torch.tensor(row)
    model.conv1.weight.data = w.view(len(rows), 1, 3, 3)
    return model.eval(), ModelGraph(model, (1, 8, 8))


def _kept(model: nn.Module, graph: ModelGraph, criterion: str, keep: int, **kw) -> tuple[int, ...]:
    plan = PruningPlan("planted", {"conv1": GroupPlan(graph.group_by_name["conv1"].channels, keep)})
    importance = filter_importance(model, graph, criterion, **kw)
    pruned, applied = apply_plan(model, plan, graph, importance)
    kept = applied.groups["conv1"].kept_indices
    assert applied.criterion == criterion
    assert torch.equal(pruned.conv1.weight, model.conv1.weight[list(kept)])  # the kept filters, physically
    return kept


def _batches(
    n: int = 4, shape: tuple[int, ...] = (1, 8, 8), classes: int = 3, size: int = 8
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, *shape, generator=g), torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


# ---- planted cases ---------------------------------------------------------------------------------
# L1 and L2 rank these differently: one big weight (small L1, large L2) against many small ones.
NORMS = [[3.0], [1, 1, 1, 1, 1], [2.5], [1, 1, 1, 1], [0.1], [2.2]]


def test_l2_keeps_the_largest_l2_norms() -> None:
    model, graph = _planted(NORMS)
    assert _kept(model, graph, "l2", 3) == (0, 1, 2)  # squared norms 9, 5, 6.25 (then 4.84, 4, 0.01)


def test_l1_keeps_the_largest_l1_norms() -> None:
    model, graph = _planted(NORMS)
    assert _kept(model, graph, "l1", 3) == (0, 1, 3)  # L1 norms 3, 5, 4 (then 2.5, 2.2, 0.1)


def test_fpgm_drops_the_filter_at_the_geometric_median() -> None:
    # Filter 2 sits at c, the geometric median of the four around it; away from the origin, so its
    # norm is not the smallest and a norm criterion keeps it.
    c = [1.0, 1.0]
    rows = [[c[0] + 1, c[1]], [c[0] - 1, c[1]], c, [c[0], c[1] + 1], [c[0], c[1] - 1]]
    model, graph = _planted(rows)
    assert _kept(model, graph, "fpgm", 4) == (0, 1, 3, 4)
    assert 2 in _kept(model, graph, "l2", 4)  # its norm is not the smallest: only FPGM finds it


def test_fpgm_uses_signed_distances() -> None:
    """Filters w and -w are far apart (Torch-Pruning 1.6's FPGMImportance compares |w|**2 and keeps the median)."""
    rows = [[0.0], [1.0], [-1.0], [0.0, 1.0], [0.0, -1.0]]
    model, graph = _planted(rows)
    assert _kept(model, graph, "fpgm", 4) == (1, 2, 3, 4)


def test_taylor_drops_the_filter_whose_gradient_is_zero() -> None:
    model, graph = _planted([[0.5], [0.6], [5.0], [0.7]])
    torch.nn.init.normal_(model.conv2.weight)
    model.conv2.weight.data[:, 2] = 0  # nothing downstream reads channel 2: its loss gradient is zero
    assert 2 in _kept(model, graph, "l2", 3)  # the largest norm
    assert _kept(model, graph, "taylor", 3, data=_batches()) == (0, 1, 3)
    scores = filter_importance(model, graph, "taylor", data=_batches()).scores["conv1"]
    assert scores[2] == 0 and (scores[[0, 1, 3]] > 0).all()


def test_taylor_squares_the_gate_gradient_per_batch() -> None:
    """The score is the mean over batches of (gamma*dL/dgamma + beta*dL/dbeta)**2, by hand."""
    model, graph = _planted([[0.5], [0.6], [0.7]])
    nn.init.uniform_(model.bn1.weight, 0.5, 1.5)
    nn.init.uniform_(model.bn1.bias, -0.5, 0.5)
    batches = _batches(3)
    expected = torch.zeros(3, dtype=torch.float64)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        bn = model.bn1
        expected += (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).double().detach() ** 2
    model.zero_grad(set_to_none=True)
    got = filter_importance(model, graph, "taylor", data=batches).scores["conv1"]
    assert torch.allclose(got, expected / 3, rtol=1e-5)


def test_taylor_leaves_the_model_as_it_was() -> None:
    model, graph = _planted([[0.5], [0.6], [0.7]])
    model.train()
    stats = model.bn1.running_mean.clone()
    filter_importance(model, graph, "taylor", data=_batches())
    assert model.training and torch.equal(model.bn1.running_mean, stats)
    assert all(p.grad is None for p in model.parameters())


def test_taylor_reads_a_dataset_in_seeded_order() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8, generator=g)
    data = TensorImageDataset(images, torch.randint(0, 3, (256,), generator=g), (0.5,), (0.25,))
    model, graph = _planted([[0.5], [0.6], [0.7]])
    a = filter_importance(model, graph, "taylor", data, seed=3, batches=2).scores["conv1"]
    b = filter_importance(model, graph, "taylor", data, seed=3, batches=2).scores["conv1"]
    c = filter_importance(model, graph, "taylor", data, seed=4, batches=2).scores["conv1"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_taylor_without_data_is_one_clear_error() -> None:
    model, graph = _planted([[0.5], [0.6]])
    with pytest.raises(ConfigError, match="taylor.*needs data"):
        filter_importance(model, graph, "taylor")


def test_random_is_seeded() -> None:
    model = TwoConvs(64).eval()
    graph = ModelGraph(model, (1, 8, 8))
    first = _kept(model, graph, "random", 32, seed=1)
    assert _kept(model, graph, "random", 32, seed=1) == first
    assert _kept(model, graph, "random", 32, seed=2) != first
    # A group's draw is its own: the same seed picks the same filters whatever else is pruned.
    scores = filter_importance(model, graph, "random", seed=1).scores
    other = filter_importance(TwoConvs(64).eval(), graph, "random", seed=1).scores
    assert torch.equal(scores["conv1"], other["conv1"])


def test_unknown_criterion_names_the_choices() -> None:
    model, graph = _planted([[0.5], [0.6]])
    with pytest.raises(ConfigError, match="unknown criterion 'l3': choose one of l2, l1, fpgm, taylor, random"):
        filter_importance(model, graph, "l3")


# ---- groups ------------------------------------------------------------------------------------------
def test_l2_is_the_squared_norm_summed_over_a_groups_writers() -> None:
    """On ResNet-20 (residual groups of several convs) and MobileNetV2 (groups rooted at depthwise convs)."""
    for name in ("resnet20", "mobilenetv2"):
        model = create_model(name, 1, 10)
        graph = ModelGraph(model, (1, 32, 32))
        dg = build_dependency_graph(model, (1, 32, 32))
        modules = dict(model.named_modules())
        scores = filter_importance(model, graph, "l2").scores
        for g in graph.groups:
            assert torch.allclose(scores[g.name], filter_norms(dg, modules[g.name]))


@pytest.mark.parametrize("p", [1, 2])
def test_magnitudes_match_torch_pruning_where_its_definition_coincides(p: int) -> None:
    """Torch-Pruning's MagnitudeImportance over the filters that write a group, summed: every ResNet-20 group."""
    model = create_model("resnet20", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    dg = build_dependency_graph(model, (1, 32, 32))
    modules = dict(model.named_modules())
    reference = tp.importance.MagnitudeImportance(p=p, group_reduction="sum", normalizer=None)
    ours = filter_importance(model, graph, f"l{p}").scores
    residual = 0
    for g in graph.groups:
        root = modules[g.name]
        group = dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, list(range(g.channels)))
        writers = [
            it
            for it in group
            if isinstance(it.dep.target.module, nn.Conv2d) and dg.is_out_channel_pruning_fn(it.dep.handler)
        ]
        residual += len(writers) > 1
        assert torch.allclose(ours[g.name].float(), reference(writers), rtol=1e-5)
    assert residual  # the residual groups, each written by several convs, were among them


# ---- every model, every criterion ---------------------------------------------------------------------
MODELS = [
    ("resnet20", (1, 32, 32)),
    ("resnet56", (3, 16, 16)),
    ("vgg16_bn", (3, 32, 32)),
    ("mobilenetv2", (1, 32, 32)),
    ("torchvision:resnet18", (3, 64, 64)),
    ("torchvision:mobilenet_v2", (3, 64, 64)),
]


@pytest.mark.parametrize(("name", "shape"), MODELS)
def test_every_criterion_prunes_every_model_and_round_trips(name: str, shape: tuple[int, int, int], tmp_path) -> None:
    """Each criterion cuts the model physically; one artifact per model round-trips (each criterion's on some model)."""
    model = create_model(name, shape[0], 10).eval()
    graph = ModelGraph(model, shape)
    plan = PruningPlan.uniform(name, graph, 0.5)
    x = torch.randn(2, *shape)
    saved = CRITERIA[MODELS.index((name, shape)) % len(CRITERIA)]
    choices = set()
    for criterion in CRITERIA:
        importance = filter_importance(model, graph, criterion, data=_batches(1, shape, 10, size=2), seed=0)
        pruned, applied = apply_plan(model, plan, graph, importance)
        assert pruned.eval()(x).shape == (2, 10)
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        choices.add(tuple(applied.groups[graph.groups[0].name].kept_indices))
        if criterion == saved:
            save_pruned(tmp_path, pruned, ModelSpec(name, shape[0], 10, shape[1:]), applied)
            loaded, _, plan_back = load_pruned(tmp_path)  # indices from the file: nothing is scored again
            assert plan_back == applied and plan_back.criterion == criterion
            assert torch.allclose(loaded(x), pruned(x), atol=1e-5)
    assert len(choices) > 1  # the criteria do not all keep the same filters


# ---- plans record their criterion ------------------------------------------------------------------------
def test_plan_json_records_the_criterion_and_reads_older_plans(tmp_path) -> None:
    model = create_model("resnet20", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    _, applied = apply_plan(model, PruningPlan.uniform("resnet20", graph, 0.5), graph)
    assert applied.criterion == "l2"  # the default
    applied.save(tmp_path / "plan.json")
    data = (tmp_path / "plan.json").read_text()
    assert '"criterion": "l2"' in data
    # A plan written before criteria existed: indices chosen by L2; a plan of counts alone: none yet.
    old = applied.to_dict()
    del old["criterion"]
    assert PruningPlan.from_dict(old).criterion == "l2"
    counts = PruningPlan.uniform("resnet20", graph, 0.5)
    assert counts.criterion is None and "criterion" not in counts.to_dict()
    assert PruningPlan.from_dict(counts.to_dict()) == counts
    with pytest.raises(ArtifactError, match="criterion 'l7'"):
        PruningPlan.from_dict(old | {"criterion": "l7"})


def test_an_indexed_plan_keeps_its_criterion_when_reapplied() -> None:
    model = create_model("resnet20", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    fpgm = filter_importance(model, graph, "fpgm")
    _, applied = apply_plan(model, PruningPlan.uniform("resnet20", graph, 0.5), graph, fpgm)
    _, again = apply_plan(model, applied, graph)  # no importance given: the recorded filters are honoured
    assert again == applied and again.criterion == "fpgm"


def test_scores_of_another_model_state_are_refused() -> None:
    model = create_model("resnet20", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    pruned, _ = apply_plan(model, PruningPlan.uniform("resnet20", graph, 0.5), graph)
    small = ModelGraph(pruned, (1, 32, 32))
    with pytest.raises(PlanError, match="do not fit"):
        apply_plan(pruned, PruningPlan.uniform("resnet20", small, 0.5), small, filter_importance(model, graph, "l1"))
