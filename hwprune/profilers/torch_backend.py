"""Eager PyTorch backends: what a user gets by calling ``model(x)`` in a serving loop.

Nothing is folded or compiled: BatchNorm runs as its own op, as it does in eager mode. The model
is deep-copied onto the backend's device in eval mode so measuring never moves or switches the
caller's model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hwprune.errors import BackendUnavailable
from hwprune.profilers.base import Profiler, Workload, register_profiler
from hwprune.profilers.blocks import BlockSpec, input_shape, torch_block
from hwprune.profilers.fingerprint import device_fingerprint
from hwprune.profilers.measurement import Measurement

_INPUT_SEED = 0


def _random_input(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_INPUT_SEED)
    return torch.randn(shape, generator=gen).to(device)


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Pin torch's intra-op pool for the measurement and give the caller back its own setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@register_profiler
class TorchCPUProfiler(Profiler):
    name = "torch-cpu"

    def measure_block(self, spec: BlockSpec) -> Measurement:
        return self._time_module(torch_block(spec), input_shape(spec), f"block {spec}")

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        return self._time_module(model, tuple(input_shape), f"{type(model).__name__} {tuple(input_shape)}")

    def _time_module(self, model: nn.Module, shape: tuple[int, ...], what: str) -> Measurement:
        device = torch.device("cpu")
        module = copy.deepcopy(model).to(device).eval()
        x = _random_input(shape, device)
        with fixed_threads(self.threads), torch.inference_mode():
            return self._measure(lambda: module(x), what)

    def fingerprint(self) -> dict[str, Any]:
        return device_fingerprint(
            self.name,
            threads=self.threads,
            runtime="torch",
            runtime_version=torch.__version__,
            extra={"mkldnn": torch.backends.mkldnn.is_available()},
        )


class CudaEventTiming:
    """Times each sample with CUDA events on the stream the work runs on.

    A host clock around asynchronous launches measures the launch, not the kernels; events
    bracket the GPU work itself, and the sync before each sample keeps samples independent.
    """

    _stream: torch.cuda.Stream | None = None

    def _sample_ms(self, run: Workload) -> float:
        stream = self._stream or torch.cuda.current_stream()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    def _sync(self) -> None:
        torch.cuda.synchronize()


def require_cuda(backend: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"{backend} backend found no CUDA device (torch.cuda.is_available() is False); "
            "profile with torch-cpu or onnxruntime instead, or run on a machine with an NVIDIA GPU "
            "and a CUDA build of torch"
        )


@register_profiler
class TorchCUDAProfiler(CudaEventTiming, Profiler):
    name = "torch-cuda"

    def __init__(self, *args: Any, device_index: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = torch.device("cuda", device_index)

    @classmethod
    def check_available(cls) -> None:
        require_cuda(cls.name)

    def measure_block(self, spec: BlockSpec) -> Measurement:
        return self._time_module(torch_block(spec), input_shape(spec), f"block {spec}")

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        return self._time_module(model, tuple(input_shape), f"{type(model).__name__} {tuple(input_shape)}")

    def _time_module(self, model: nn.Module, shape: tuple[int, ...], what: str) -> Measurement:
        module = copy.deepcopy(model).to(self.device).eval()
        x = _random_input(shape, self.device)
        with torch.cuda.device(self.device), torch.inference_mode():
            return self._measure(lambda: module(x), what)

    def fingerprint(self) -> dict[str, Any]:
        return device_fingerprint(
            self.name,
            threads=None,
            device="cuda",
            device_index=self.device.index or 0,
            runtime="torch",
            runtime_version=torch.__version__,
            extra={"cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": torch.backends.cudnn.benchmark},
        )
