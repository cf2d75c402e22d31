"""Shared test settings and fakes: small, deterministic, single-threaded where timing is not the point.

``FakeProfiler`` and ``setting`` are imported by test modules as ``from conftest import ...``.
"""

import os
from typing import Any

import pytest
import torch
from torch import nn

from hwprune.latency import TableSetting
from hwprune.profilers import BlockSpec, Measurement, Profiler

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class FakeProfiler(Profiler):
    """Latency = MACs-like work + overhead, with fixed samples; never registered, never timed."""

    name = "fake"

    def __init__(self, threads: int = 1, fail_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(threads=threads, **kwargs)
        self.fail_after = fail_after
        self.blocks = 0

    def measure_block(self, spec: BlockSpec) -> Measurement:
        if self.fail_after is not None and self.blocks >= self.fail_after:
            raise KeyboardInterrupt  # what Ctrl-C looks like from inside the build
        self.blocks += 1
        h, w = spec.out_hw
        work = spec.batch * spec.c_out * h * w * (1 if spec.depthwise else spec.c_in) * spec.kernel**2
        base = 0.01 + work * 1e-6
        return Measurement([base, base * 1.01, base * 0.99])

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        params = sum(p.numel() for p in model.parameters())
        return Measurement([0.5 + params * 1e-5] * 3)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "fake",
            "device": "cpu",
            "cpu_model": "test-cpu",
            "threads": self.threads,
            "precision": "fp32",
        }


def setting(**overrides: Any) -> TableSetting:
    base = dict(
        model="resnet20",
        in_channels=3,
        num_classes=10,
        input_size=(16, 16),
        batch=2,
        backend="fake",
        threads=1,
        repeats=3,
        warmup=0,
        warmup_s=0.0,
        grid=(0.25, 0.5, 1.0),
        calib_plans=4,
        calib_seed=7,
        quantum=8,
    )  # fixed: the default follows the host's SIMD width
    return TableSetting(**(base | overrides))
