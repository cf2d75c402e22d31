"""Profilers: properties of measurements (they grow with work, keep samples, flag noise), never milliseconds."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwprune.errors import ArtifactError, BackendUnavailable, ConfigError
from hwprune.profilers import (
    BlockSpec,
    Measurement,
    Profiler,
    UnstableMeasurementWarning,
    available_profilers,
    device_key,
    get_profiler,
    input_shape,
    onnx_block,
    register_profiler,
    torch_block,
)

# Short runs: the tests check behaviour, and the machine is shared. One thread, because on a
# loaded box every multi-threaded op waits on a descheduled worker and is quantised to the
# scheduler tick (an 8-channel conv then "takes" as long as a 128-channel one).
FAST = {"threads": 1, "warmup": 2, "warmup_s": 0.0, "repeats": 5, "runs": 1}
CPU_BACKENDS = ["torch-cpu", "onnxruntime"]


def quiet_profiler(name: str, **overrides: object) -> Profiler:
    return get_profiler(name, **(FAST | overrides))


class PlantedProfiler(Profiler):
    """A profiler whose clock replays planted samples, to test the protocol without real timing."""

    name = "planted"

    def __init__(self, samples: list[float], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._planted = iter(samples)
        self.calls = 0

    def _sample_ms(self, run: object) -> float:
        self.calls += 1
        return next(self._planted)

    def _workload(self) -> None:
        self.calls += 1

    def measure_block(self, spec: BlockSpec) -> Measurement:
        return self._measure(self._workload, str(spec))

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        return self._measure(self._workload, "model")

    def fingerprint(self) -> dict:
        return {"backend": self.name}


SPEC = BlockSpec("conv", 8, 8, kernel=3, padding=1, in_hw=(8, 8))


# -- Measurement ------------------------------------------------------------------------------


def test_measurement_statistics_on_known_samples() -> None:
    samples = [float(v) for v in range(1, 11)]
    m = Measurement(samples)
    assert m.median_ms == pytest.approx(np.percentile(samples, 50)) == pytest.approx(5.5)
    assert m.iqr_ms == pytest.approx(np.percentile(samples, 75) - np.percentile(samples, 25)) == pytest.approx(4.5)
    assert m.p90_ms == pytest.approx(np.percentile(samples, 90)) == pytest.approx(9.1)
    assert m.cv == pytest.approx(np.std(samples) / np.mean(samples))
    assert m.relative_iqr == pytest.approx(4.5 / 5.5)
    assert m.samples_ms == samples


def test_measurement_constant_and_single_samples() -> None:
    assert Measurement([2.0] * 7).cv == 0 and Measurement([2.0] * 7).iqr_ms == 0
    single = Measurement([3.0])
    assert single.median_ms == single.p90_ms == 3.0 and single.relative_iqr == 0


def test_measurement_round_trip_and_rejects_garbage() -> None:
    m = Measurement([1.0, 2.5, 2.0, 9.0])
    data = m.to_dict()
    assert data["samples_ms"] == [1.0, 2.5, 2.0, 9.0]
    assert data["summary"]["median_ms"] == pytest.approx(m.median_ms)
    assert Measurement.from_dict(data) == m
    for bad in [{}, {"samples_ms": []}, {"samples_ms": ["x"]}, {"samples_ms": [1.0], "unit": "s"}, [1, 2]]:
        with pytest.raises(ArtifactError):
            Measurement.from_dict(bad)
    with pytest.raises(ValueError):
        Measurement([1.0, float("nan")])


# -- the protocol -----------------------------------------------------------------------------


def test_the_quietest_run_is_kept_and_every_run_median_recorded() -> None:
    runs = [3.0] * 5 + [2.0, 2.0, 2.1, 2.0, 2.0] + [2.5] * 5
    profiler = PlantedProfiler(runs, warmup=0, warmup_s=0.0, repeats=5, runs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnstableMeasurementWarning)
        m = profiler.measure_block(SPEC)
    assert m.samples_ms == [2.0, 2.0, 2.1, 2.0, 2.0]
    assert m.run_medians_ms == [3.0, 2.0, 2.5]
    assert Measurement.from_dict(m.to_dict()) == m


def test_unstable_kept_run_warns_and_keeps_the_run() -> None:
    noisy = [1.0, 1.0, 1.0, 1.0, 9.0] * 2
    profiler = PlantedProfiler(noisy, warmup=0, warmup_s=0.0, repeats=10, runs=1)
    with pytest.warns(UnstableMeasurementWarning, match="quietest of 1 run"):
        m = profiler.measure_block(SPEC)
    assert m.samples_ms == noisy and m.run_medians_ms is None


def test_constant_samples_do_not_warn() -> None:
    profiler = PlantedProfiler([4.0] * 50, warmup=0, warmup_s=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnstableMeasurementWarning)
        m = profiler.measure_block(SPEC)
    assert m.samples_ms == [4.0] * 10 and m.run_medians_ms == [4.0] * 5


def test_warm_up_runs_by_count_and_by_time() -> None:
    profiler = PlantedProfiler([1.0] * 5, warmup=3, warmup_s=0.0, repeats=5, runs=1)
    profiler.measure_block(SPEC)
    assert profiler.calls == 3 + 5
    profiler = PlantedProfiler([1.0] * 5, warmup=0, warmup_s=0.05, repeats=5, runs=1)
    profiler.measure_block(SPEC)
    assert profiler.calls > 5 + 10  # 50 ms of an empty workload is far more than 10 runs


def test_bad_settings_are_config_errors() -> None:
    for bad in [{"repeats": 1}, {"runs": 0}, {"threads": 0}, {"warmup": -1}, {"unstable_threshold": 0}]:
        with pytest.raises(ConfigError):
            PlantedProfiler([], **bad)


# -- registry and availability ----------------------------------------------------------------


def test_registry_lists_backends_and_refuses_duplicates() -> None:
    assert {"torch-cpu", "torch-cuda", "onnxruntime", "tensorrt"} <= set(available_profilers())
    assert {"torch-cpu", "onnxruntime"} <= set(available_profilers(usable_only=True))
    with pytest.raises(ValueError, match="already registered"):
        register_profiler(type("Again", (PlantedProfiler,), {"name": "torch-cpu"}))


def test_unknown_profiler_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean onnxruntime"):
        get_profiler("onnxrutime")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_torch_cuda_without_gpu_names_the_alternative() -> None:
    with pytest.raises(BackendUnavailable, match="no CUDA device.*torch-cpu or onnxruntime") as info:
        get_profiler("torch-cuda")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_package_names_the_install_line() -> None:
    with pytest.raises(BackendUnavailable, match=r'pip install "hwprune\[tensorrt\]"') as info:
        get_profiler("tensorrt")
    assert "\n" not in str(info.value)


# -- blocks -----------------------------------------------------------------------------------


def test_block_spec_validation() -> None:
    with pytest.raises(ConfigError):
        BlockSpec("conv", 8, 16, kernel=3, depthwise=True)
    with pytest.raises(ConfigError):
        BlockSpec("pool", 8, 8)
    with pytest.raises(ConfigError):
        BlockSpec("conv", 8, 8, kernel=5, in_hw=(2, 2))
    spec = BlockSpec("conv", 8, 16, kernel=3, stride=2, padding=1, in_hw=(9, 9), batch=4)
    assert input_shape(spec) == (4, 8, 9, 9) and spec.out_hw == (5, 5)
    assert BlockSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "spec",
    [
        BlockSpec("conv", 6, 10, kernel=3, stride=2, padding=1, in_hw=(9, 11), batch=2),
        BlockSpec("conv", 12, 12, kernel=3, padding=1, depthwise=True, in_hw=(8, 8), batch=3),
        BlockSpec("conv", 7, 5, kernel=1, in_hw=(4, 4)),
        BlockSpec("linear", 20, 10, batch=4),
    ],
    ids=str,
)
def test_onnx_block_is_valid_and_matches_torch_with_bn_folded(spec: BlockSpec) -> None:
    module = torch_block(spec, seed=3)
    model_bytes = onnx_block(spec, module)
    onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    x = torch.randn(input_shape(spec))
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        want = module(x)  # Conv + BatchNorm (eval) + ReLU, unfolded
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
    if spec.kind == "conv":
        assert module[1].running_mean.abs().sum() > 0  # the BN is not an identity: folding was exercised


# -- real backends ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_latency_grows_with_channels_and_keeps_raw_samples(backend: str) -> None:
    profiler = quiet_profiler(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableMeasurementWarning)  # a shared CI box is noisy
        small = profiler.measure_block(BlockSpec("conv", 8, 8, kernel=3, padding=1, in_hw=(32, 32), batch=8))
        large = profiler.measure_block(BlockSpec("conv", 128, 128, kernel=3, padding=1, in_hw=(32, 32), batch=8))
    assert len(small.samples_ms) == len(large.samples_ms) == FAST["repeats"]
    assert all(s > 0 for s in small.samples_ms + large.samples_ms)
    # 256x the multiply-adds; even with overheads and noise it must be clearly slower.
    assert large.median_ms > 4 * small.median_ms


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_measure_model_end_to_end_leaves_the_model_and_threads_alone(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _tiny_cnn().train()
    threads_before = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableMeasurementWarning)
        m = quiet_profiler(backend).measure_model(model, (2, 3, 16, 16))
    assert len(m.samples_ms) == FAST["repeats"] and m.median_ms > 0
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert torch.get_num_threads() == threads_before
    assert capsys.readouterr().out == ""  # the ONNX export stays quiet


def test_a_deployed_model_is_exported_once_however_often_it_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job times each model in several interleaved rounds; the ONNX export (seconds) must not repeat."""
    from hwprune.profilers import onnx_backend

    exports: list[tuple[int, ...]] = []
    real_export = onnx_backend.export_onnx
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda m, shape: exports.append(shape) or real_export(m, shape))
    timed = quiet_profiler("onnxruntime").deploy(_tiny_cnn(), (2, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableMeasurementWarning)
        first, second = timed(), timed()
    assert exports == [(2, 3, 16, 16)]
    assert first.samples_ms != second.samples_ms and len(second.samples_ms) == FAST["repeats"]


def test_fingerprint_and_device_key() -> None:
    fp = quiet_profiler("onnxruntime", threads=2).fingerprint()
    for field in ("cpu_model", "logical_cores", "threads", "os", "python", "torch", "runtime_version"):
        assert field in fp
    assert fp["threads"] == 2 and fp["runtime"] == "onnxruntime" and fp["runtime_version"] == ort.__version__
    json.dumps(fp)  # goes into a latency table as is
    key = device_key(fp)
    assert "onnxruntime" in key and "threads=2" in key and fp["cpu_model"] in key
    assert device_key(fp | {"python": "0.0", "torch": "0.0"}) == key  # versions do not make another device
    assert device_key(fp | {"threads": 4}) != key
    assert fp["cpu_isa"] and device_key(fp | {"cpu_isa": "AVX2" if fp["cpu_isa"] != "AVX2" else "AVX512"}) != key
    assert device_key(quiet_profiler("torch-cpu", threads=2).fingerprint()) != key


# -- GPU backends (skipped here; run where the hardware is) -----------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_measures_a_block() -> None:
    m = quiet_profiler("torch-cuda").measure_block(BlockSpec("conv", 64, 64, kernel=3, padding=1, in_hw=(32, 32)))
    assert len(m.samples_ms) == FAST["repeats"] and m.median_ms > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_measures_a_block_and_a_model_and_builds_a_deployed_model_once() -> None:
    pytest.importorskip("tensorrt")
    profiler = quiet_profiler("tensorrt")
    m = profiler.measure_block(BlockSpec("conv", 64, 64, kernel=3, padding=1, in_hw=(32, 32)))
    assert len(m.samples_ms) == FAST["repeats"] and m.median_ms > 0
    assert profiler.measure_model(_tiny_cnn(), (1, 3, 16, 16)).median_ms > 0
    assert profiler.fingerprint()["gpu_name"]
    builds, build = [], profiler._build_serialized
    profiler._build_serialized = lambda model_bytes: builds.append(1) or build(model_bytes)
    deployed = profiler.deploy(_tiny_cnn(), (1, 3, 16, 16))  # a judged model is timed in several rounds
    assert deployed().median_ms > 0 and deployed().median_ms > 0 and len(builds) == 1
