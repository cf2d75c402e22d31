"""TensorRT backend (TensorRT 10 Python API): the latency of a built engine, as trtexec would report.

``tensorrt`` is imported only when this backend is used, so the package imports (and this module
registers) on machines without it. Device buffers are torch CUDA tensors and timing uses CUDA
events on a torch stream, so neither pycuda nor cuda-python is needed at run time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from hwprune.errors import BackendUnavailable, ConfigError, ModelError
from hwprune.profilers.base import register_profiler
from hwprune.profilers.fingerprint import device_fingerprint
from hwprune.profilers.measurement import Measurement
from hwprune.profilers.onnx_backend import OnnxProfiler
from hwprune.profilers.torch_backend import CudaEventTiming, require_cuda

_INSTALL_HINT = 'tensorrt backend needs TensorRT: pip install "hwprune[tensorrt]" (NVIDIA GPU + CUDA required)'
_LOGGER: Any = None


def _trt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(_INSTALL_HINT) from None
    return tensorrt


def _logger() -> Any:
    """One logger per process, as TensorRT expects; errors only, so a table build stays readable."""
    global _LOGGER
    if _LOGGER is None:
        trt = _trt()
        _LOGGER = trt.Logger(trt.Logger.ERROR)
    return _LOGGER


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
        "UINT8": torch.uint8,
    }
    for name, torch_dtype in table.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return torch_dtype
    raise ModelError(f"tensorrt engine uses an I/O data type hwprune cannot allocate: {dtype}")


def _parser_errors(parser: Any) -> str:
    parts = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = getattr(err, "node_name", lambda: "")() or f"node {err.node()}"
        op = getattr(err, "node_operator", lambda: "")()
        where = f"{node} ({op})" if op else node
        parts.append(f"{where}: {' '.join(str(err.desc()).split())}")
    return "; ".join(parts) or "no detail from the parser"


@register_profiler
class TensorRTProfiler(CudaEventTiming, OnnxProfiler):
    name = "tensorrt"

    def __init__(
        self,
        *args: Any,
        fp16: bool = False,
        workspace_mib: int = 1024,
        device_index: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if workspace_mib < 1:
            raise ConfigError(f"workspace_mib must be >= 1, got {workspace_mib}")
        self.fp16 = fp16
        self.workspace_mib = workspace_mib
        self.device = torch.device("cuda", device_index)
        self._runtime: Any = None

    @classmethod
    def check_available(cls) -> None:
        _trt()
        require_cuda(cls.name)

    def measure_onnx(self, model_bytes: bytes, what: str = "ONNX model") -> Measurement:
        return self.deploy_onnx(model_bytes, what)()

    def deploy_onnx(self, model_bytes: bytes, what: str = "ONNX model") -> Callable[[], Measurement]:
        """Built into an engine with bound buffers once (a build takes seconds to minutes); each call times it."""
        return self.deploy_engine(self.serialize_engine(model_bytes), what)

    def serialize_engine(self, model_bytes: bytes) -> bytes:
        """An ONNX model built into a serialized engine (a ``.engine`` / ``.plan`` file's content) for this GPU."""
        with torch.cuda.device(self.device):
            return bytes(self._build_serialized(model_bytes))

    def deploy_engine(self, serialized: bytes, what: str = "TensorRT engine") -> Callable[[], Measurement]:
        """A serialized engine made ready to be timed again and again (each call is one measurement).

        The engine, its context and buffers live as long as the returned handle; every measurement
        ends with its stream synchronized, so no kernel still uses the buffers when they are freed.
        """
        with torch.cuda.device(self.device):
            engine = self._deserialize(serialized)
            context = engine.create_execution_context()
            if context is None:
                raise ModelError("tensorrt could not create an execution context (out of GPU memory?)")
            buffers = self._bind_buffers(engine, context)
        return functools.partial(self._time_engine, engine, context, buffers, what)

    def _time_engine(self, engine: Any, context: Any, buffers: list[torch.Tensor], what: str) -> Measurement:
        """One measurement of a built engine (``engine`` and ``buffers`` are passed to keep them alive)."""
        with torch.cuda.device(self.device):
            stream = torch.cuda.Stream(self.device)
            self._stream = stream

            def run() -> None:
                if not context.execute_async_v3(stream.cuda_stream):
                    raise ModelError(f"tensorrt execute_async_v3 failed on {what}")

            try:
                return self._measure(run, what)
            finally:
                self._stream = None
                stream.synchronize()

    def run_engine(self, serialized: bytes, inputs: torch.Tensor) -> torch.Tensor:
        """The engine's single output for ``inputs`` (one input tensor), on the CPU: for checking parity."""
        trt = _trt()
        with torch.cuda.device(self.device):
            engine = self._deserialize(serialized)
            context = engine.create_execution_context()
            if context is None:
                raise ModelError("tensorrt could not create an execution context (out of GPU memory?)")
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(ins) != 1 or len(outs) != 1:
                raise ModelError(f"tensorrt engine has {len(ins)} inputs and {len(outs)} outputs; expected one of each")
            x = inputs.to(self.device, _torch_dtype(trt, engine.get_tensor_dtype(ins[0]))).contiguous()
            out_shape = tuple(engine.get_tensor_shape(outs[0]))
            y = torch.empty(out_shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(outs[0])), device=self.device)
            context.set_tensor_address(ins[0], x.data_ptr())
            context.set_tensor_address(outs[0], y.data_ptr())
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))  # x was written on the current stream
            if not context.execute_async_v3(stream.cuda_stream):
                raise ModelError("tensorrt execute_async_v3 failed")
            stream.synchronize()
            return y.float().cpu()

    def _build_serialized(self, model_bytes: bytes) -> Any:
        trt = _trt()
        builder = trt.Builder(_logger())
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, _logger())
        if not parser.parse(model_bytes):
            raise ModelError(f"tensorrt could not parse the ONNX model: {_parser_errors(parser)}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib * 2**20)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(
                f"tensorrt could not build an engine (workspace {self.workspace_mib} MiB, "
                f"{'fp16' if self.fp16 else 'fp32'}); try a larger workspace_mib"
            )
        return serialized

    def _deserialize(self, serialized: Any) -> Any:
        trt = _trt()
        if self._runtime is None:  # kept on the profiler: a runtime must outlive the engines it made
            self._runtime = trt.Runtime(_logger())
        engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise ModelError("tensorrt could not deserialize the engine it just built")
        return engine

    def _bind_buffers(self, engine: Any, context: Any) -> list[torch.Tensor]:
        trt = _trt()
        gen = torch.Generator(device=self.device).manual_seed(0)
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ConfigError(f"tensor {name} has a dynamic shape {shape}; export the model with a fixed shape")
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and dtype.is_floating_point:
                tensor = torch.randn(shape, generator=gen, device=self.device).to(dtype)
            else:
                tensor = torch.zeros(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(name, tensor.data_ptr())
            buffers.append(tensor)
        return buffers

    def fingerprint(self) -> dict[str, Any]:
        trt = _trt()
        return device_fingerprint(
            self.name,
            threads=None,
            device="cuda",
            device_index=self.device.index or 0,
            runtime="tensorrt",
            runtime_version=trt.__version__,
            precision="fp16" if self.fp16 else "fp32",
            extra={"workspace_mib": self.workspace_mib},
        )
