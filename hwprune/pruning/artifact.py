"""A pruned model on disk = base model spec + applied plan (JSON) + weights (safetensors).

Loading rebuilds the base architecture, re-applies the plan with its recorded indices, then loads
the weights: no module is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hwprune import __version__
from hwprune.errors import ArtifactError
from hwprune.io import load_weights, read_json, save_weights, write_json
from hwprune.models import ModelSpec
from hwprune.pruning.apply import apply_plan
from hwprune.pruning.graph import ModelGraph
from hwprune.pruning.plan import PruningPlan

ARTIFACT_KIND = "pruned-model"
ARTIFACT_SCHEMA = 1
SPEC_FILE = "pruned.json"
WEIGHTS_FILE = "pruned.safetensors"


def save_pruned(
    out_dir: str | Path, model: nn.Module, spec: ModelSpec, plan: PruningPlan, meta: dict[str, Any] | None = None
) -> Path:
    if any(g.kept_indices is None for g in plan.groups.values()):
        raise ArtifactError("only an applied plan (with kept indices) can be saved with its weights")
    out = Path(out_dir)
    save_weights(out / WEIGHTS_FILE, model.state_dict())
    write_json(
        out / SPEC_FILE,
        {
            "kind": ARTIFACT_KIND,
            "schema_version": ARTIFACT_SCHEMA,
            "hwprune_version": __version__,
            "spec": spec.to_dict(),
            "plan": plan.to_dict(),
            "meta": meta or {},
        },
    )
    return out


def load_pruned(path: str | Path) -> tuple[nn.Module, ModelSpec, PruningPlan]:
    path = Path(path)
    json_path = path / SPEC_FILE if path.is_dir() else path
    data = read_json(json_path, ARTIFACT_KIND, ARTIFACT_SCHEMA)
    spec = ModelSpec.from_dict(data.get("spec", {}))
    plan = PruningPlan.from_dict(data.get("plan", {}), source=str(json_path))
    base = spec.build()
    graph = ModelGraph(base, (spec.in_channels, *spec.input_size))
    if any(g.kept_indices is None for g in plan.groups.values()):
        raise ArtifactError(f"{json_path}: plan has no kept indices, so the weights cannot be placed")
    plan.validate(graph, spec.name)
    model, _ = apply_plan(base, plan, graph)
    state = load_weights(json_path.parent / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactError(f"{json_path.parent}: weights do not fit the pruned architecture ({first})") from None
    return model.eval(), spec, plan
