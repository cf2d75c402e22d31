"""Export the pruned model of a `hwprune prune` run for deployment: ONNX, TorchScript or a TensorRT engine.

The written file is read back by its own runtime and its outputs compared with the PyTorch
model's on one batch (max abs difference printed and recorded; beyond --tolerance nothing is
written), then timed on that runtime beside the unpruned model exported the same way. The record
(parity, latency, device) is written beside the file as FILE.json.

Example:  hwprune export --run runs/r20 --format onnx
          hwprune export --run runs/r20 --format torchscript --out deploy/r20.pt --batch 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwprune.errors import ConfigError
from hwprune.export import FORMATS, TOLERANCE, ExportFormat, Timing, export_model, load_source
from hwprune.options import REPEATS, check_out_location, integer, out_file, positive_float, positive_int, text

HELP = "export a pruned model (ONNX, TorchScript, TensorRT), check parity and time it on its runtime"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", required=True, type=text, help="run directory of `hwprune prune` (or a checkpoint directory)"
    )
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="file format and the runtime it is for")
    p.add_argument("--out", type=out_file, help="file to write (default: RUN/model.onnx, .pt or .engine)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--batch",
        type=positive_int,
        help="batch size fixed in the export (default: the run's deployment batch, else 1)",
    )
    p.add_argument("--opset", type=positive_int, help="ONNX opset (onnx, tensorrt; default: the exporter's)")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        help=f"largest absolute difference allowed between the file's outputs and the PyTorch model's "
        f"(default: {TOLERANCE:g}; 1e-2 for tensorrt, whose fp32 engines use TF32)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads of the runtime (default: the run's, else all cores)"
    )
    p.add_argument("--repeats", type=integer(REPEATS), default=10, help="timed samples per run")
    p.add_argument("--runs", type=positive_int, default=5, help="runs per measurement; the quietest is kept")
    p.add_argument(
        "--rounds", type=positive_int, default=3, help="interleaved rounds of the exported and unpruned models"
    )
    p.add_argument("--no-measure", action="store_true", help="check parity only; do not time the export")


def run(args: argparse.Namespace) -> int:
    source = load_source(args.run)
    if args.opset is not None and args.format == "torchscript":
        raise ConfigError("--opset is an ONNX setting: drop it for --format torchscript")
    fmt_cls: type[ExportFormat] = FORMATS[args.format][0]
    out = Path(args.out) if args.out is not None else Path(args.run) / f"model{fmt_cls.suffix}"
    check_out_location(out, "--out", directory=False)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    batch = args.batch or source.batch or 1
    timing = None if args.no_measure else Timing(args.repeats, args.runs, args.rounds)
    record = export_model(
        source, args.format, out, batch, args.opset, args.tolerance, args.threads or source.threads, timing
    )
    print(
        f"wrote {out} ({args.format}, input {'x'.join(map(str, record['input_shape']))}): max abs difference "
        f"{record['parity']['max_abs_diff']:.2e} from the PyTorch model (tolerance {record['parity']['tolerance']:g})"
    )
    latency = record["latency"]
    if latency is not None:
        m = latency["model"]["summary"]
        line = f"{latency['backend']}: {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f}) per batch of {batch}"
        if "unpruned" in latency:
            u = latency["unpruned"]["summary"]
            line += f"; unpruned exported the same way {u['median_ms']:.3f} ms: {latency['speedup']:.2f}x"
        print(line)
    print(f"record: {out.with_name(out.name + '.json')}")
    return 0
