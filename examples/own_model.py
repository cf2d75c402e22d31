"""Bring your own model: a custom nn.Module and your own DataLoader, pruned to half its latency on this CPU.

hwprune never sees the data: it gets two functions over it, ``score(model) -> float`` (validation
accuracy here) and ``finetune(model, steps)`` (your training loop). It profiles this device for
the model, searches per-layer widths under the budget, cuts the filters, fine-tunes with your
loop and measures the pruned model here against the budget.

    python examples/own_model.py              # Fashion-MNIST when installed, else synthetic data (minutes)
    python examples/own_model.py --quick      # small settings and synthetic data: about a minute
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import hwprune


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallNet(nn.Module):
    """Three stages of conv+BN+ReLU, each with a residual block: hwprune prunes the channels of every group."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = ConvBNReLU(in_channels, width)
        self.stage1 = nn.Sequential(ConvBNReLU(width, width), ConvBNReLU(width, width))
        self.down2 = ConvBNReLU(width, 2 * width, stride=2)
        self.stage2 = nn.Sequential(ConvBNReLU(2 * width, 2 * width), ConvBNReLU(2 * width, 2 * width))
        self.down3 = ConvBNReLU(2 * width, 4 * width, stride=2)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.stage1(x)  # residual: the add ties the two branches' channels into one group
        x = self.down2(x)
        x = x + self.stage2(x)
        x = self.down3(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def synthetic(n: int, size: int, classes: int, seed: int) -> TensorDataset:
    """Noisy copies of one fixed pattern per class: learnable in a few hundred steps, no download."""
    g = torch.Generator().manual_seed(1234)
    patterns = torch.randn(classes, 1, size, size, generator=g)
    g.manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = patterns[labels] + 1.5 * torch.randn(n, 1, size, size, generator=g)
    return TensorDataset(images, labels)


def fashion_mnist(n_train: int, n_val: int) -> tuple[TensorDataset, TensorDataset] | None:
    """Fashion-MNIST as tensors (the Debian package's files, via hwprune's reader), or None when absent."""
    from hwprune.data import load_data
    from hwprune.errors import HwpruneError

    try:
        bundle = load_data("fashion-mnist", seed=0)
    except HwpruneError:
        return None

    def tensors(dataset: torch.utils.data.Dataset, n: int) -> TensorDataset:
        x, y = zip(*(dataset[i] for i in range(min(n, len(dataset)))), strict=True)
        return TensorDataset(torch.stack(x), torch.tensor(y))

    return tensors(bundle.train, n_train), tensors(bundle.val, n_val)


def train(model: nn.Module, loader: DataLoader, steps: int, lr: float = 0.05) -> None:
    """Your training loop: plain SGD for ``steps`` minibatches (the signature hwprune's ``finetune`` wants)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Your validation metric: top-1 accuracy (hwprune's ``score``; higher is better)."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model, synthetic data, light profiling")
    parser.add_argument("--budget", default="0.5x", help="latency budget: 0.5x of the unpruned model, or e.g. 4ms")
    parser.add_argument("--backend", default="onnxruntime", help="how the model is deployed: onnxruntime, torch-cpu")
    parser.add_argument("--batch", type=int, default=16, help="deployment batch (CPU latency rewards pruning from ~16)")
    parser.add_argument("--agent", default="netadapt", help="search agent: netadapt, uniform, legr, amc")
    parser.add_argument("--out", default=None, help="run directory to keep (plan, pruned model, report)")
    parser.add_argument("--json", default=None, help="write the before/after figures here as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    data = None if args.quick else fashion_mnist(20000, 2000)
    if data is None:
        size, classes = (32, 4) if args.quick else (32, 10)
        data = (
            synthetic(512 if args.quick else 8000, size, classes, 0),
            synthetic(128 if args.quick else 1000, size, classes, 1),
        )
    train_set, val_set = data
    shape = tuple(train_set[0][0].shape)  # (C, H, W)
    classes = int(max(int(train_set.tensors[1].max()), int(val_set.tensors[1].max()))) + 1
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)

    model = SmallNet(shape[0], classes, width=16 if args.quick else 32)
    train(model, train_loader, 40 if args.quick else 600)
    before_acc = accuracy(model, val_loader)
    print(f"trained SmallNet: validation accuracy {before_acc:.3f}")

    light = args.quick  # fewer timings: fine for a demonstration, too few for trustworthy numbers
    table = hwprune.profile(
        model,
        shape,
        batch=args.batch,
        backend=args.backend,
        grid=(0.25, 0.5, 0.75, 1.0) if light else (0.125, 0.25, 0.5, 0.75, 1.0),
        calib_plans=6 if light else 13,
        repeats=5 if light else 10,
        runs=3 if light else 5,
        block_rounds=2 if light else 4,
        progress=not light,
    )
    result = hwprune.prune(
        model,
        shape,
        budget=args.budget,
        table=table,
        backend=args.backend,
        agent=args.agent,
        score=lambda m: accuracy(m, val_loader),
        finetune=lambda m, steps: train(m, train_loader, steps, lr=0.01),
        search_finetune_steps=1 if light else 20,
        finetune_steps=20 if light else 300,
        rounds=2 if light else 3,
        settle_s=0.0 if light else 3.0,
        margin=0.1 if light else 0.05,
        out=args.out,
        progress=not light,
    )
    x = torch.randn(2, *shape)
    model.eval()
    summary = {
        "budget": args.budget,
        "met": result.met,
        "latency_ms": [result.unpruned.median_ms, result.measured.median_ms],
        "macs": list(result.macs),
        "accuracy": [before_acc, accuracy(result.model, val_loader)],
        "output_shape": [list(model(x).shape), list(result.model(x).shape)],
        "keep_ratio": result.plan.keep_ratio(),
    }
    print(
        f"latency {summary['latency_ms'][0]:.3f} -> {summary['latency_ms'][1]:.3f} ms per batch of {args.batch} "
        f"({result.speedup:.2f}x, budget {result.budget_ms:.3f} ms {'met' if result.met else 'NOT met'})\n"
        f"MACs    {summary['macs'][0]:,} -> {summary['macs'][1]:,}\n"
        f"accuracy {summary['accuracy'][0]:.3f} -> {summary['accuracy'][1]:.3f}"
    )
    if args.out:
        print(
            f"run directory: {args.out}; reload the model with hwprune.load_pruned('{args.out}/model', "
            "base_model=SmallNet(...))"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # hwprune logs its progress; show it
    try:
        main()
    except hwprune.HwpruneError as exc:  # every refusal is one line naming the problem and the fix
        sys.exit(f"own_model.py: {exc}")
