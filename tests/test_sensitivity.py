"""`hwprune sensitivity`: one row per (group, ratio), a PNG of the curves, latency from a table, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import FakeProfiler, setting

from hwprune.checkpoint import save_checkpoint
from hwprune.cli import main
from hwprune.latency import profile_model
from hwprune.models import ModelSpec
from hwprune.pruning import ModelGraph
from hwprune.sensitivity import SensitivityPoint, kept_at, resilient_groups

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = ModelSpec("resnet20", 1, 10, (32, 32))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "resnet20"
    save_checkpoint(out, SPEC.build(), SPEC, {"data": "synthetic", "seed": 0})
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _run(checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["sensitivity", "--checkpoint", str(checkpoint), "--out", str(out), "--val-samples", "32", *extra])


def test_writes_one_row_per_group_and_ratio_and_a_png(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sens"
    assert _run(checkpoint, out, "--ratios", "0.25,0.5", "--criterion", "l1") == 0
    graph = ModelGraph(SPEC.build(), (1, 32, 32))
    rows = _rows(out / "sensitivity.csv")
    assert [(r["group"], float(r["ratio"])) for r in rows] == [(g.name, r) for g in graph.groups for r in (0.25, 0.5)]
    for r in rows:
        assert int(r["kept"]) == kept_at(int(r["channels"]), float(r["ratio"]))
        assert 0 <= float(r["val_accuracy"]) <= 1 and r["resilient"] in ("0", "1")
        assert r["latency_saved_ms"] == ""  # no table given
    png = (out / "sensitivity.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    import matplotlib.image

    assert matplotlib.image.imread(out / "sensitivity.png").shape[0] > 100
    state = json.loads((out / "sensitivity.json").read_text())
    assert state["settings"]["criterion"] == "l1" and "val_accuracy" in state["baseline"]
    assert set(state["resilient"]) == {r["group"] for r in rows if r["resilient"] == "1"}
    assert "resilient groups" in capsys.readouterr().out


def test_a_table_adds_the_latency_saved(checkpoint: Path, tmp_path: Path) -> None:
    lut = tmp_path / "lut.json"
    profile_model(
        setting(in_channels=1, input_size=(32, 32)),
        lut,
        progress=False,
        profiler=FakeProfiler(repeats=3),
        model=SPEC.build(),
    )
    out = tmp_path / "sens"
    assert _run(checkpoint, out, "--ratios", "0.5,0.9", "--lut", str(lut)) == 0
    rows = _rows(out / "sensitivity.csv")
    saved = [float(r["latency_saved_ms"]) for r in rows]
    assert all(s > 0 for s in saved)
    for r in rows:  # more removed, more saved, within a group
        if float(r["ratio"]) == 0.9:
            half = next(x for x in rows if x["group"] == r["group"] and float(x["ratio"]) == 0.5)
            assert float(r["latency_saved_ms"]) >= float(half["latency_saved_ms"])
        per_ms = r["drop_per_ms_saved"]
        assert per_ms == "" or float(per_ms) == pytest.approx(float(r["accuracy_drop"]) / float(r["latency_saved_ms"]))
    assert (out / "sensitivity.png").read_bytes().startswith(PNG_MAGIC)


def test_an_interrupted_run_continues_and_other_settings_are_refused(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sens"
    assert _run(checkpoint, out, "--ratios", "0.5", "--criterion", "random") == 0
    full = _rows(out / "sensitivity.csv")
    # Interrupted after 3 points, the last one cut short mid-write.
    lines = (out / "sensitivity.csv").read_text().splitlines()
    (out / "sensitivity.csv").write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    capsys.readouterr()
    assert _run(checkpoint, out, "--ratios", "0.5", "--criterion", "random") == 0
    assert "3 of" in capsys.readouterr().out
    again = _rows(out / "sensitivity.csv")
    assert [(r["group"], r["val_accuracy"]) for r in again] == [(r["group"], r["val_accuracy"]) for r in full]
    assert _run(checkpoint, out, "--ratios", "0.5", "--criterion", "l2") == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1 and "other settings (criterion)" in err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--criterion", "l3"], "unknown criterion 'l3': choose one of l2, l1, fpgm, taylor, random"),
        (["--ratios", "0.5,1.5"], "ratios must be fractions removed in (0, 1)"),
        (["--ratios", "half"], "--ratios expects comma-separated fractions"),
    ],
)
def test_bad_options_are_one_line_without_output(
    checkpoint: Path, tmp_path: Path, capsys, args: list[str], match: str
) -> None:
    out = tmp_path / "sens"
    assert _run(checkpoint, out, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_resilient_groups_lose_little_up_to_the_ratio() -> None:
    def point(group: str, ratio: float, drop: float) -> SensitivityPoint:
        return SensitivityPoint(group, 16, ratio, kept_at(16, ratio), 0.9 - drop, 0.3, drop)

    points = [
        point("flat", 0.3, 0.0),
        point("flat", 0.5, 0.01),
        point("flat", 0.9, 0.4),  # past the ratio: does not count
        point("steep", 0.3, 0.001),
        point("steep", 0.5, 0.05),
        point("late", 0.7, 0.0),  # nothing measured up to the ratio: not shown resilient
    ]
    assert resilient_groups(points, tolerance=0.01, up_to=0.5) == ["flat"]
    assert resilient_groups(points, tolerance=0.1, up_to=0.5) == ["flat", "steep"]


@pytest.mark.parametrize(
    ("channels", "ratio", "kept"), [(16, 0.1, 14), (16, 0.5, 8), (16, 0.9, 2), (4, 0.9, 1), (3, 0.5, 1)]
)
def test_kept_at_rounds_the_removed_count_half_up(channels: int, ratio: float, kept: int) -> None:
    assert kept_at(channels, ratio) == kept
