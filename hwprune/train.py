"""Seeded train / evaluate / fine-tune loops shared by every feature that touches weights.

Why one module: a search compares candidate models by accuracy after a short fine-tune, so every
caller must fine-tune and evaluate the same way, and the same seed must give the same weights.
Nothing here changes ``torch.set_num_threads``: thread count is the caller's (and the profiler's)
decision, recorded where latency is measured.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from hwprune.data import Augment, DataBundle, make_loader
from hwprune.errors import ConfigError, DataError
from hwprune.progress import bars_off
from hwprune.train_state import TrainState, capture_rng, load_train_state, restore_rng, save_train_state

Device = str | torch.device | None
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: Device = None) -> bool:
    """Whether ``device`` does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX on a CPU; Ampere+ GPUs).

    Without it bf16 is emulated and slower than fp32, so "auto" only picks bf16 where it pays.
    """
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private, but the only probe torch has
    return bool(probe and probe())


def resolve_precision(precision: str, device: Device = None) -> str:
    """``auto`` -> ``bf16`` where the hardware has it natively, else ``fp32``; others are checked and kept.

    Precision here is the arithmetic of fine-tuning and candidate scoring only: weights stay fp32
    (mixed precision), and the model that is exported, timed and tested is fp32. On a CPU with
    native bf16, autocast roughly halves the time of fine-tunes and candidate scores at an accuracy
    cost below the seeds' own spread (docs/benchmarks.md, the ``precision.py`` study).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``precision == "bf16"`` (fp32 master weights), else nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ConfigError(f"precision must be fp32 or bf16 here (resolve auto first), got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so model init and any unseeded randomness repeat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device_of(model: nn.Module, device: Device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _sgd(model: nn.Module, lr: float, weight_decay: float = 5e-4) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def _cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine to zero, per step: short budgets end at a low LR, where accuracy peaks."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


DISTILL_TEMPERATURE = 4.0
"""How far both models' logits are softened in the distillation term: Hinton et al.'s range, and the
usual choice for 10-class image tasks."""


