"""A pruned model on disk = base model spec + applied plan (JSON) + weights (safetensors).

Loading rebuilds the base architecture, re-applies the plan with its recorded indices, then loads
the weights: no module is ever unpickled. A model that no registry can build (a user's own
``nn.Module`` pruned through the Python API) is rebuilt from the unpruned architecture the caller
hands in as ``base_model``: its weights do not matter, every tensor is replaced by the saved ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hwprune import __version__
from hwprune.errors import ArtifactError, ModelError
from hwprune.io import load_into, load_weights, read_json, save_weights, write_json
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


def load_pruned(path: str | Path, base_model: nn.Module | None = None) -> tuple[nn.Module, ModelSpec, PruningPlan]:
    """The pruned model saved at ``path`` (a directory or its ``pruned.json``), its spec and applied plan.

    ``base_model``: the unpruned architecture to cut (left untouched), for a model the spec's name
    cannot build; by default the spec builds it.
    """
    path = Path(path)
    json_path = path / SPEC_FILE if path.is_dir() else path
    data = read_json(json_path, ARTIFACT_KIND, ARTIFACT_SCHEMA)
    spec = ModelSpec.from_dict(data.get("spec", {}))
    plan = PruningPlan.from_dict(data.get("plan", {}), source=str(json_path))
    if base_model is not None:
        base = base_model
    else:
        try:
            base = spec.build()
        except ModelError as exc:
            raise ArtifactError(
                f"{json_path}: {exc}; for your own model pass the unpruned architecture: "
                "load_pruned(path, base_model=YourNet())"
            ) from None
    graph = ModelGraph(base, (spec.in_channels, *spec.input_size))
    if any(g.kept_indices is None for g in plan.groups.values()):
        raise ArtifactError(f"{json_path}: plan has no kept indices, so the weights cannot be placed")
    plan.validate(graph, spec.name)
    model, _ = apply_plan(base, plan, graph)
    state = load_weights(json_path.parent / WEIGHTS_FILE)
    try:
        load_into(model, state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactError(f"{json_path.parent}: weights do not fit the pruned architecture ({first})") from None
    return model.eval(), spec, plan
