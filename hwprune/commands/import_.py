"""Turn trained weights from elsewhere into a checkpoint that profile, prune and sensitivity accept.

Weights: a .safetensors file, or a .pth/.pt state dict read with torch.load(weights_only=True)
only; a pickled whole module (torch.save(model)) is refused, since unpickling can run any code:
save torch.save(model.state_dict(), PATH) instead. A checkpoint dict holding the state dict under
'state_dict', 'model_state_dict' or 'model' is unwrapped when only one of them holds it, and a
'module.' (DataParallel) or '_orig_mod.' (torch.compile) prefix on every name is stripped.

The test accuracy is recorded only when --data names a dataset to evaluate on (its test split),
and stays unknown (null) otherwise: such a checkpoint is profiled, and pruned by --ratio or --plan
with --finetune-steps 0; a search under --budget, a fine-tune and sensitivity need a dataset
(--data here, or on those commands). Nothing is written until the weights have loaded and run.

Example:  hwprune import --model torchvision:resnet18 --weights r18.pth --num-classes 10 --input-size 32x32 \\
              --data cifar10 --data-dir data/cifar10 --out checkpoints/r18
          PYTHONPATH=. hwprune import --model mynets.small:build --weights small.safetensors --num-classes 5 \\
              --in-channels 1 --input-size 28x28 --out checkpoints/small
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from hwprune.checkpoint import file_sha256, save_checkpoint_dir
from hwprune.commands.profile import parse_input_size
from hwprune.data import DATASETS, DataBundle, load_data
from hwprune.errors import ConfigError
from hwprune.models import ModelSpec
from hwprune.options import check_out_location, out_dir, positive_int, text
from hwprune.train import evaluate
from hwprune.weights import fit_weights

HELP = "turn trained weights (.safetensors, or a .pth/.pt state dict) into a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        type=text,
        help="architecture: zoo name, torchvision:NAME, or package.module:factory (called as "
        "factory(in_channels=C, num_classes=N) from a module on PYTHONPATH; importing it runs its code, and "
        "loading the checkpoint imports it again)",
    )
    parser.add_argument("--weights", required=True, type=text, help="the trained weights: .safetensors, .pth or .pt")
    parser.add_argument("--num-classes", required=True, type=positive_int, help="classes the weights were trained for")
    parser.add_argument(
        "--in-channels", type=positive_int, help="input channels (default: the --data dataset's, else 3)"
    )
    parser.add_argument("--input-size", required=True, type=text, help="input HxW the model is deployed at, e.g. 32x32")
    parser.add_argument(
        "--data",
        type=text,
        help=f"dataset ({', '.join(DATASETS)}) to evaluate the test accuracy on and record for prune's "
        "fine-tunes; unset: the accuracy stays unknown",
    )
    parser.add_argument("--data-dir", type=text, help="dataset folder, when not in the default place")
    parser.add_argument("--out", required=True, type=out_dir, help="checkpoint directory to create")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")


def _dataset(args: argparse.Namespace, input_size: tuple[int, int]) -> tuple[DataBundle | None, int]:
    """The --data dataset, checked against the declared model, and the input channels (given or the dataset's)."""
    if args.data is None:
        return None, 3 if args.in_channels is None else args.in_channels
    data = load_data(args.data, args.data_dir)
    in_channels = data.in_channels if args.in_channels is None else args.in_channels
    declared = (in_channels, args.num_classes, input_size)
    if declared != (data.in_channels, data.num_classes, data.input_size):
        raise ConfigError(
            f"--data {args.data} has {data.in_channels} input channels, {data.num_classes} classes and "
            f"{data.input_size[0]}x{data.input_size[1]} images; the model is declared with {in_channels}, "
            f"{args.num_classes} and {input_size[0]}x{input_size[1]}: fix the options or drop --data"
        )
    return data, in_channels


def reproduce_command(args: argparse.Namespace) -> str:
    parts = ["hwprune", "import", "--model", args.model, "--weights", str(args.weights)]
    parts += ["--num-classes", str(args.num_classes), "--input-size", args.input_size]
    if args.in_channels is not None:
        parts += ["--in-channels", str(args.in_channels)]
    if args.data is not None:
        parts += ["--data", args.data] + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
    return shlex.join([*parts, "--out", str(args.out)])


def run(args: argparse.Namespace) -> int:
    out, weights = Path(args.out), Path(args.weights)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists: choose another --out or pass --overwrite")
    if out.exists():
        check_out_location(out.parent, "--out")  # replacing it renames in its folder
    input_size = parse_input_size(args.input_size)
    data, in_channels = _dataset(args, input_size)
    spec = ModelSpec(args.model, in_channels, args.num_classes, input_size)
    model, state = fit_weights(spec, weights)
    accuracy = evaluate(model, data.test) if data is not None else None
    meta: dict[str, Any] = {
        "data": args.data,
        "test_accuracy": accuracy,
        "imported": {
            "weights": str(weights.resolve()),
            "weights_sha256": file_sha256(weights),
            "unwrapped_key": state.unwrapped,
            "stripped_prefixes": state.stripped,
        },
        "command": reproduce_command(args),
    }
    save_checkpoint_dir(out, model, spec, meta, overwrite=args.overwrite)
    notes = "".join(f"; {note}" for note in state.notes())
    said = (
        f"test accuracy on {args.data} {accuracy:.2%}"
        if accuracy is not None
        else "test accuracy unknown (pass --data to evaluate it)"
    )
    print(f"imported {weights} as {spec.name} ({len(state.tensors)} tensors{notes}); {said}; wrote {out}/")
    return 0
