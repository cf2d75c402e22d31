"""The Profiler contract, the one timing protocol every backend shares, and the backend registry.

Backends differ only in how they build a runnable workload and how they read a clock (wall
clock on CPU, CUDA events on a GPU); warm-up, sampling and the stability check live here once,
so a number printed by any backend means the same thing.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from torch import nn

from hwprune.errors import BackendUnavailable, ConfigError
from hwprune.profilers.blocks import BlockSpec
from hwprune.profilers.fingerprint import device_key
from hwprune.profilers.measurement import Measurement, keep_faster

Workload = Callable[[], object]


class UnstableMeasurementWarning(UserWarning):
    """Samples spread more than the threshold allows: the machine was busy or throttling."""


def counting_unstable(measure: Callable[..., Measurement], *args: Any) -> tuple[Measurement, bool]:
    """``measure(*args)`` with its unstable-timing warning caught: (measurement, whether it was unstable).

    Loops over hundreds of blocks report a count instead; one warning line per block would bury
    the progress bar and the job's own lines.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnstableMeasurementWarning)
        m = measure(*args)
    return m, any(issubclass(c.category, UnstableMeasurementWarning) for c in caught)


class Profiler(ABC):
    """Times workloads on one device + backend under the protocol in DESIGN.md."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        threads: int | None = None,
        warmup: int = 10,
        warmup_s: float = 0.2,
        repeats: int = 10,
        runs: int = 5,
        unstable_threshold: float = 0.15,
    ) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if warmup < 0 or not 0 <= warmup_s < math.inf:
            raise ConfigError(f"warm-up must be >= 0 runs and >= 0 s, got {warmup} runs / {warmup_s} s")
        if repeats < 3:
            raise ConfigError(f"repeats must be >= 3 for a median and IQR to mean anything, got {repeats}")
        if runs < 1:
            raise ConfigError(f"runs must be >= 1, got {runs}")
        if not unstable_threshold > 0:
            raise ConfigError(f"unstable_threshold must be > 0, got {unstable_threshold}")
        self.check_available()
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self.warmup = warmup
        self.warmup_s = warmup_s
        self.repeats = repeats
        self.runs = runs
        self.unstable_threshold = unstable_threshold

    @classmethod
    def check_available(cls) -> None:
        """Raise BackendUnavailable naming the fix when the package or hardware is missing."""
        return None

    @classmethod
    def is_available(cls) -> bool:
        try:
            cls.check_available()
        except BackendUnavailable:
            return False
        return True

    @abstractmethod
    def measure_block(self, spec: BlockSpec) -> Measurement:
        """One layer as deployed on this backend (e.g. BN folded where the runtime folds it)."""

    @abstractmethod
    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """The whole model end to end, as deployed on this backend, at a fixed input shape."""

    def deploy(self, model: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], Measurement]:
        """``model`` made ready to be measured again and again (each call is one measurement; leave it unchanged).

        A job times the same models in several interleaved rounds; a backend that converts a model
        before running it (an ONNX export takes seconds) does that once here, not once per round.
        The default converts nothing.
        """
        return functools.partial(self.measure_model, model, tuple(input_shape))

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Device, runtime and settings this profiler measures on (see fingerprint.py)."""

    def device_key(self) -> str:
        return device_key(self.fingerprint())

    # -- the timing protocol ---------------------------------------------------------------

    def _sample_ms(self, run: Workload) -> float:
        """One timed run. perf_counter_ns: monotonic and high resolution, unlike time.time()."""
        start = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - start) / 1e6

    def _sync(self) -> None:
        """Wait for queued work; a no-op on synchronous backends, a device sync on GPUs."""
        return None

    def _warm_up(self, run: Workload) -> None:
        """By count AND by time: caches, allocators and clock governors need both to settle."""
        deadline = time.perf_counter_ns() + int(self.warmup_s * 1e9)
        done = 0
        while done < self.warmup or time.perf_counter_ns() < deadline:
            run()
            self._sync()
            done += 1

    @contextmanager
    def warm_by_count(self) -> Iterator[None]:
        """Inside, a measurement warms up by count alone (``warmup`` runs), not for ``warmup_s`` too: for
        timings that follow other timings, when caches and clocks are already in use and only the new
        model's own first runs are slow."""
        previous, self.warmup_s = self.warmup_s, 0.0
        try:
            yield
        finally:
            self.warmup_s = previous

    def _collect(self, run: Workload) -> Measurement:
        return Measurement([self._sample_ms(run) for _ in range(self.repeats)])

    def _measure(self, run: Workload, what: str) -> Measurement:
        """Warm up, then time ``runs`` back-to-back runs of ``repeats`` samples; keep the quietest run.

        "Quietest" is the run with the lowest median (the best-of-N rule of ``timeit``). On a shared
        or virtualised CPU, interference comes in spells of about a second that slow every sample
        in them, so one long run's median cannot remove it; the best of several short runs about
        halves the noise particular to one measurement (docs/latency.md, "The noise floor"). The
        kept run's samples are the record; the other runs' medians are kept beside them. A kept
        run that is still unstable warns.
        """
        self._warm_up(run)
        runs = [self._collect(run) for _ in range(self.runs)]
        kept = functools.reduce(keep_faster, runs)
        kept.run_medians_ms = [m.median_ms for m in runs] if self.runs > 1 else None
        if kept.is_unstable(self.unstable_threshold):
            warnings.warn(
                f"{self.name}: unstable timing of {what} (relative IQR {kept.relative_iqr:.2f}, CV {kept.cv:.2f} "
                f"> {self.unstable_threshold} in the quietest of {self.runs} run(s)). "
                "Close other work on the machine or raise --runs.",
                UnstableMeasurementWarning,
                stacklevel=4,
            )
        return kept


# -- registry -------------------------------------------------------------------------------

P = TypeVar("P", bound=type[Profiler])
_REGISTRY: dict[str, type[Profiler]] = {}


def register_profiler(cls: P) -> P:
    """Class decorator; a second backend under the same name is a programming error, so it raises."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a class attribute `name` to be registered")
    if cls.name in _REGISTRY:
        raise ValueError(f"profiler '{cls.name}' is already registered by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def available_profilers(usable_only: bool = False) -> list[str]:
    """Registered backend names; with ``usable_only`` just those whose package and hardware are here."""
    return sorted(name for name, cls in _REGISTRY.items() if not usable_only or cls.is_available())


def get_profiler(name: str, **kwargs: Any) -> Profiler:
    """Build a backend by name; raises ConfigError (with a suggestion) or BackendUnavailable."""
    if name not in _REGISTRY:
        names = available_profilers()
        close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"choose one of {', '.join(names)}"
        raise ConfigError(f"unknown profiler '{name}': {hint}")
    return _REGISTRY[name](**kwargs)
