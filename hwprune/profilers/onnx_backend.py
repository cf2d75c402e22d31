"""ONNX Runtime backend: the model as ORT serves it after its own graph optimisation.

Full optimisation is on, so BatchNorm folding and Conv+Relu fusion happen exactly as in
deployment; one intra-op pool of ``threads`` threads, no inter-op parallelism and sequential
execution, so the thread count in the fingerprint is the whole story.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import re
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from hwprune.errors import BackendUnavailable, ConfigError, ModelError
from hwprune.profilers.base import Profiler, register_profiler
from hwprune.profilers.blocks import BlockSpec, onnx_block
from hwprune.profilers.fingerprint import device_fingerprint
from hwprune.profilers.measurement import Measurement

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _first_line(exc: Exception) -> str:
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # the exporter colours its errors
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' progress prints, warnings and graph dumps; failures are reported by us."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript")]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], opset: int | None = None) -> bytes:
    """Serialized ONNX of ``model`` at a fixed input shape (batch is part of the deployment).

    The torch.export-based exporter (the default since torch 2.9) is used first, with its
    progress output off; the deprecated TorchScript exporter is the fallback for models that
    torch.export cannot trace. Both run on a CPU copy in eval mode, leaving the caller's model alone.
    ``opset`` None is the exporter's own default.
    """
    module = copy.deepcopy(model).cpu().eval()
    example = (torch.randn(tuple(input_shape)),)
    errors: list[str] = []
    versions = {} if opset is None else {"opset_version": opset}
    with _quiet_export():
        try:
            program = torch.onnx.export(module, example, dynamo=True, verbose=False, optimize=True, **versions)
            return program.model_proto.SerializeToString()
        except Exception as exc:  # the exporter raises many unrelated types; all mean "try the other one"
            errors.append(f"torch.export-based exporter: {_first_line(exc)}")
        try:
            buffer = io.BytesIO()
            torch.onnx.export(module, example, buffer, dynamo=False, do_constant_folding=True, **versions)
            return buffer.getvalue()
        except Exception as exc:
            errors.append(f"TorchScript exporter: {_first_line(exc)}")
    raise ModelError(f"{type(model).__name__} cannot be exported to ONNX ({'; '.join(errors)})")


class OnnxProfiler(Profiler):
    """A backend that deploys ONNX: blocks are built as ONNX graphs, whole models exported to ONNX."""

    def measure_block(self, spec: BlockSpec) -> Measurement:
        return self.measure_onnx(onnx_block(spec), f"block {spec}")

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        return self.deploy(model, input_shape)()

    def deploy(self, model: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Measurement]:
        """Exported to ONNX once; each call times the same graph."""
        model_bytes, what = export_onnx(model, tuple(input_shape)), f"{type(model).__name__} {tuple(input_shape)}"
        return self.deploy_onnx(model_bytes, what)

    def deploy_onnx(self, model_bytes: bytes, what: str = "ONNX model") -> Callable[[], Measurement]:
        """A serialized model made ready to be timed again and again. ONNX Runtime opens a session in
        milliseconds, so by default nothing is prepared; TensorRT builds its engine here, once."""
        return functools.partial(self.measure_onnx, model_bytes, what)

    @abstractmethod
    def measure_onnx(self, model_bytes: bytes, what: str = "ONNX model") -> Measurement:
        """Time an already serialized model with fixed input shapes."""


@register_profiler
class OnnxRuntimeProfiler(OnnxProfiler):
    name = "onnxruntime"

    def __init__(self, *args: Any, provider: str = "CPUExecutionProvider", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import onnxruntime as ort

        self.provider = _PROVIDER_ALIASES.get(provider.lower(), provider)
        have = ort.get_available_providers()
        if self.provider not in have:
            fix = "pip install onnxruntime-gpu" if self.provider in _GPU_PROVIDERS else "check the provider name"
            raise BackendUnavailable(
                f"onnxruntime provider {self.provider} is not available here (have {', '.join(have)}); {fix}"
            )

    @classmethod
    def check_available(cls) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BackendUnavailable(
                'onnxruntime backend needs onnxruntime: pip install onnxruntime (or reinstall "hwprune")'
            ) from None

    def measure_onnx(self, model_bytes: bytes, what: str = "ONNX model") -> Measurement:
        """Time an already serialized model; its inputs must have fixed shapes."""
        session = self._session(model_bytes)
        rng = np.random.default_rng(0)
        feeds = {}
        for node in session.get_inputs():
            if not all(isinstance(d, int) for d in node.shape):
                raise ConfigError(f"ONNX input {node.name} has a dynamic shape {node.shape}; export it fixed")
            if node.type not in _ORT_DTYPES:
                raise ConfigError(f"ONNX input {node.name} is {node.type}; only float inputs are profiled")
            feeds[node.name] = rng.standard_normal(node.shape).astype(_ORT_DTYPES[node.type])
        outputs = [o.name for o in session.get_outputs()]
        return self._measure(lambda: session.run(outputs, feeds), what)

    def _session(self, model_bytes: bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's warnings would drown the table build
        return ort.InferenceSession(model_bytes, sess_options=options, providers=[self.provider])

    def fingerprint(self) -> dict[str, Any]:
        import onnxruntime as ort

        on_gpu = self.provider in _GPU_PROVIDERS
        return device_fingerprint(
            self.name,
            threads=None if on_gpu else self.threads,
            device="cuda" if on_gpu else "cpu",
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            extra={"provider": self.provider, "graph_optimization": "all", "inter_op_threads": 1},
        )
