"""Export a pruned model for deployment, check that the file computes what the PyTorch model does, and time it.

Three formats: ONNX (run by ONNX Runtime), TorchScript (run by torch) and a TensorRT engine
(built from the ONNX export for the GPU it is made on). Parity is checked on the written file read
back by its own runtime, so what ships is what was checked; a file that differs beyond the
tolerance is removed and the export fails in one line. The file is then timed on its runtime
beside the unpruned model exported the same way, in interleaved rounds under the profilers'
protocol (hwprune/profilers/base.py), so the speed-up is the runtime's, not PyTorch eager's.

TorchScript files are code as much as data (``torch.jit.load`` runs what they hold): hwprune
writes one for deployment and reads back only the file it has just written, for the parity
check. It never loads a TorchScript file a user hands it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from hwprune import __version__
from hwprune.checkpoint import JSON_NAME as CHECKPOINT_JSON
from hwprune.checkpoint import load_checkpoint
from hwprune.errors import ArtifactError, ConfigError, HwpruneError, ModelError
from hwprune.io import read_json, write_json
from hwprune.job.config import JOB_KIND, JOB_SCHEMA
from hwprune.models import ModelSpec
from hwprune.profilers import Measurement, Profiler, get_profiler, keep_faster
from hwprune.profilers.onnx_backend import export_onnx
from hwprune.pruning.artifact import SPEC_FILE, load_pruned

KIND = "export"
SCHEMA_VERSION = 1
TOLERANCE = 1e-4
"""Largest absolute difference allowed between the file's outputs and the PyTorch model's (fp32 logits on the CPU)."""


@dataclass
class Source:
    """The model to export, the unpruned model it is timed beside, and what the folder recorded."""

    model: nn.Module
    unpruned: nn.Module | None  # None: the source is itself an unpruned checkpoint
    unpruned_weights: str  # where the unpruned model's weights came from (its latency does not depend on them)
    spec: ModelSpec
    path: Path  # the JSON the model was read from
    batch: int | None  # the run's deployment batch, when it records one
    threads: int | None


def load_source(folder: str | Path) -> Source:
    """The model in a ``hwprune prune`` run directory, a pruned-model folder, or a checkpoint folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ArtifactError(f"--run {root}: no such directory; give a `hwprune prune` run directory")
    for pruned_dir in (root / "model", root):
        if (pruned_dir / SPEC_FILE).is_file():
            return _pruned_source(pruned_dir, root)
    if (root / CHECKPOINT_JSON).is_file():
        model, spec, _ = load_checkpoint(root)
        return Source(model, None, "", spec, root / CHECKPOINT_JSON, None, None)
    if (root / "job.json").is_file():
        raise ArtifactError(
            f"the prune run in {root} has no model yet (no model/{SPEC_FILE}): finish it with "
            f"`hwprune prune --resume {root}`, then export"
        )
    raise ArtifactError(
        f"{root} holds no model to export (no model/{SPEC_FILE} of a prune run, no {CHECKPOINT_JSON} of a "
        "checkpoint): give the directory `hwprune prune --out` wrote"
    )


def _pruned_source(pruned_dir: Path, root: Path) -> Source:
    model, spec, _plan = load_pruned(pruned_dir)
    meta = read_json(pruned_dir / SPEC_FILE, "pruned-model", 1).get("meta") or {}
    checkpoint = meta.get("checkpoint")
    try:
        unpruned, _, _ = load_checkpoint(str(checkpoint))
        weights = f"checkpoint {checkpoint}"
    except (HwpruneError, TypeError):
        unpruned = spec.build().eval()
        weights = f"untrained: the checkpoint ({checkpoint}) could not be read; latency does not depend on weights"
    batch = threads = None
    for run in (root, pruned_dir.parent):
        if (run / "job.json").is_file():
            config = read_json(run / "job.json", JOB_KIND, JOB_SCHEMA).get("config") or {}
            batch, threads = _int_or_none(config.get("batch")), _int_or_none(config.get("threads"))
            break
    return Source(model, unpruned, weights, spec, pruned_dir / SPEC_FILE, batch, threads)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# ---- formats ------------------------------------------------------------------------------------


