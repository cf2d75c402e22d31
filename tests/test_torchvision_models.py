"""Any torchvision CNN classifier: groups traced, a random plan applied, forward, shape, artifact round trip.

The fast subset holds one model per family (residual, depthwise, grouped, squeeze-excitation,
concat, channel shuffle, conv classifier); every other CNN classifier runs with ``-m slow``.
Grouped convolutions, frozen untraceable parts and refused transformers are also tested on tiny
hand-built models, where the planted answer is known.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from hwprune.errors import ModelError, PlanError
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import FilterImportance, ModelGraph, PruningPlan, apply_plan, load_pruned, save_pruned
from hwprune.pruning.plan import GroupPlan

torchvision = pytest.importorskip("torchvision")

TRANSFORMERS = ("vit_", "swin_", "maxvit_")
MIN_INPUT = {"alexnet": 64, "inception_v3": 75}
FAST = [
    "resnet18",  # residual
    "mnasnet0_5",  # depthwise
    "regnet_x_400mf",  # grouped
    "mobilenet_v3_small",  # squeeze-excitation
    "googlenet",  # concat
    "shufflenet_v2_x0_5",  # channel shuffle
    "squeezenet1_1",  # conv classifier
]
ALL_CNNS = [n for n in torchvision.models.list_models(module=torchvision.models) if not n.startswith(TRANSFORMERS)]
SLOW = [pytest.param(n, marks=pytest.mark.slow) for n in ALL_CNNS if n not in FAST]


def _prune_round_trip(arch: str, tmp_path, plan_kind: str = "random") -> tuple[ModelGraph, nn.Module, PruningPlan]:
    size = max(32, MIN_INPUT.get(arch, 0))
    name = f"torchvision:{arch}"
    torch.manual_seed(0)
    model = create_model(name, 3, 10).eval()
    graph = ModelGraph(model, (3, size, size), name=arch)
    if plan_kind == "random":
        plan = PruningPlan.random(name, graph, np.random.default_rng(0), low=0.3, high=0.9)
    else:
        plan = PruningPlan.uniform(name, graph, 0.5)
    pruned, applied = apply_plan(model, plan, graph)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = pruned.eval()(x)
    assert out.shape == (2, 10)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for group in graph.groups:  # every grouped convolution's parts keep as many channels
        cells = graph.cells.get(group.name)
        kept = applied.groups[group.name].kept_indices
        assert len(kept) % group.step == 0
        if cells is not None:
            assert len(set(torch.bincount(cells[list(kept)], minlength=group.step).tolist())) == 1
    save_pruned(tmp_path, pruned, ModelSpec(name, 3, 10, (size, size)), applied)
    loaded, _, reloaded = load_pruned(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    assert reloaded.keep == applied.keep
    return graph, pruned, applied


@pytest.mark.parametrize("arch", FAST + SLOW)
def test_torchvision_cnn_prunes_by_a_random_plan(arch: str, tmp_path) -> None:
    _prune_round_trip(arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_CNNS)
def test_torchvision_cnn_prunes_by_ratio_half(arch: str, tmp_path) -> None:
    _prune_round_trip(arch, tmp_path, "ratio")


def test_grouped_convolutions_keep_equal_parts() -> None:
    model = create_model("torchvision:regnet_x_400mf", 3, 10)
    graph = ModelGraph(model, (3, 32, 32))
    grouped = [g for g in graph.groups if g.step > 1]
    assert grouped, "RegNet's 3x3 convolutions are grouped"
    pruned, _ = apply_plan(model, PruningPlan.uniform("regnet", graph, 0.5), graph)
    originals = dict(model.named_modules())
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == originals[name].groups  # the groups stay, each narrower
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0


def test_conv_classifier_is_never_pruned_on_its_output_side() -> None:
    model = create_model("torchvision:squeezenet1_1", 3, 10)
    graph = ModelGraph(model, (3, 32, 32))
    assert graph.head is model.classifier[1]
    assert "classifier.1" not in graph.group_by_name
    pruned, _ = apply_plan(model, PruningPlan.uniform("sq", graph, 0.25), graph)
    assert pruned.classifier[1].out_channels == 10
    assert pruned.classifier[1].in_channels < model.classifier[1].in_channels


def test_channel_shuffle_is_frozen_with_a_warning_and_the_rest_prunes(caplog) -> None:
    model = create_model("torchvision:shufflenet_v2_x0_5", 3, 10)
    with caplog.at_level(logging.WARNING, logger="hwprune"):
        graph = ModelGraph(model, (3, 32, 32), name="shufflenet_v2_x0_5")
    assert graph.frozen and graph.groups
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "shufflenet_v2_x0_5" in warning and "left unpruned" in warning
    assert list(graph.frozen)[0] in warning  # the layers are named
    assert not set(graph.frozen) & set(graph.group_by_name)
    pruned, _ = apply_plan(model, PruningPlan.uniform("s", graph, 0.5), graph)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


# ---- tiny models with a planted answer ---------------------------------------------------------


class GroupedNet(nn.Module):
    """conv0 (8 out) feeds a 4-group conv1: conv0's channels fall into 4 parts of 2."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=bias)
        self.conv2 = nn.Conv2d(8, 16, 1, bias=bias)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(self.conv0(x))))
        return self.head(x.mean((2, 3)))


