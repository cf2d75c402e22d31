"""Per-group pruning sensitivity, after Li et al. (ICLR 2017, Figure 2).

Each group is pruned *alone* to 10 %, 20 % ... 90 % of its channels removed (the filters chosen by
a criterion), optionally fine-tuned for a few seeded steps, and scored on the validation split.
A flat curve marks a group that tolerates pruning (Li et al. prune those harder); a steep one, a
group to leave wide. With a latency table each point also carries the latency it saves, so the
accuracy lost per millisecond saved can be compared across groups: what a latency-budgeted search
trades off, seen one group at a time.

The test split is never touched: this is a design aid, read before a search, not a final number.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from hwprune import train
from hwprune.data import DataBundle
from hwprune.errors import ArtifactError, ConfigError
from hwprune.io import atomic_write_text
from hwprune.pruning import FilterImportance, ModelGraph, PruningPlan, apply_plan

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Fractions of a group's channels removed, as in Li et al.'s Figure 2."""
TOLERANCE = 0.01
"""Validation accuracy a resilient group may lose (absolute, 0.01 = one point) ..."""
RESILIENT_AT = 0.5
"""... at every ratio up to this fraction removed."""


class LatencyPredictor(Protocol):
    def predict_ms(self, plan: PruningPlan) -> float: ...


@dataclass(frozen=True)
class SensitivityPoint:
    """One group pruned alone to one ratio; latency fields are None without a table."""

    group: str
    channels: int
    ratio: float  # fraction of the group's channels removed
    kept: int
    val_accuracy: float
    val_loss: float
    accuracy_drop: float  # the unpruned model's validation accuracy minus this one's
    predicted_ms: float | None = None
    latency_saved_ms: float | None = None

    @property
    def drop_per_ms_saved(self) -> float | None:
        """Accuracy lost per millisecond saved: the exchange rate a latency budget trades at."""
        if self.latency_saved_ms is None or self.latency_saved_ms <= 0:
            return None
        return self.accuracy_drop / self.latency_saved_ms


COLUMNS = (*(f.name for f in fields(SensitivityPoint)), "drop_per_ms_saved", "resilient")


def kept_at(channels: int, ratio: float) -> int:
    """Channels a group keeps with ``ratio`` of them removed (rounded half up, at least one kept)."""
    return max(1, channels - math.floor(ratio * channels + 0.5))


def check_ratios(ratios: Iterable[float]) -> tuple[float, ...]:
    found = tuple(sorted(set(float(r) for r in ratios)))
    if not found or not all(0 < r < 1 for r in found):
        raise ConfigError(f"ratios must be fractions removed in (0, 1), e.g. 0.1,0.5,0.9; got {list(ratios)}")
    return found


def sensitivity_points(
    model: nn.Module,
    graph: ModelGraph,
    data: DataBundle,
    importance: FilterImportance,
    base_accuracy: float,
    ratios: Iterable[float] = RATIOS,
    finetune_steps: int = 0,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    val_samples: int | None = None,
    predictor: LatencyPredictor | None = None,
    skip: Callable[[str, float], bool] = lambda group, ratio: False,
) -> Iterator[SensitivityPoint]:
    """Every (group, ratio) point not ``skip``-ped, in group order; ``model`` is left untouched.

    ``importance`` (:func:`hwprune.pruning.filter_importance` on ``model``) chooses the filters, once
    for all points. Two ratios that keep the same count in a small group share one evaluation.
    """
    full = PruningPlan.full("sensitivity", graph)  # these plans never leave this function
    full_ms = predictor.predict_ms(full) if predictor else None
    for g in graph.groups:
        scored: dict[int, tuple[float, float]] = {}
        for ratio in check_ratios(ratios):
            if skip(g.name, ratio):
                continue
            kept = kept_at(g.channels, ratio)
            plan = full.with_keep({g.name: kept})
            if kept not in scored:
                pruned, _ = apply_plan(model, plan, graph, importance)
                if finetune_steps:
                    train.fine_tune(pruned, data.train, finetune_steps, lr=lr, batch_size=batch_size, seed=seed)
                scored[kept] = train.score(pruned, data.val, max_samples=val_samples)
            accuracy, loss = scored[kept]
            predicted = predictor.predict_ms(plan) if predictor else None
            yield SensitivityPoint(
                g.name,
                g.channels,
                ratio,
                kept,
                accuracy,
                loss,
                base_accuracy - accuracy,
                predicted,
                None if predicted is None or full_ms is None else full_ms - predicted,
            )


