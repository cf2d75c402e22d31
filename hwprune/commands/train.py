"""Train a baseline model from scratch, report its test accuracy and write a checkpoint.

The training state (weights, optimizer, LR schedule position, RNG streams, history) is saved in
--out after every epoch, so Ctrl-C or a crash loses at most the epoch in progress:
``hwprune train --resume DIR`` continues it and ends with the weights an uninterrupted run has.
The checkpoint (model.safetensors + model.json) is written when training and evaluation have
finished; the training state is then removed. The JSON records the command that reproduces the weights.

Example:  hwprune train --model resnet20 --epochs 30 --out checkpoints/resnet20-30ep
          hwprune train --resume checkpoints/resnet20-30ep
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from hwprune.checkpoint import nonfinite_tensor, save_checkpoint
from hwprune.data import DATASETS, load_data
from hwprune.errors import ConfigError, HwpruneError
from hwprune.io import read_json
from hwprune.models import ModelSpec, create_model
from hwprune.options import (
    check_device,
    check_out_location,
    non_negative_int,
    out_dir,
    positive_float,
    positive_int,
    text,
    torch_device,
)
from hwprune.train import PRECISIONS, evaluate, resolve_precision, seed_everything, train
from hwprune.train_state import JSON_NAME as STATE_JSON
from hwprune.train_state import KIND as STATE_KIND
from hwprune.train_state import SCHEMA_VERSION as STATE_SCHEMA
from hwprune.train_state import has_train_state, remove_train_state

HELP = "train a baseline model and write a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=text,
        help="zoo name (resnet20, mobilenetv2, ...), torchvision:NAME or package.module:factory (see README); "
        "required unless --resume",
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
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic of the training steps: bf16 autocast keeps fp32 weights and is faster only where the "
        "hardware has bf16 (auto picks it there)",
    )
    parser.add_argument(
        "--out", type=out_dir, help="checkpoint directory to create; holds the training state while it runs"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into --out although it exists (an unfinished training there is discarded; "
        "an old checkpoint there is replaced at the end)",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        type=text,
        help="continue the interrupted training in DIR from its last completed epoch, with the options it was "
        "started with (only --threads, --device and --no-progress may be given)",
    )
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
    if args.precision != "fp32":
        parts += ["--precision", args.precision]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


RESUME_MAY_CHANGE = ("threads", "no_progress", "device")
"""Options a resumed training may set anew: none changes what is computed (threads and device may move the last
bits), and a training started on a GPU must be able to finish on another machine."""

RECORDED = ("model", "data", "data_dir", "epochs", "lr", "batch_size", "seed", "limit_train", "device", "precision")
"""The options a training state records, from which ``--resume`` rebuilds the run."""


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        _resume_options(args)
        resume = True
    else:
        if args.model is None or args.out is None:
            raise ConfigError("--model and --out are required (or --resume DIR to continue a training)")
        _check_fresh_out(Path(args.out), args.overwrite)
        args.precision = resolve_precision(args.precision)  # the state and the command record what ran
        resume = False
    out = Path(args.out)
    if args.threads is not None:  # every value is range-checked by its type= while parsing
        torch.set_num_threads(args.threads)
    create_model(args.model)  # fail on an unknown name before loading any data
    data = load_data(args.data, args.data_dir, seed=args.seed, limit_train=args.limit_train)
    spec = ModelSpec(args.model, data.in_channels, data.num_classes, data.input_size)
    seed_everything(args.seed)
    model = spec.build()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        remove_train_state(out)  # --overwrite over an unfinished training starts it again
    try:
        test_acc, history = _train_and_save(args, model, spec, data, out, resume)
    except HwpruneError:
        if resume:
            raise
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            remove_train_state(out)
        raise
    except KeyboardInterrupt:
        if has_train_state(out):
            print(
                f"the training state of the last completed epoch is in {out}/: continue with "
                f"hwprune train --resume {out}",
                file=sys.stderr,
            )
        elif created:
            shutil.rmtree(out, ignore_errors=True)  # not one epoch finished: nothing worth keeping
        raise
    minutes, seconds = divmod(int(history["seconds"]), 60)
    print(
        f"{args.model} on {args.data}: test acc {test_acc:.2%} (val {history['val_acc']:.2%}) after "
        f"{args.epochs} epochs on {len(data.train)} samples in {minutes}m{seconds:02d}s; wrote {out}/"
    )
    return 0


def _train_and_save(
    args: argparse.Namespace, model: torch.nn.Module, spec: ModelSpec, data: Any, out: Path, resume: bool
) -> tuple[float, dict[str, Any]]:
    """Train (saving the state each epoch), check the weights, test, and write the checkpoint."""
    options = {key: getattr(args, key) for key in (*RECORDED, "threads")}
    history = train(
        model,
        data,
        args.epochs,
        args.lr,
        args.batch_size,
        args.seed,
        not args.no_progress,
        args.device,
        precision=args.precision,
        state_dir=out,
        resume=resume,
        state_extra={"options": options},
    )
    broken = nonfinite_tensor(model.state_dict())
    if broken:  # an all-NaN checkpoint scores chance and poisons every prune run made from it
        raise ConfigError(f"training diverged ({broken}); nothing was written: lower --lr (it was {args.lr})")
    test_acc = evaluate(model, data.test)
    meta = {
        "data": args.data,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "limit_train": args.limit_train,
        "train_samples": len(data.train),
        "val_accuracy": history["val_acc"],
        "test_accuracy": test_acc,
        "train_seconds": round(history["seconds"], 1),
        "command": reproduce_command(args),
        "history": history["epochs"],
    }
    save_checkpoint(out, model.cpu(), spec, meta)
    remove_train_state(out)
    return test_acc, history


def _check_fresh_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or overwrite:
        return
    if has_train_state(out):
        epoch, epochs = _state_progress(out)
        raise ConfigError(
            f"{out} holds an unfinished training (epoch {epoch} of {epochs} done): continue it with "
            f"--resume {out}, or pass --overwrite to start again"
        )
    raise ConfigError(f"{out} already exists: choose another --out or pass --overwrite")


def _state_progress(out: Path) -> tuple[Any, Any]:
    doc = read_json(out / STATE_JSON, STATE_KIND, STATE_SCHEMA)
    return doc.get("epoch"), (doc.get("settings") or {}).get("epochs")


def _resume_options(args: argparse.Namespace) -> None:
    """Fill ``args`` from the training state in ``--resume``; refuse options it would ignore."""
    extra = [flag for dest, flag in getattr(args, "given", {}).items() if dest not in (*RESUME_MAY_CHANGE, "resume")]
    if extra:
        raise ConfigError(
            f"--resume continues {args.resume} with the options it was started with: drop {', '.join(extra)}, "
            "or start a new training with --out to change them"
        )
    folder = Path(args.resume)
    if not has_train_state(folder):
        if (folder / "model.json").is_file():
            raise ConfigError(f"--resume {folder}: the training there has finished (model.json); nothing to resume")
        raise ConfigError(
            f"--resume {folder}: no training state there ({STATE_JSON}); start a training with --model and --out"
        )
    check_out_location(folder, "--resume")
    options = (read_json(folder / STATE_JSON, STATE_KIND, STATE_SCHEMA).get("extra") or {}).get("options")
    if not isinstance(options, dict) or any(key not in options for key in RECORDED):
        raise ConfigError(f"{folder / STATE_JSON} does not record the options of `hwprune train`: it cannot be resumed")
    given = getattr(args, "given", {})
    for key in RECORDED:
        if key not in given:  # --device given anew wins over the recorded one
            setattr(args, key, options[key])
    try:
        check_device(args.device)  # the recorded device may not exist on this machine
    except ConfigError as exc:
        raise ConfigError(f"--resume {folder} continues on --device {args.device}: {exc}") from None
    if args.threads is None:  # the thread count it was started with, unless the user sets it anew
        args.threads = options.get("threads")
    args.out = str(folder)