@pytest.fixture
def grouped() -> tuple[GroupedNet, ModelGraph]:
    torch.manual_seed(0)
    model = GroupedNet().eval()
    return model, ModelGraph(model, (3, 8, 8))


def test_a_grouped_conv_sets_its_groups_step_and_parts(grouped) -> None:
    _, graph = grouped
    assert graph.group_by_name["conv0"].step == 4
    assert graph.cells["conv0"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert graph.group_by_name["conv1"].step == 4
    assert graph.group_by_name["conv2"].step == 1 and "conv2" not in graph.cells
    shapes = {s.name: s for s in graph.layer_shapes({"conv0": 4, "conv1": 4})}
    assert (shapes["conv1"].c_in, shapes["conv1"].c_out, shapes["conv1"].groups) == (4, 4, 4)
    assert shapes["conv1"].macs == 4 * 1 * 9 * 64  # each filter reads c_in / groups channels


@pytest.mark.parametrize(("asked", "applied"), [(5, 4), (7, 8), (6, 8), (2, 4), (8, 8)])
def test_a_count_a_grouped_conv_cannot_take_is_corrected_with_a_warning(grouped, caplog, asked, applied) -> None:
    model, graph = grouped
    plan = PruningPlan.full("g", graph).with_keep({"conv0": asked})
    with caplog.at_level(logging.WARNING, logger="hwprune"):
        pruned, done = apply_plan(model, plan, graph)
    assert done.keep["conv0"] == applied
    assert pruned.conv1.in_channels == applied and pruned.conv1.groups == 4
    assert (f"conv0 {asked}->{applied}" in caplog.text) == (asked != applied)
    assert pruned(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_random_and_uniform_plans_respect_the_step(grouped) -> None:
    _, graph = grouped
    for seed in range(20):
        plan = PruningPlan.random("g", graph, np.random.default_rng(seed))
        assert plan.keep["conv0"] % 4 == 0 and plan.keep["conv1"] % 4 == 0
    assert PruningPlan.uniform("g", graph, 0.3).keep["conv0"] == 4


def test_chosen_indices_that_break_the_parts_are_refused_in_one_line(grouped) -> None:
    model, graph = grouped
    uneven = PruningPlan("g", {"conv0": GroupPlan(8, 4, (0, 1, 2, 4))}, "l2")  # two from part 0, none from part 3
    with pytest.raises(PlanError, match="unequal numbers of channels") as err:
        apply_plan(model, uneven, graph)
    assert "\n" not in str(err.value)
    odd = PruningPlan("g", {"conv0": GroupPlan(8, 3, (0, 2, 4))}, "l2")
    with pytest.raises(PlanError, match="keep a multiple of 4"):
        apply_plan(model, odd, graph)


def test_filters_are_ranked_within_each_part(grouped) -> None:
    model, graph = grouped
    score = torch.tensor([9.0, 8.0, 1.0, 2.0, 4.0, 3.0, 0.5, 0.6], dtype=torch.float64)
    importance = FilterImportance("l2", {g.name: torch.ones(g.channels, dtype=torch.float64) for g in graph.groups})
    importance.scores["conv0"] = score
    # A global top 4 would take channels 0, 1, 4, 5; per part, each keeps its own best.
    assert importance.kept("conv0", 4, graph.cells["conv0"]) == (0, 3, 4, 7)
    _, applied = apply_plan(model, PruningPlan.full("g", graph).with_keep({"conv0": 4}), graph, importance)
    assert applied.groups["conv0"].kept_indices == (0, 3, 4, 7)


def test_each_part_of_a_grouped_conv_loses_its_own_inputs_exactly(grouped) -> None:
    model, graph = grouped
    kept = (1, 2, 4, 7)  # a different offset in each of the 4 parts: Torch-Pruning's slice cannot do this
    plan = PruningPlan("g", {"conv0": GroupPlan(8, 4, kept)}, "l2")
    pruned, _ = apply_plan(model, plan, graph)
    reference = GroupedNet().eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        dropped = [c for c in range(8) if c not in kept]
        reference.conv0.weight[dropped] = 0  # a removed channel contributes nothing: the same function
        x = torch.randn(2, 3, 8, 8)
        assert torch.allclose(pruned(x), reference(x), atol=1e-6)


def test_a_failure_inside_torch_pruning_is_one_line_naming_model_and_layer(grouped, monkeypatch) -> None:
    model, graph = grouped

    def broken(self, layer, idxs):  # noqa: ANN001, ANN202
        raise RuntimeError("INDICES element is out of DATA bounds")

    monkeypatch.setattr(tp.pruner.function.ConvPruner, "prune_out_channels", broken)
    plan = PruningPlan.full("tiny-grouped", graph).with_keep({"conv2": 8})
    with pytest.raises(PlanError, match="tiny-grouped.*layer 'conv2'.*INDICES") as err:
        apply_plan(model, plan, graph)
    assert "\n" not in str(err.value)


def test_a_vision_transformer_is_refused_in_one_line() -> None:
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
    )
    with pytest.raises(ModelError, match="attention.*encoder.layers.encoder_layer_0.self_attention.*CNN") as err:
        ModelGraph(vit, (3, 32, 32), name="vit")
    assert "\n" not in str(err.value)


class MatmulAttention(nn.Module):
    """Attention written by hand (as Swin and MaxViT do): no nn.MultiheadAttention to spot by type."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.qkv = nn.Linear(8, 24)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        mixed = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
        return self.head(mixed.mean(1))


def test_hand_written_attention_is_refused_too() -> None:
    with pytest.raises(ModelError, match="attention"):
        ModelGraph(MatmulAttention(), (3, 16, 16))


def test_a_model_with_nothing_prunable_is_refused_in_one_line() -> None:
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ModelError, match="nothing hwprune can prune"):
        ModelGraph(model, (3, 8, 8))


def test_a_grouped_conv_is_profiled_as_one_with_its_groups(grouped) -> None:
    from conftest import FakeProfiler, setting

    from hwprune.latency.build import profile_model
    from hwprune.latency.predictor import SumPredictor

    model, graph = grouped
    table, _ = profile_model(
        setting(input_size=(8, 8), calib_plans=0), None, progress=False, profiler=FakeProfiler(), model=model
    )
    keys = [k for k, sig in table.signatures.items() if sig.groups == 4]
    assert len(keys) == 1 and "-g4-" in keys[0]
    points = [(ci, co) for sig, ci, co in table.planned_points() if sig == keys[0]]
    assert points and all(ci % 4 == 0 and co % 4 == 0 for ci, co in points)
    assert all(table.signatures[keys[0]].block(ci, co).conv_groups == 4 for ci, co in points)
    half = PruningPlan.uniform("g", graph, 0.5)
    assert SumPredictor(table, graph).predict_ms(half) < SumPredictor(table, graph).predict_ms(None)
