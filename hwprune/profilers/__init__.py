"""Latency measurement backends; importing this package registers every backend.

Backends whose package or hardware is missing still register (their imports are lazy) and
raise BackendUnavailable, naming the fix, only when someone asks for them.
"""

from hwprune.profilers.base import (
    Profiler,
    UnstableMeasurementWarning,
    available_profilers,
    get_profiler,
    register_profiler,
)
from hwprune.profilers.blocks import BlockSpec, input_shape, onnx_block, torch_block
from hwprune.profilers.fingerprint import device_key
from hwprune.profilers.measurement import Measurement, keep_faster

# Importing the backend modules registers them.
from hwprune.profilers import onnx_backend, tensorrt_backend, torch_backend  # noqa: E402,F401  isort: skip

__all__ = [
    "BlockSpec",
    "Measurement",
    "Profiler",
    "UnstableMeasurementWarning",
    "available_profilers",
    "device_key",
    "get_profiler",
    "input_shape",
    "keep_faster",
    "onnx_block",
    "register_profiler",
    "torch_block",
]