def distilled_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor, weight: float, temperature: float
) -> torch.Tensor:
    """(1 - weight) x cross-entropy on the labels + weight x T^2 x KL(teacher || student) at temperature T.

    The teacher's softened outputs say which wrong classes look alike, which a pruned model relearns
    faster than from labels alone; T^2 keeps that term's gradients on the labels' scale.
    """
    hard = F.cross_entropy(logits, y)
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * temperature**2 * soft


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str = "fp32",
    teacher: nn.Module | None = None,
    distill: float = 0.0,
) -> tuple[float, int]:
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, x.device):
        logits = model(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = distilled_loss(logits, y, teacher_logits, distill, DISTILL_TEMPERATURE)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


def train(
    model: nn.Module,
    data: DataBundle,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    device: Device = None,
    precision: str = "fp32",
    state_dir: str | Path | None = None,
    resume: bool = False,
    state_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train from scratch: SGD (momentum 0.9, Nesterov, wd 5e-4), warm-up + cosine over all steps.

    Augmentation comes from ``data.augment`` and draws from its own seeded generator, so the run
    is a function of ``seed`` alone. Returns a history with one row per epoch (train loss and
    accuracy, validation accuracy, seconds). ``precision`` bf16 trains under bf16 autocast with
    fp32 weights. Ctrl-C propagates as ``KeyboardInterrupt`` after the current step.

    With ``state_dir``, the whole training state is saved there after every epoch
    (hwprune/train_state.py), so an interruption loses at most the epoch in progress; ``resume``
    continues from that state and ends with the weights of an uninterrupted run.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if resume and state_dir is None:
        raise ConfigError("resuming a training needs the folder its state was saved in")
    dev = _device_of(model, device)
    model.to(dev)
    seed_everything(seed)
    drop_last = len(data.train) > batch_size  # type: ignore[arg-type]
    loader = make_loader(data.train, batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    if len(loader) == 0:
        raise DataError("the training set is empty")
    aug_gen = torch.Generator().manual_seed(seed + 1)
    generators = {"data_order": loader.generator, "augment": aug_gen}
    optimizer = _sgd(model, lr)
    total = epochs * len(loader)
    scheduler = _cosine(optimizer, total, warmup_steps=max(1, total // 20))
    history: dict[str, Any] = {"epochs": [], "seed": seed, "lr": lr, "batch_size": batch_size}
    settings = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "precision": precision,
        "train_samples": len(data.train),  # type: ignore[arg-type]
        "steps_per_epoch": len(loader),
    }
    first = 1
    if resume:
        assert state_dir is not None
        state = load_train_state(state_dir)
        state.check_settings(settings, state_dir)
        model.load_state_dict(state.model, strict=True)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        restore_rng(state.rng, generators, dev)
        history["epochs"], first = list(state.history), state.epoch + 1
    for epoch in range(first, epochs + 1):
        start = time.perf_counter()
        desc = f"epoch {epoch}/{epochs}"
        loss, acc = _train_epoch(
            model, loader, optimizer, scheduler, data.augment, aug_gen, dev, desc, progress, precision
        )
        val_acc = evaluate(model, data.val, device=dev) if len(data.val) else float("nan")  # type: ignore[arg-type]
        row = {
            "epoch": epoch,
            "loss": loss,
            "train_acc": acc,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - start,
        }
        history["epochs"].append(row)
        if state_dir is not None:
            state = TrainState(
                epoch,
                settings,
                history["epochs"],
                model.state_dict(),
                optimizer.state_dict(),
                scheduler.state_dict(),
                capture_rng(generators, dev),
                state_extra or {},
            )
            save_train_state(state_dir, state)
        if progress:
            tqdm.write(
                f"epoch {epoch}/{epochs}: loss {row['loss']:.4f}  train acc {row['train_acc']:.4f}  "
                f"val acc {val_acc:.4f}  ({row['seconds']:.0f}s)"
            )
    history["val_acc"] = history["epochs"][-1]["val_acc"]
    history["seconds"] = sum(r["seconds"] for r in history["epochs"])
    return history


def _train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    augment: Augment | None,
    aug_gen: torch.Generator,
    dev: torch.device,
    desc: str,
    progress: bool,
    precision: str = "fp32",
) -> tuple[float, float]:
    """One pass over ``loader``; returns mean loss and accuracy. The bar closes even on Ctrl-C."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    with tqdm(loader, desc=desc, disable=bars_off(progress), leave=False, unit="batch") as bar:
        for x, y in bar:
            x, y = x.to(dev), y.to(dev)
            if augment is not None:
                x = augment(x, aug_gen)
            loss, hits = _step(model, optimizer, x, y, precision)
            scheduler.step()
            loss_sum, correct, seen = loss_sum + loss * len(y), correct + hits, seen + len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return loss_sum / seen, correct / seen


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 128,
    max_samples: int | None = None,
    device: Device = None,
) -> float:
    """Top-1 accuracy in [0, 1] on the first ``max_samples`` of ``dataset`` (in order: repeatable)."""
    return score(model, dataset, batch_size, max_samples, device)[0]


@torch.inference_mode()
def score(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 128,
    max_samples: int | None = None,
    device: Device = None,
    precision: str = "fp32",
) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) on the first ``max_samples`` of ``dataset``.

    The loss is the finer ranking signal: on 1000 samples accuracy moves in steps of 0.1 % and two
    candidates a search must tell apart often tie or swap on a handful of borderline samples.
    ``precision`` bf16 is for ranking candidates; reported accuracy is the deployed fp32 model's.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if max_samples is not None and max_samples < n:
        dataset, n = Subset(dataset, range(max_samples)), max_samples
    if n == 0:
        raise DataError("cannot evaluate on an empty dataset")
    dev = _device_of(model, device)
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        for x, y in make_loader(dataset, batch_size, shuffle=False):
            with autocast(precision, dev):
                logits = model(x.to(dev)).float()
            y = y.to(dev)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    finally:
        model.train(was_training)
    return correct / n, loss / n


def cycle(dataset: Dataset, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless seeded batches: fine-tuning is bounded in steps so its cost does not grow with the data."""
    loader = make_loader(dataset, batch_size, shuffle=True, seed=seed, drop_last=len(dataset) > batch_size)  # type: ignore[arg-type]
    if len(loader) == 0:
        raise DataError("cannot fine-tune on an empty dataset")
    while True:
        yield from loader


def recalibrate_bn(
    model: nn.Module, batches: Iterable[Any], count: int, device: Device = None, precision: str = "fp32"
) -> None:
    """Re-estimate every BatchNorm's running statistics on ``count`` batches, without a gradient step.

    A cut model's BN layers still hold the statistics of the channels the unpruned model fed them,
    so a deep cut scores near chance until it is trained; recomputing the statistics (adaptive BN,
    Li et al., "EagleEye", ECCV 2020) makes such candidates rank by what they can still do, for the
    price of ``count`` forward passes. The model's train/eval mode and BN momenta are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if count <= 0 or not norms:
        return
    dev = _device_of(model, device)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    model.train()
    try:
        with torch.no_grad(), autocast(precision, dev):
            for _, (x, _y) in zip(range(count), batches, strict=False):
                model(x.to(dev))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


def fine_tune(
    model: nn.Module,
    dataset: Dataset,
    steps: int,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    device: Device = None,
    augment: Augment | None = None,
    precision: str = "fp32",
    teacher: nn.Module | None = None,
    distill: float = 0.0,
) -> None:
    """Recover accuracy after pruning with ``steps`` SGD steps, cosine-decayed from ``lr``.

    Deterministic: the same model, data, seed and precision give bit-identical weights on the same
    machine (it reseeds the global RNGs, as ``train`` does). The model's train/eval mode is restored.
    ``precision`` bf16 runs forward and backward under bf16 autocast; the weights stay fp32.
    ``teacher`` (the unpruned model, in eval mode and untouched) with ``distill`` > 0: knowledge
    distillation, ``distill`` the weight of its softened outputs against the labels (:func:`distilled_loss`).
    """
    if steps < 0:
        raise ConfigError(f"fine-tune steps must be >= 0, got {steps}")
    if not 0 <= distill <= 1 or (distill > 0) != (teacher is not None):
        raise ConfigError(f"distillation needs a teacher and a weight in (0, 1], got weight {distill}")
    if steps == 0:
        return
    dev = _device_of(model, device)
    model.to(dev)
    teacher_was_training = teacher is not None and teacher.training
    if teacher is not None:
        teacher.to(dev).eval()
    seed_everything(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    optimizer = _sgd(model, lr)
    scheduler = _cosine(optimizer, steps, warmup_steps=0)
    was_training = model.training
    model.train()
    batches = cycle(dataset, batch_size, seed)
    try:
        with tqdm(range(steps), desc="fine-tune", disable=bars_off(progress), leave=False, unit="step") as bar:
            for _ in bar:
                x, y = next(batches)
                x, y = x.to(dev), y.to(dev)
                if augment is not None:
                    x = augment(x, aug_gen)
                loss, _hits = _step(model, optimizer, x, y, precision, teacher, distill)
                scheduler.step()
                bar.set_postfix(loss=f"{loss:.3f}")
    finally:
        model.train(was_training)
        if teacher is not None:
            teacher.train(teacher_was_training)
