"""Check a latency table against reality: measure random pruned variants end to end and score predictions.

The K plans are random (each group keeps 20..100 % of its channels), drawn from --seed, and
never one of the plans the table was calibrated on. Each is pruned, run end to end on this
device with the table's backend and settings, and compared with three predictions: the
calibrated table (what `prune` uses), the plain sum of isolated block timings (NetAdapt-style)
and the unpruned latency scaled by MACs (FLOPs-proportional).

Each plan is timed right after the unpruned model and read at the machine speed the table was
calibrated at (the calibration is measured the same way), so the machine drifting between
`profile` and `lut-check` is not graded as the table's error; how far it drifted is printed.
--unpaired times every plan alone instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwprune.commands.profile import checkpoint_spec
from hwprune.errors import ConfigError
from hwprune.io import write_json
from hwprune.latency.load import load_table, model_for
from hwprune.latency.validate import check_table
from hwprune.options import REPEATS, check_out_location, integer, non_negative_int, out_file, positive_int, text

HELP = "measure random pruned variants and report the latency table's prediction error"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", type=text, help="the model the table was made for, checked against it (default: the table's)"
    )
    which.add_argument(
        "--checkpoint", type=text, help="or the checkpoint `profile --checkpoint` was given: its model is checked"
    )
    parser.add_argument("--lut", required=True, type=text, help="latency table JSON from `hwprune profile`")
    parser.add_argument("--plans", type=positive_int, default=20, help="random pruned variants to measure")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random plans")
    parser.add_argument(
        "--round-to",
        type=positive_int,
        default=1,
        help="round every width of the random plans to this multiple (the table's quantum, 16 on "
        "AVX-512 and 8 on AVX2: the aligned widths `prune --round-to` and uniform plans produce, "
        "which ONNX Runtime runs much faster)",
    )
    parser.add_argument(
        "--repeats", type=integer(REPEATS), default=None, help="timed samples per run (default: the table's)"
    )
    parser.add_argument(
        "--runs", type=positive_int, default=None, help="runs per measurement, the quietest kept (default: the table's)"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help="runs per plan, round-robin, the faster kept (default: the table's)",
    )
    parser.add_argument(
        "--unpaired",
        action="store_true",
        help="time each plan alone, at whatever speed the machine runs now, instead of right after "
        "the unpruned model and rescaled to the table's calibration speed",
    )
    parser.add_argument("--out", default=None, type=out_file, help="JSON report (default: LUT name with .check.json)")
    parser.add_argument(
        "--allow-foreign-table", action="store_true", help="use a table profiled on another device/backend anyway"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    lut = Path(args.lut)
    out = Path(args.out) if args.out is not None else lut.with_name(lut.stem + ".check.json")
    check_out_location(out, "--out", directory=False)  # the default sits beside the table: it may be read-only
    table, profiler = load_table(lut, args.allow_foreign_table, repeats=args.repeats, runs=args.runs)
    expected = checkpoint_spec(Path(args.checkpoint)).name if args.checkpoint else args.model
    if expected is not None and table.settings.get("model") != expected:
        raise ConfigError(f"{lut} was made for model {table.settings.get('model')!r}, not {expected!r}")
    model, graph = model_for(table)
    report = check_table(
        table,
        model,
        graph,
        profiler,
        plans=args.plans,
        seed=args.seed,
        round_to=args.round_to,
        paired=not args.unpaired,
        rounds=args.rounds,
        progress=not args.no_progress,
    )
    report |= {"lut": str(lut)}
    write_json(out, report)
    print(format_report(report))
    print(f"wrote {out}")
    return 0


def format_report(report: dict) -> str:
    """A small fixed-width table: one row per predictor, the calibrated one first."""
    lines = [
        f"{report['model']} on {report['backend']} (batch {report['batch']}, "
        f"{report['input_size'][0]}x{report['input_size'][1]}): {report['plans']} held-out plans "
        f"({report['rounds']} round{'s' if report['rounds'] > 1 else ''} each), "
        f"unpruned {report['full_model_measured_ms']:.3f} ms"
        + ("" if report["calibrated"] else "  [table NOT calibrated: re-profile with `hwprune profile --overwrite`]"),
        f"{'predictor':<12}{'median |err|':>14}{'p95 |err|':>11}{'within 10%':>12}{'bias':>9}",
    ]
    for name, st in report["predictors"].items():
        lines.append(
            f"{name:<12}{st['median_abs_pct']:>13.1f}%{st['p95_abs_pct']:>10.1f}%"
            f"{st['within_10pct']:>11.0%} {st['mean_signed_pct']:>+8.1f}%"
        )
    paired = report.get("unpruned_alongside")
    if paired and paired["readings"]:
        lines.append(
            f"paired: each plan read at the calibration's speed (unpruned {paired['reference_ms']:.3f} ms); "
            f"the unpruned model read {paired['min_ms']:.3f}-{paired['max_ms']:.3f} ms beside the plans"
            + (f" ({paired['retaken']} reading(s) caught in a slow spell taken again)" if paired.get("retaken") else "")
        )
    if report.get("unstable_measurements"):
        lines.append(f"warning: {report['unstable_measurements']} measurements were unstable (busy machine?)")
    return "\n".join(lines)