def resilient_groups(
    points: Iterable[SensitivityPoint], tolerance: float = TOLERANCE, up_to: float = RESILIENT_AT
) -> list[str]:
    """Groups that lose at most ``tolerance`` accuracy at every measured ratio up to ``up_to`` removed."""
    drops: dict[str, list[float]] = {}
    for p in points:
        seen = drops.setdefault(p.group, [])
        if p.ratio <= up_to + 1e-9:
            seen.append(p.accuracy_drop)
    return [g for g, seen in drops.items() if seen and max(seen) <= tolerance]


# ---- CSV ------------------------------------------------------------------------------------------
def row_of(point: SensitivityPoint, resilient: bool | None = None) -> dict[str, Any]:
    row: dict[str, Any] = asdict(point) | {"drop_per_ms_saved": point.drop_per_ms_saved}
    row["resilient"] = "" if resilient is None else int(resilient)
    return {k: "" if v is None else v for k, v in row.items()}


def append_point(path: Path, point: SensitivityPoint) -> None:
    """One row, flushed: an interrupted run keeps every point it finished."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row_of(point))


def read_points(path: Path) -> list[SensitivityPoint]:
    """The finished rows of a CSV written here (a row cut short by a crash is dropped)."""
    if not path.exists():
        return []
    points = []
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if any(row.get(c) in (None, "") for c in ("group", "channels", "ratio", "kept", "val_loss")):
                    continue
                points.append(
                    SensitivityPoint(
                        row["group"],
                        int(row["channels"]),
                        float(row["ratio"]),
                        int(row["kept"]),
                        float(row["val_accuracy"]),
                        float(row["val_loss"]),
                        float(row["accuracy_drop"]),
                        _float_or_none(row.get("predicted_ms")),
                        _float_or_none(row.get("latency_saved_ms")),
                    )
                )
    except (KeyError, ValueError, csv.Error) as exc:
        raise ArtifactError(f"{path} is not a sensitivity CSV written by hwprune ({exc}); pick another --out") from None
    return points


def _float_or_none(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def write_points(path: Path, points: list[SensitivityPoint], resilient: Iterable[str] | None = None) -> None:
    """The whole CSV, each row marked resilient or not (known once every point is in; None: unmarked)."""
    marked = None if resilient is None else set(resilient)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(row_of(p, None if marked is None else p.group in marked) for p in points)
    atomic_write_text(path, text.getvalue())


# ---- figure ---------------------------------------------------------------------------------------
def plot_sensitivity(
    points: list[SensitivityPoint], base_accuracy: float, resilient: Iterable[str], path: Path, title: str
) -> Path:
    """Li et al.'s Figure 2: validation accuracy against % of filters pruned away, one line per group.

    Resilient groups are drawn solid and starred in the legend, the others dashed. With latency in
    the points, a second panel plots accuracy lost against predicted milliseconds saved.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marked = set(resilient)
    groups = list(dict.fromkeys(p.group for p in points))
    latency = any(p.latency_saved_ms is not None for p in points)
    fig, axes = plt.subplots(1, 2 if latency else 1, figsize=(14 if latency else 8, 5.5), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    for i, group in enumerate(groups):
        mine = sorted((p for p in points if p.group == group), key=lambda p: p.ratio)
        style = {"color": cmap(i % cmap.N), "linestyle": "-" if group in marked else "--", "marker": "o", "ms": 3}
        label = f"{group} ({mine[0].channels})" + (" *" if group in marked else "")
        axes[0][0].plot([100 * p.ratio for p in mine], [p.val_accuracy for p in mine], label=label, **style)
        if latency:
            timed = [p for p in mine if p.latency_saved_ms is not None]
            axes[0][1].plot([p.latency_saved_ms for p in timed], [p.accuracy_drop for p in timed], **style)
    ax = axes[0][0]
    ax.axhline(base_accuracy, color="black", linewidth=0.8, label="unpruned")
    ax.set_xlabel("filters pruned away (%)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if latency:
        axes[0][1].set_xlabel("predicted latency saved (ms)")
        axes[0][1].set_ylabel("validation accuracy lost")
        axes[0][1].grid(alpha=0.3)
    fig.legend(
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        ncol=1 if len(groups) <= 25 else 2,
        title="group (channels); * resilient",
        title_fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