class ExportFormat(ABC):
    """How one format is written, read back for the parity check, and timed on its own runtime."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    tolerance: ClassVar[float] = TOLERANCE

    def __init__(self, profiler: Profiler, opset: int | None) -> None:
        self.profiler = profiler
        self.opset = opset

    @abstractmethod
    def serialize(self, model: nn.Module, shape: tuple[int, ...]) -> bytes:
        """The file's content for ``model`` at a fixed input shape."""

    @abstractmethod
    def run_file(self, path: Path, x: torch.Tensor) -> torch.Tensor:
        """The written file's output for ``x``, computed by the format's runtime."""

    @abstractmethod
    def deploy(self, content: bytes, shape: tuple[int, ...], what: str) -> Callable[[], Measurement]:
        """``content`` ready to be timed again and again on the runtime."""


class OnnxFormat(ExportFormat):
    name, suffix = "onnx", ".onnx"

    def serialize(self, model: nn.Module, shape: tuple[int, ...]) -> bytes:
        return export_onnx(model, shape, self.opset)

    def run_file(self, path: Path, x: torch.Tensor) -> torch.Tensor:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.profiler.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as deployed and timed
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        return torch.from_numpy(np.asarray(session.run(None, feed)[0]))

    def deploy(self, content: bytes, shape: tuple[int, ...], what: str) -> Callable[[], Measurement]:
        return self.profiler.deploy_onnx(content, what)  # type: ignore[attr-defined]


