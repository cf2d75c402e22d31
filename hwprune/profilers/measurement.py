"""One latency measurement: the raw samples are the record, the statistics are views of them.

Keeping the samples (not only a median) lets a latency table be re-summarised later, lets a
reader see a bimodal run for what it is, and makes the summary impossible to drift from its
data: every statistic is recomputed from ``samples_ms`` on demand. The unit is milliseconds
everywhere, in memory and in JSON.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from hwprune.errors import ArtifactError


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so figures match numpy."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ratio(num: float, den: float) -> float:
    """A spread relative to a centre; a zero centre with a non-zero spread is infinitely unstable."""
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


@dataclass
class Measurement:
    """Timed samples of one workload on one device and backend, in milliseconds."""

    samples_ms: list[float]
    #: medians of every run the profiler timed for this measurement, the kept one included (best-of-N)
    run_medians_ms: list[float] | None = None

    def __post_init__(self) -> None:
        # Validated here so a table loaded from disk cannot smuggle in NaN or negative times.
        if not self.samples_ms:
            raise ValueError("a Measurement needs at least one sample")
        values = [float(s) for s in self.samples_ms]
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError("latency samples must be finite and non-negative milliseconds")
        self.samples_ms = values

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def _sorted(self) -> list[float]:
        return sorted(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return _percentile(self._sorted, 0.5)

    @property
    def p25_ms(self) -> float:
        return _percentile(self._sorted, 0.25)

    @property
    def p75_ms(self) -> float:
        return _percentile(self._sorted, 0.75)

    @property
    def p90_ms(self) -> float:
        return _percentile(self._sorted, 0.90)

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def cv(self) -> float:
        """Population std / mean (ddof=0, as numpy.std): the spread of *these* samples, not an estimate."""
        return _ratio(statistics.pstdev(self.samples_ms), self.mean_ms)

    @property
    def relative_iqr(self) -> float:
        return _ratio(self.iqr_ms, self.median_ms)

    def instability(self) -> float:
        """The worse of the two spread ratios; the protocol flags a run when either is too large."""
        return max(self.relative_iqr, self.cv)

    def is_unstable(self, threshold: float) -> bool:
        return self.instability() > threshold

    def summary(self) -> dict[str, float]:
        return {
            "n": self.n,
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "cv": self.cv,
            "relative_iqr": self.relative_iqr,
        }

    def to_dict(self) -> dict[str, Any]:
        """Samples plus a summary; the summary is for human readers and is recomputed on load."""
        out: dict[str, Any] = {"unit": "ms", "samples_ms": list(self.samples_ms), "summary": self.summary()}
        if self.run_medians_ms is not None:
            out["run_medians_ms"] = list(self.run_medians_ms)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Measurement:
        try:
            if data.get("unit", "ms") != "ms":
                raise ValueError(f"unit {data['unit']!r} is not 'ms'")
            runs = data.get("run_medians_ms")
            return cls(samples_ms=list(data["samples_ms"]), run_medians_ms=None if runs is None else list(runs))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"latency measurement is malformed ({exc}); re-profile with `hwprune profile`"
            ) from None

    def scaled(self, factor: float) -> Measurement:
        """The same run read at another speed of the machine (every sample and run median times ``factor``)."""
        runs = None if self.run_medians_ms is None else [r * factor for r in self.run_medians_ms]
        return Measurement([s * factor for s in self.samples_ms], runs)

    def __repr__(self) -> str:
        return f"Measurement(median={self.median_ms:.4f} ms, iqr={self.iqr_ms:.4f} ms, n={self.n})"


def keep_faster(old: Measurement | None, new: Measurement) -> Measurement:
    """Of two runs of the same workload, the one with the lower median.

    On a shared or virtualised host, slow periods can last longer than a whole run, so a median
    cannot remove them (docs/latency.md, "The noise floor"); interference only ever adds time, so
    the faster of runs taken minutes apart is the better estimate of the device's own latency.
    """
    return new if old is None or new.median_ms < old.median_ms else old
