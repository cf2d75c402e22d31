"""Structured pruning: groups, plans, L2 selection, physical shrinkage, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hwprune.errors import ArtifactError, ConfigError, ModelError, PlanError
from hwprune.models import ModelSpec, create_model
from hwprune.pruning import ModelGraph, PruningPlan, apply_plan, load_pruned, save_pruned

ZOO = [
    ("resnet20", (1, 32, 32)),
    ("resnet32", (3, 32, 32)),
    ("resnet56", (3, 16, 16)),
    ("vgg16_bn", (3, 32, 32)),
    ("mobilenetv2", (1, 32, 32)),
    ("torchvision:resnet18", (3, 64, 64)),
    ("torchvision:mobilenet_v2", (3, 64, 64)),
    ("torchvision:densenet121", (3, 64, 64)),
]


def _implied_params(graph: ModelGraph, plan: PruningPlan, model: nn.Module) -> int:
    """Conv/linear parameter count that the plan's layer shapes imply."""
    modules = dict(model.named_modules())
    total = 0
    for layer in graph.layer_shapes(plan.keep):
        per_filter = 1 if layer.depthwise else layer.c_in
        total += layer.c_out * per_filter * layer.kernel * layer.kernel
        total += layer.c_out if modules[layer.name].bias is not None else 0
    return total


def _conv_linear_params(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


@pytest.mark.parametrize(("name", "shape"), ZOO)
def test_random_plan_prunes_physically(name: str, shape: tuple[int, int, int]) -> None:
    model = create_model(name, shape[0], 10).eval()
    graph = ModelGraph(model, shape)
    assert graph.groups, "every zoo model has prunable groups"
    plan = PruningPlan.random(name, graph, np.random.default_rng(1), low=0.3, high=0.9)
    pruned, applied = apply_plan(model, plan, graph)
    x = torch.randn(2, *shape)
    assert pruned(x).shape == model(x).shape == (2, 10)
    assert _conv_linear_params(pruned) == _implied_params(graph, plan, model)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    # The classifier's output units are never pruned.
    assert graph.head.out_features == 10
    assert all(len(g.kept_indices) == g.keep for g in applied.groups.values())
    # The original model is untouched.
    assert _conv_linear_params(model) == _implied_params(graph, PruningPlan.full(name, graph), model)


def test_layer_shapes_match_pruned_modules() -> None:
    model = create_model("mobilenetv2", 1, 10)
    graph = ModelGraph(model, (1, 32, 32))
    plan = PruningPlan.random("mobilenetv2", graph, np.random.default_rng(3))
    pruned, _ = apply_plan(model, plan, graph)
    modules = dict(pruned.named_modules())
    for layer in graph.layer_shapes(plan.keep):
        m = modules[layer.name]
        got = (m.in_channels, m.out_channels) if layer.kind == "conv" else (m.in_features, m.out_features)
        assert got == (layer.c_in, layer.c_out), layer.name


def test_l2_selection_keeps_largest_filters() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
    )
    planted = torch.tensor([5.0, 0.1, 3.0, 0.2, 9.0, 0.3, 0.05, 7.0])
    with torch.no_grad():
        w = torch.randn_like(model[0].weight)
        model[0].weight.copy_(w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * planted.view(-1, 1, 1, 1))
    graph = ModelGraph(model, (3, 8, 8))
    group = graph.groups[0]
    assert group.name == "0" and group.channels == 8
    plan = PruningPlan.full("toy", graph).with_keep({"0": 4})
    pruned, applied = apply_plan(model, plan, graph)
    assert applied.groups["0"].kept_indices == (0, 2, 4, 7)
    assert torch.allclose(pruned[0].weight, model[0].weight[[0, 2, 4, 7]])


def test_plan_json_round_trip(tmp_path) -> None:
    model = create_model("resnet20", 1, 10).eval()
    graph = ModelGraph(model, (1, 32, 32))
    plan = PruningPlan.random("resnet20", graph, np.random.default_rng(0))
    plan.save(tmp_path / "plan.json")
    loaded = PruningPlan.load(tmp_path / "plan.json")
    assert loaded == plan
    x = torch.randn(2, 1, 32, 32)
    a, _ = apply_plan(model, plan, graph)
    b, _ = apply_plan(model, loaded, graph)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_artifact_round_trip_identical_outputs(tmp_path) -> None:
    spec = ModelSpec("mobilenetv2", 1, 10, (32, 32))
    model = spec.build().eval()
    graph = ModelGraph(model, (1, 32, 32))
    pruned, applied = apply_plan(model, PruningPlan.uniform("mobilenetv2", graph, 0.5), graph)
    save_pruned(tmp_path / "art", pruned, spec, applied)
    loaded, loaded_spec, loaded_plan = load_pruned(tmp_path / "art")
    x = torch.randn(3, 1, 32, 32)
    assert loaded_spec == spec and loaded_plan == applied
    assert torch.equal(pruned.eval()(x), loaded(x))


def test_uniform_ratio_validated() -> None:
    graph = ModelGraph(create_model("resnet20", 1, 10), (1, 32, 32))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            PruningPlan.uniform("resnet20", graph, bad)


def test_plan_for_another_model_refused() -> None:
    r20 = ModelGraph(create_model("resnet20", 1, 10), (1, 32, 32))
    vgg = ModelGraph(create_model("vgg16_bn", 1, 10), (1, 32, 32))
    plan = PruningPlan.uniform("vgg16_bn", vgg, 0.5)
    with pytest.raises(PlanError, match="made for model 'vgg16_bn'"):
        plan.validate(r20, "resnet20")
    renamed = PruningPlan("resnet20", plan.groups)
    with pytest.raises(PlanError, match="does not have"):
        apply_plan(create_model("resnet20", 1, 10), renamed, r20)


def test_plan_keep_bounds_refused() -> None:
    graph = ModelGraph(create_model("resnet20", 1, 10), (1, 32, 32))
    plan = PruningPlan.full("resnet20", graph)
    name = graph.groups[0].name
    for k in (0, graph.groups[0].channels + 1):
        with pytest.raises(PlanError, match="keep must be"):
            plan.with_keep({name: k}).validate(graph)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"kind": "checkpoint", "schema_version": 1}), "not a hwprune pruning-plan"),
        (json.dumps({"kind": "pruning-plan", "schema_version": 99}), "schema_version 99"),
        (json.dumps({"kind": "pruning-plan", "schema_version": 1, "model": "x"}), "malformed"),
    ],
)
def test_corrupt_plan_json_refused(tmp_path, content: str, match: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(ArtifactError, match=match):
        PruningPlan.load(path)


def test_unknown_model_suggests() -> None:
    with pytest.raises(ModelError, match="did you mean .*resnet20"):
        create_model("resnet02")
    with pytest.raises(ModelError, match="torchvision:resnet18"):
        create_model("torchvision:resnet81")


def test_corrupt_weights_refused(tmp_path) -> None:
    spec = ModelSpec("resnet20", 1, 10, (32, 32))
    model = spec.build()
    graph = ModelGraph(model, (1, 32, 32))
    pruned, applied = apply_plan(model, PruningPlan.uniform("resnet20", graph, 0.5), graph)
    save_pruned(tmp_path / "art", pruned, spec, applied)
    (tmp_path / "art" / "pruned.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="corrupt"):
        load_pruned(tmp_path / "art")
