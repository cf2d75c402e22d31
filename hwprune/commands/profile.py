"""Profile this device: build a latency lookup table (LUT) for a model at one deployment setting.

Every conv/linear layer of the model is reduced to a signature (kind, kernel, stride, padding,
depthwise, input HxW, batch, dtype); each signature is timed once per point of a grid of
(c_in, c_out) widths, as a conv+BN+ReLU block the way the backend deploys it. Then a few pruned
variants of the whole model are measured to calibrate the table's sum to end-to-end latency.
The table is rewritten as blocks complete (at most once a second, always on exit), so Ctrl-C
loses nothing: run the same command with --resume to continue.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from hwprune.errors import ConfigError
from hwprune.io import read_json
from hwprune.latency.build import (
    BLOCK_WARMUP_S,
    DEFAULT_BLOCK_ROUNDS,
    DEFAULT_FRACTIONS,
    TableSetting,
    parse_grid,
    profile_model,
)
from hwprune.latency.calibrate import check_plan_count
from hwprune.models import ModelSpec, create_model
from hwprune.options import (
    REPEATS,
    integer,
    non_negative_float,
    non_negative_int,
    out_file,
    positive_int,
    text,
)
from hwprune.profilers import available_profilers

HELP = "build a latency lookup table for a model on this device"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model", type=text, help="zoo name (resnet20, mobilenetv2, ...), torchvision:NAME or package.module:factory"
    )
    src.add_argument(
        "--checkpoint",
        type=text,
        help="checkpoint directory from `hwprune train` or `import`: its model spec is used (weights do not "
        "change latency)",
    )
    parser.add_argument(
        "--backend", default="torch-cpu", type=text, help=f"profiler: {', '.join(available_profilers())}"
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size the model is deployed at")
    parser.add_argument(
        "--input-size", default=None, type=text, help="input HxW, e.g. 32x32; unset: the checkpoint's, else 32x32"
    )
    parser.add_argument(
        "--in-channels", type=positive_int, default=None, help="input channels; unset: the checkpoint's, else 3"
    )
    parser.add_argument(
        "--num-classes", type=positive_int, default=None, help="classes; unset: the checkpoint's, else 10"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads (unset: all cores); part of the device key"
    )
    parser.add_argument("--repeats", type=integer(REPEATS), default=10, help="timed samples per run")
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=5,
        help="runs per block and per model, back to back; the quietest (lowest median) is kept",
    )
    parser.add_argument("--warmup", type=non_negative_int, default=10, help="warm-up runs before sampling (at least)")
    parser.add_argument(
        "--warmup-s", type=non_negative_float, default=BLOCK_WARMUP_S, help="warm-up seconds before sampling (at least)"
    )
    parser.add_argument(
        "--grid",
        type=text,
        default=",".join(str(f) for f in DEFAULT_FRACTIONS),
        help="grid widths as fractions of each layer's width (e.g. 0.25,0.5,1), or a count N",
    )
    parser.add_argument(
        "--quantum",
        type=positive_int,
        default=None,
        help="widest channel alignment the backend rewards: the grid sits on odd widths and each "
        "alignment tier (2, 4, .. QUANTUM) gets a measured correction; 1 = one plain grid. "
        "Unset: the CPU's SIMD width in floats (16 with AVX-512, 8 otherwise), 8 on a GPU",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=2,
        help="times every calibration plan is timed, in separate passes (each right after the "
        "unpruned model); the faster run is kept",
    )
    parser.add_argument(
        "--block-rounds",
        type=positive_int,
        default=DEFAULT_BLOCK_ROUNDS,
        help="passes over the grid, each timing every block once; the faster run is kept (a "
        "block's runs last milliseconds, while a shared or virtualised host has slow spells of "
        "seconds: only separate passes see past them)",
    )
    parser.add_argument(
        "--calib-plans",
        type=non_negative_int,
        default=13,
        help="whole-model measurements (unpruned + random plans) to calibrate on; 0 = none",
    )
    parser.add_argument("--calib-seed", type=non_negative_int, default=1234, help="seed of the calibration plans")
    parser.add_argument("--out", required=True, type=out_file, help="table JSON to write")
    existing = parser.add_mutually_exclusive_group()  # continuing a table and replacing it contradict
    existing.add_argument("--resume", action="store_true", help="continue an interrupted table at --out")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing table at --out")
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="with --resume: keep the blocks, re-measure the whole-model calibration plans",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_input_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text) or re.fullmatch(r"\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--input-size must look like 32x32 (HxW), got {text!r}")
    h = int(match.group(1))
    w = int(match.group(2)) if match.lastindex == 2 else h
    if h < 1 or w < 1:
        raise ConfigError(f"--input-size must be positive, got {text!r}")
    return h, w


def setting_from_args(args: argparse.Namespace) -> TableSetting:
    """The table's setting, checked before any file is touched or any block is timed.

    Each value was range-checked by its ``type=`` while parsing; here the checkpoint fills in what
    was not given (``None``), and the model and backend names are checked.
    """
    spec = checkpoint_spec(Path(args.checkpoint)) if args.checkpoint else None
    model = spec.name if spec else args.model
    input_size = parse_input_size(args.input_size) if args.input_size else (spec.input_size if spec else (32, 32))
    in_channels = args.in_channels if args.in_channels is not None else (spec.in_channels if spec else 3)
    num_classes = args.num_classes if args.num_classes is not None else (spec.num_classes if spec else 10)
    if args.backend not in available_profilers():
        raise ConfigError(f"unknown backend '{args.backend}': choose one of {', '.join(available_profilers())}")
    check_plan_count(args.calib_plans, "--calib-plans")
    create_model(model, in_channels, num_classes)  # unknown model names fail here, before any work
    return TableSetting(
        model=model,
        in_channels=in_channels,
        num_classes=num_classes,
        input_size=input_size,
        batch=args.batch,
        backend=args.backend,
        threads=args.threads if args.threads is not None else (os.cpu_count() or 1),
        repeats=args.repeats,
        runs=args.runs,
        warmup=args.warmup,
        warmup_s=args.warmup_s,
        grid=parse_grid(args.grid),
        quantum=args.quantum,
        calib_plans=args.calib_plans,
        calib_seed=args.calib_seed,
        rounds=args.rounds,
        block_rounds=args.block_rounds,
    )


def checkpoint_spec(path: Path) -> ModelSpec:
    """The model spec of a checkpoint (directory or its JSON), read without loading any weights."""
    from hwprune.checkpoint import JSON_NAME, KIND, SCHEMA_VERSION

    json_path = path / JSON_NAME if path.is_dir() else path
    return ModelSpec.from_dict(read_json(json_path, KIND, SCHEMA_VERSION).get("spec", {}))


def run(args: argparse.Namespace) -> int:
    setting = setting_from_args(args)
    out = Path(args.out)
    if args.recalibrate and not args.resume:
        raise ConfigError("--recalibrate continues an existing table: pass it with --resume")
    try:
        table, seconds = profile_model(
            setting,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            recalibrate=args.recalibrate,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        if out.exists():
            print(
                f"hwprune profile: every finished block is saved in {out}; run the same command with --resume "
                "to continue",
                file=sys.stderr,
            )
        raise
    fit = (table.calibration or {}).get("fit")
    calib = "; not calibrated"
    if fit:
        calib = (
            f"; calibrated on {len(table.calibration['plans'])} whole-model plans (in-sample median "
            f"error {fit['in_sample_median_abs_pct']:.1f}%, max {fit['in_sample_max_abs_pct']:.1f}%)"
        )
        readings = table.calibration.get("alongside_ms") or []
        if readings:
            retaken = table.calibration.get("retaken") or 0
            calib += (
                f", each timed right after the unpruned model ({min(readings):.3f}-{max(readings):.3f} ms, "
                f"median {table.calibration['reference_ms']:.3f}"
                + (f"; {retaken} reading(s) caught in a slow spell taken again" if retaken else "")
                + ")"
            )
    print(
        f"{setting.model} on {table.device_key()} (batch {setting.batch}, {setting.input_size[0]}x"
        f"{setting.input_size[1]}): {table.num_entries()} blocks over {len(table.grids)} signatures in "
        f"{seconds['blocks_s']:.0f}s + {seconds['calibration_s']:.0f}s calibration{calib}; wrote {out}"
    )
    if fit and fit.get("fallback"):
        print(f"note: calibration: {fit['fallback']}")
    if seconds.get("unstable_points"):
        print(
            f"note: {seconds['unstable_points']:.0f} of {seconds['points']:.0f} grid points kept an unstable timing "
            f"even as the fastest of {setting.block_rounds} passes ({seconds['unstable_blocks']:.0f} of "
            f"{seconds['blocks_timed']:.0f} runs were unstable): a busy machine? Re-profile on a quiet one for "
            "trustworthy numbers"
        )
    return 0
