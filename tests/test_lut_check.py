"""The `profile` and `lut-check` verbs end to end on a tiny real setting (resnet20 at 16x16, coarse grid).

These time real blocks with torch-cpu, but with 3 repeats, no warm-up time and one thread, so
they check the plumbing and the report's fields, never the accuracy (that is benchmarks/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwprune.checkpoint import save_checkpoint
from hwprune.cli import main
from hwprune.latency import LatencyTable
from hwprune.models import ModelSpec

TINY = [
    "--input-size",
    "16x16",
    "--batch",
    "4",
    "--threads",
    "1",
    "--repeats",
    "15",
    "--runs",
    "1",
    "--warmup",
    "1",
    "--warmup-s",
    "0",
    "--grid",
    "0.25,0.5,1",
    "--quantum",
    "1",
    "--rounds",
    "1",
    "--calib-plans",
    "3",
]


@pytest.fixture(scope="module")
def lut(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "lut.json"
    assert main(["profile", "--model", "resnet20", *TINY, "--out", str(out), "--no-progress"]) == 0
    return out


def test_profile_writes_a_valid_complete_table(lut: Path) -> None:
    table = LatencyTable.load(lut)
    assert table.is_complete() and table.backend == "torch-cpu"
    assert table.settings["batch"] == 4 and table.settings["input_size"] == [16, 16]
    assert table.fingerprint["threads"] == 1
    assert table.calibration["fit"]["coef"]["lut_sum_ms"] > 0 and len(table.calibration["plans"]) == 3


def test_profile_refuses_to_clobber_and_resume_of_a_complete_table_is_a_no_op(lut: Path, capsys) -> None:
    before = lut.read_text()
    assert main(["profile", "--model", "resnet20", *TINY, "--out", str(lut), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["profile", "--model", "resnet20", *TINY, "--out", str(lut), "--resume", "--no-progress"]) == 0
    assert json.loads(lut.read_text())["sha256"] == json.loads(before)["sha256"]


def test_lut_check_end_to_end(lut: Path, tmp_path: Path, capsys) -> None:
    report_path = tmp_path / "check.json"
    rc = main(
        [
            "lut-check",
            "--model",
            "resnet20",
            "--lut",
            str(lut),
            "--plans",
            "3",
            "--repeats",
            "3",
            "--out",
            str(report_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calibrated" in printed and "lut-sum" in printed and "flops" in printed
    report = json.loads(report_path.read_text())
    assert report["plans"] == 3 and len(report["rows"]) == 3
    assert set(report["predictors"]) == {"calibrated", "lut-sum", "flops"}
    for stats in report["predictors"].values():
        assert {"median_abs_pct", "p95_abs_pct", "within_10pct"} <= set(stats)
        assert 0.0 <= stats["within_10pct"] <= 1.0 and stats["p95_abs_pct"] >= stats["median_abs_pct"] >= 0
    calibration_keeps = [r["keep"] for r in LatencyTable.load(lut).calibration["plans"]]
    assert all(row["keep"] not in calibration_keeps for row in report["rows"])
    assert all(row["measured_ms"] > 0 for row in report["rows"])
    assert report["protocol"] == "paired" and report["unpruned_alongside"]["readings"] == 3  # one per plan and round
    assert report["unpruned_alongside"]["reference_ms"] == LatencyTable.load(lut).calibration["reference_ms"]
    assert "paired:" in printed


def test_lut_check_round_to_measures_aligned_plans(lut: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "check.json"
    assert (
        main(
            [
                "lut-check",
                "--lut",
                str(lut),
                "--plans",
                "2",
                "--repeats",
                "3",  # the table names its model
                "--round-to",
                "4",
                "--out",
                str(report_path),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads(report_path.read_text())
    assert report["round_to"] == 4
    assert all(k % 4 == 0 for row in report["rows"] for k in row["keep"].values())


def test_lut_check_refuses_a_foreign_table(lut: Path, tmp_path: Path, capsys) -> None:
    data = LatencyTable.load(lut)
    data.fingerprint = data.fingerprint | {"cpu_model": "Some Other CPU"}
    foreign = tmp_path / "foreign.json"
    data.save(foreign)
    args = [
        "lut-check",
        "--model",
        "resnet20",
        "--lut",
        str(foreign),
        "--plans",
        "1",
        "--repeats",
        "3",
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--allow-foreign-table" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "foreign.check.json").exists()
    assert main([*args, "--allow-foreign-table"]) == 0


def test_lut_check_refuses_a_table_of_another_model(lut: Path, tmp_path: Path, capsys) -> None:
    assert main(["lut-check", "--model", "resnet56", "--lut", str(lut), "--plans", "1", "--no-progress"]) == 2
    assert "resnet20" in capsys.readouterr().err
    spec = ModelSpec("mobilenetv2", 3, 10, (16, 16))
    save_checkpoint(tmp_path / "ck", spec.build(), spec, {"data": "synthetic", "seed": 0})
    assert (
        main(["lut-check", "--checkpoint", str(tmp_path / "ck"), "--lut", str(lut), "--plans", "1", "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert "'resnet20', not 'mobilenetv2'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--backend", "torch-gpu"], "unknown backend"),
        (["--input-size", "32by32"], "--input-size"),
        (["--model", "resnet21"], "unknown model"),
        (["--batch", "0"], "--batch"),
        (["--grid", "0.5,0.9"], "--grid"),
        (["--backend", "tensorrt"], "tensorrt"),
    ],
)
def test_profile_bad_input_is_one_line_and_no_file(tmp_path: Path, capsys, flags: list[str], needle: str) -> None:
    out = tmp_path / "lut.json"
    args = ["profile", "--model", "resnet20", *TINY, "--out", str(out), "--no-progress", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_profile_from_a_checkpoint_uses_its_spec(tmp_path: Path) -> None:
    from hwprune.checkpoint import save_checkpoint
    from hwprune.models import ModelSpec

    spec = ModelSpec("resnet20", 1, 7, (12, 12))
    save_checkpoint(tmp_path / "ckpt", spec.build(), spec, {})
    out = tmp_path / "lut.json"
    flags = [
        "--batch",
        "2",
        "--threads",
        "1",
        "--repeats",
        "3",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--warmup-s",
        "0",
        "--grid",
        "1",
        "--calib-plans",
        "0",
    ]
    assert main(["profile", "--checkpoint", str(tmp_path / "ckpt"), *flags, "--out", str(out), "--no-progress"]) == 0
    s = LatencyTable.load(out).settings
    assert (s["model"], s["in_channels"], s["num_classes"], s["input_size"]) == ("resnet20", 1, 7, [12, 12])


def test_recalibrate_keeps_blocks_and_remeasures_plans(lut: Path, tmp_path: Path) -> None:
    copy = tmp_path / "lut.json"
    copy.write_text(lut.read_text())
    before = LatencyTable.load(copy)
    assert (
        main(
            ["profile", "--model", "resnet20", *TINY, "--out", str(copy), "--resume", "--recalibrate", "--no-progress"]
        )
        == 0
    )
    after = LatencyTable.load(copy)
    assert after._payload()["entries"] == before._payload()["entries"]
    assert [r["keep"] for r in after.calibration["plans"]] == [r["keep"] for r in before.calibration["plans"]]
    assert after.calibration["plans"][0]["measurement"] != before.calibration["plans"][0]["measurement"]
