"""Train a baseline model from scratch, report its test accuracy and write a checkpoint.

The checkpoint directory (model.safetensors + model.json) appears only when training and
evaluation have finished: it is assembled in a hidden sibling folder and renamed into place, so
a failure or Ctrl-C leaves nothing behind (an interrupted run is simply re-run; nothing partial
is kept). The JSON records the command that reproduces the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hwprune.checkpoint import nonfinite_tensor, save_checkpoint
from hwprune.data import DATASETS, load_data
from hwprune.errors import ConfigError
from hwprune.models import ModelSpec, create_model
from hwprune.options import (
    check_out_location,
    non_negative_int,
    out_dir,
    positive_float,
    positive_int,
    text,
    torch_device,
)
from hwprune.train import evaluate, seed_everything, train

HELP = "train a baseline model and write a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        type=text,
        help="zoo name (resnet20, mobilenetv2, ...), torchvision:NAME or package.module:factory (see README)",
    )
    parser.add_argument("--data", default="fashion-mnist", type=text, help=f"dataset: {', '.join(DATASETS)}")
    parser.add_argument(
        "--data-dir",
        default=None,
        type=text,
        help="dataset folder (fashion-mnist falls back to /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs")
    parser.add_argument("--lr", type=positive_float, default=0.1, help="peak learning rate (warm-up + cosine)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="training batch size")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed for init, data order, split and augmentation"
    )
    parser.add_argument(
        "--limit-train", type=positive_int, default=None, help="train on the first N shuffled samples only"
    )
    parser.add_argument("--device", default="cpu", type=torch_device, help="torch device to train on")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads; 1 is fastest on a busy machine (unset: torch's choice)",
    )
    parser.add_argument("--out", required=True, type=out_dir, help="checkpoint directory to create")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")


def reproduce_command(args: argparse.Namespace) -> str:
    """The canonical command line for these settings (not sys.argv, which may be a test runner's)."""
    parts = ["hwprune", "train", "--model", args.model, "--data", args.data]
    if args.data_dir:
        parts += ["--data-dir", str(args.data_dir)]
    parts += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size)]
    parts += ["--seed", str(args.seed)]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.limit_train is not None:
        parts += ["--limit-train", str(args.limit_train)]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists: choose another --out or pass --overwrite")
    if out.exists():
        check_out_location(out.parent, "--out")  # replacing it renames in its folder
    if args.threads is not None:  # every value is range-checked by its type= while parsing
        torch.set_num_threads(args.threads)
    create_model(args.model)  # fail on an unknown name before loading any data
    data = load_data(args.data, args.data_dir, seed=args.seed, limit_train=args.limit_train)
    spec = ModelSpec(args.model, data.in_channels, data.num_classes, data.input_size)
    seed_everything(args.seed)
    model = spec.build()
    start = time.perf_counter()
    history = train(model, data, args.epochs, args.lr, args.batch_size, args.seed, not args.no_progress, args.device)
    broken = nonfinite_tensor(model.state_dict())
    if broken:  # an all-NaN checkpoint scores chance and poisons every prune run made from it
        raise ConfigError(f"training diverged ({broken}); nothing was written: lower --lr (it was {args.lr})")
    test_acc = evaluate(model, data.test)
    wall = time.perf_counter() - start
    meta = {
        "data": args.data,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "limit_train": args.limit_train,
        "train_samples": len(data.train),
        "val_accuracy": history["val_acc"],
        "test_accuracy": test_acc,
        "train_seconds": round(wall, 1),
        "command": reproduce_command(args),
        "history": history["epochs"],
    }
    _write_atomically(out, lambda tmp: save_checkpoint(tmp, model.cpu(), spec, meta), args.overwrite)
    minutes, seconds = divmod(int(wall), 60)
    print(
        f"{args.model} on {args.data}: test acc {test_acc:.2%} (val {history['val_acc']:.2%}) after "
        f"{args.epochs} epochs on {len(data.train)} samples in {minutes}m{seconds:02d}s; wrote {out}/"
    )
    return 0


def _write_atomically(out: Path, write: Callable[[Path], object], overwrite: bool) -> None:
    """Fill a hidden sibling folder, then rename it to ``out``: readers never see half a checkpoint."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
        write(tmp)
        if out.exists() and overwrite:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