class TorchScriptFormat(ExportFormat):
    name, suffix = "torchscript", ".pt"

    def serialize(self, model: nn.Module, shape: tuple[int, ...]) -> bytes:
        example = torch.randn(shape)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notes; parity is checked below
            try:
                traced = torch.jit.trace(model.cpu().eval(), example, check_trace=False)
            except Exception as exc:  # the tracer raises many types; all mean "this model does not trace"
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ModelError(f"{type(model).__name__} cannot be traced to TorchScript ({first})") from None
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        return buffer.getvalue()

    def run_file(self, path: Path, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _load_own_torchscript(path)(x)

    def deploy(self, content: bytes, shape: tuple[int, ...], what: str) -> Callable[[], Measurement]:
        timed = self.profiler.deploy(_load_own_torchscript(io.BytesIO(content)), shape)

        def measure() -> Measurement:
            with warnings.catch_warnings():  # the profiler's copy of a script module reads .grad, which warns
                warnings.filterwarnings("ignore", message=r"The \.grad attribute of a Tensor that is not a leaf")
                return timed()

        return measure


def _load_own_torchscript(source: Path | io.BytesIO) -> Any:
    """Read back a TorchScript file this module has just written (never a user's: see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(source, map_location="cpu").eval()


class TensorRTFormat(ExportFormat):
    """A serialized engine: built from the ONNX export, for the GPU (and TensorRT version) it is built on."""

    name, suffix = "tensorrt", ".engine"
    # TensorRT builds fp32 networks with TF32 tactics on Ampere and later (10-bit mantissa, as deployed),
    # so its logits agree with fp32 PyTorch to about 1e-3, not 1e-4.
    tolerance = 1e-2

    def serialize(self, model: nn.Module, shape: tuple[int, ...]) -> bytes:
        return self.profiler.serialize_engine(export_onnx(model, shape, self.opset))  # type: ignore[attr-defined]

    def run_file(self, path: Path, x: torch.Tensor) -> torch.Tensor:
        return self.profiler.run_engine(path.read_bytes(), x)  # type: ignore[attr-defined]

    def deploy(self, content: bytes, shape: tuple[int, ...], what: str) -> Callable[[], Measurement]:
        return self.profiler.deploy_engine(content, what)  # type: ignore[attr-defined]


FORMATS: dict[str, tuple[type[ExportFormat], str]] = {
    "onnx": (OnnxFormat, "onnxruntime"),
    "torchscript": (TorchScriptFormat, "torch-cpu"),
    "tensorrt": (TensorRTFormat, "tensorrt"),
}
"""format -> (how it is written and read, the profiler backend that times it)."""


# ---- the export ---------------------------------------------------------------------------------


@dataclass
class Timing:
    """The measurement protocol's knobs (as ``hwprune prune`` names them); None: the export is not timed."""

    repeats: int = 10
    runs: int = 5
    rounds: int = 3
    warmup_s: float = 1.0


def export_model(
    source: Source,
    fmt: str,
    out: str | Path,
    batch: int,
    opset: int | None = None,
    tolerance: float | None = None,
    threads: int | None = None,
    timing: Timing | None = None,
) -> dict[str, Any]:
    """Write ``source.model`` as ``fmt`` to ``out``, check parity, time it; returns (and writes) the record.

    The record goes beside the file as ``<out>.json``. A parity failure leaves no file behind.
    ``tolerance`` None is the format's own (:data:`TOLERANCE` but for TensorRT's TF32).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    fmt_cls, backend = FORMATS[fmt]
    t = timing or Timing()
    profiler = get_profiler(backend, threads=threads, repeats=t.repeats, runs=t.runs, warmup_s=t.warmup_s)
    exporter = fmt_cls(profiler, opset)
    tolerance = exporter.tolerance if tolerance is None else tolerance
    spec = source.spec
    shape = (batch, spec.in_channels, *spec.input_size)
    out = Path(out)
    content = exporter.serialize(source.model, shape)
    diff = _write_checked(exporter, source.model, content, out, shape, tolerance)
    record: dict[str, Any] = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "hwprune_version": __version__,
        "format": fmt,
        "file": out.name,
        "file_sha256": hashlib.sha256(content).hexdigest(),
        "file_bytes": len(content),
        "source": str(source.path.resolve()),
        "model": spec.to_dict(),
        "input_shape": list(shape),
        "opset": opset,
        "parity": {
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "inputs": f"one batch of {batch}, standard normal, seed 0",
        },
        "latency": None,
    }
    if timing is not None:
        record["latency"] = _time_against_unpruned(exporter, source, content, shape, t.rounds)
        record["fingerprint"] = profiler.fingerprint()
    write_json(out.with_name(out.name + ".json"), record)
    return record


def _write_checked(
    exporter: ExportFormat, model: nn.Module, content: bytes, out: Path, shape: tuple[int, ...], tolerance: float
) -> float:
    """Write ``content`` under a temporary name, compare the file's output with the model's, then rename."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.cpu().eval()(x).float()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}{exporter.suffix}")
    try:
        tmp.write_bytes(content)
        got = exporter.run_file(tmp, x).float()
        if got.shape != expected.shape:
            raise ModelError(
                f"the {exporter.name} export outputs shape {tuple(got.shape)}, the model {tuple(expected.shape)}"
            )
        diff = float((got - expected).abs().max())
        if not diff <= tolerance:  # NaN fails too
            raise ModelError(
                f"the {exporter.name} export differs from the PyTorch model by up to {diff:.3g} "
                f"(tolerance {tolerance:g}) on a batch of {shape[0]}; nothing was written"
            )
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return diff


def _time_against_unpruned(
    exporter: ExportFormat, source: Source, content: bytes, shape: tuple[int, ...], rounds: int
) -> dict[str, Any]:
    """The file on its runtime and, when there is one, the unpruned model exported the same way, interleaved.

    Each round times both, the faster of each kept (``keep_faster``): a slow spell of a shared
    machine then hits both models rather than the speed-up.
    """
    deployed = [exporter.deploy(content, shape, f"exported {source.spec.name}")]
    if source.unpruned is not None:
        unpruned = exporter.serialize(source.unpruned, shape)
        deployed.append(exporter.deploy(unpruned, shape, f"exported unpruned {source.spec.name}"))
    kept = [timed() for timed in deployed]
    for _ in range(rounds - 1):
        kept = [keep_faster(k, timed()) for k, timed in zip(kept, deployed, strict=True)]
    latency: dict[str, Any] = {"backend": exporter.profiler.name, "rounds": rounds, "model": kept[0].to_dict()}
    if len(kept) == 2:
        latency |= {
            "unpruned": kept[1].to_dict(),
            "unpruned_weights": source.unpruned_weights,
            "speedup": kept[1].median_ms / kept[0].median_ms if kept[0].median_ms > 0 else None,
        }
    return latency
