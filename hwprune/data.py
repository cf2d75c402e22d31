"""Datasets as train / val / test splits, in memory where they fit, with on-batch augmentation.

Why in memory and on-batch: the machines this runs on often have two cores, and a per-sample
PIL pipeline would cost more than the small CNNs it feeds. Images are kept as uint8 tensors and
normalised when a batch is fetched; augmentation runs on the whole batch in torch.

The validation split is a seeded hold-out carved from the *train* set, so searches and
fine-tunes never look at the test split, which is only for final reports.
"""

from __future__ import annotations

import difflib
import gzip
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from hwprune.errors import ConfigError, DataError

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_CACHE = Path.home() / ".cache" / "hwprune" / "data"
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Published channel statistics; BN makes small errors (e.g. from padding 28->32) harmless.
_FMNIST_STATS = ((0.2860,), (0.3530,))
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorImageDataset(Dataset):
    """uint8 NCHW images + int64 labels; normalises on access and serves whole batches at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise DataError(f"malformed image tensors: {tuple(images.shape)} {images.dtype}, {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255.0) - self.mean) / self.std

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._normalise(self.images[index : index + 1])[0], int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader calls this with a batch of indices: one gather instead of N item fetches.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._normalise(self.images[idx]), self.labels[idx]

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(
            self.images[indices], self.labels[indices], self.mean.flatten().tolist(), self.std.flatten().tolist()
        )


class RandomCropFlip:
    """Random crop after zero-padding (in pixel space) and optional horizontal flip, per sample."""

    def __init__(self, padding: int, flip: bool, mean: Sequence[float], std: Sequence[float]) -> None:
        self.padding, self.flip = padding, flip
        # The normalised value of a black pixel, so padding looks like torchvision's RandomCrop.
        self.fill = (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        fill = self.fill.to(x.device, x.dtype)
        padded = F.pad(x - fill, (p, p, p, p)) + fill
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        out = padded[
            torch.arange(b, device=x.device)[:, None, None, None],
            torch.arange(c, device=x.device)[None, :, None, None],
            rows,
            cols,
        ]
        if self.flip:
            mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            out = torch.where(mask[:, None, None, None], out.flip(3), out)
        return out


@dataclass
class DataBundle:
    """The three splits of one dataset plus what a model needs to know to be built for it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    augment: Augment | None = None


def load_data(
    name: str,
    data_dir: str | None = None,
    val_size: int | float = 5000,
    seed: int = 0,
    limit_train: int | None = None,
    image_size: int = 32,
) -> DataBundle:
    """Load ``name`` and split a seeded validation hold-out off its train set.

    ``val_size`` is a sample count or a fraction in (0, 1). A count larger than a fifth of the
    train set is capped at a fifth, so the small ``synthetic`` and user folders work with the
    default. ``limit_train`` keeps the first N of the remaining (shuffled) train samples: a
    cheaper run that still validates on the full hold-out. ``image_size`` is the square size
    ``imagefolder`` images are resized to (the other datasets are 32x32).
    """
    if name == "fashion-mnist":
        train_full, test, aug = _fashion_mnist(data_dir)
        shape = (1, 10, (32, 32))
    elif name == "cifar10":
        train_full, test, aug = _cifar10(data_dir)
        shape = (3, 10, (32, 32))
    elif name == "synthetic":
        train_full, test, aug = _synthetic()
        shape = (1, 10, (32, 32))
    elif name == "imagefolder":
        train_full, test, aug, shape = _image_folder(data_dir, image_size)
    else:
        close = difflib.get_close_matches(name, DATASETS, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(DATASETS)}"
        raise DataError(f"unknown dataset '{name}': {hint}")
    train, val = _split(train_full, val_size, seed, limit_train)
    in_channels, num_classes, input_size = shape
    return DataBundle(name, train, val, test, in_channels, num_classes, input_size, aug)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A single-process loader whose order depends only on ``seed`` (workers would only contend)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        drop_last=drop_last,
        collate_fn=_collate,
    )


def _collate(batch: object) -> object:
    # Batched datasets (``__getitems__``) hand back a ready (x, y) tuple; others a list of samples.
    return batch if isinstance(batch, tuple) else default_collate(batch)  # type: ignore[arg-type]


def _split(dataset: Dataset, val_size: int | float, seed: int, limit_train: int | None) -> tuple[Dataset, Dataset]:
    n = len(dataset)  # type: ignore[arg-type]
    if isinstance(val_size, float) and 0 < val_size < 1:
        n_val = int(round(n * val_size))
    elif isinstance(val_size, int) and not isinstance(val_size, bool) and val_size > 0:
        n_val = min(val_size, n // 5)
    else:
        raise ConfigError(f"val_size must be a count > 0 or a fraction in (0, 1), got {val_size!r}")
    if limit_train is not None and limit_train <= 0:
        raise ConfigError(f"--limit-train must be positive, got {limit_train}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if limit_train is not None:
        train_idx = train_idx[:limit_train]
    if isinstance(dataset, TensorImageDataset):
        return dataset.subset(train_idx), dataset.subset(val_idx)
    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


# --- Fashion-MNIST -------------------------------------------------------------------------------


def _fashion_mnist(data_dir: str | None) -> tuple[TensorImageDataset, TensorImageDataset, Augment]:
    root = _find_fashion_mnist(data_dir)
    splits = {}
    for split, (img_file, lbl_file) in _FMNIST_FILES.items():
        images = _read_idx(root / img_file, magic=2051)
        labels = _read_idx(root / lbl_file, magic=2049)
        # 28x28 -> 32x32 so the CIFAR-style zoo (and its latency tables) apply unchanged.
        images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None]
        splits[split] = TensorImageDataset(
            torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), *_FMNIST_STATS
        )
    # No flip: the padding already gives the crop room to shift; flips add little on this data.
    aug = RandomCropFlip(2, flip=False, mean=_FMNIST_STATS[0], std=_FMNIST_STATS[1])
    return splits["train"], splits["test"], aug


def _has_fmnist(folder: Path) -> bool:
    return all((folder / f).is_file() for files in _FMNIST_FILES.values() for f in files)


def _find_fashion_mnist(data_dir: str | None) -> Path:
    """data_dir (flat, or torchvision's FashionMNIST/raw layout), then the Debian package, then download."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data dir {data_dir} does not exist: pass an existing --data-dir, or omit it")
    candidates = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"] if data_dir else []
    candidates += [SYSTEM_FASHION_MNIST, DOWNLOAD_CACHE / "FashionMNIST" / "raw"]
    for folder in candidates:
        if _has_fmnist(folder):
            return folder
    target = Path(data_dir) if data_dir else DOWNLOAD_CACHE
    folder = _download_fashion_mnist(target)
    if folder is not None and _has_fmnist(folder):
        return folder
    where = f"{data_dir} or {SYSTEM_FASHION_MNIST}" if data_dir else str(SYSTEM_FASHION_MNIST)
    raise DataError(
        f"Fashion-MNIST not found in {where} and could not be downloaded: "
        "apt-get install dataset-fashion-mnist, or pass --data-dir"
    )


def _download_fashion_mnist(root: Path) -> Path | None:
    """torchvision's downloader, bounded in time so an offline machine fails fast; None on failure."""
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError:
        return None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError):
        return None
    finally:
        socket.setdefaulttimeout(old_timeout)
    return root / "FashionMNIST" / "raw"


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an idx(.gz) file: big-endian magic, dims, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}): re-install or re-download the dataset") from None
    header = np.frombuffer(raw[:4], dtype=">i4")
    if len(header) != 1 or int(header[0]) != magic:
        raise DataError(f"{path} is not an idx file (bad magic): re-install or re-download the dataset")
    ndim = magic & 0xFF
    dims = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">i4"))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: re-install or re-download the dataset")
    return data.reshape(dims)


# --- CIFAR-10 and synthetic ----------------------------------------------------------------------


def _cifar10(data_dir: str | None) -> tuple[TensorImageDataset, TensorImageDataset, Augment]:
    if not data_dir:
        raise DataError("cifar10 needs --data-dir: a folder holding cifar-10-batches-py (torchvision's format)")
    root = Path(data_dir)
    if root.name == "cifar-10-batches-py":
        root = root.parent
    from torchvision.datasets import CIFAR10

    splits = []
    for train in (True, False):
        try:
            ds = CIFAR10(str(root), train=train, download=False)
        except RuntimeError:
            raise DataError(
                f"CIFAR-10 not found or corrupt in {root}: it must hold cifar-10-batches-py "
                "(the python version from https://www.cs.toronto.edu/~kriz/cifar.html)"
            ) from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        splits.append(TensorImageDataset(images, torch.tensor(ds.targets), *_CIFAR_STATS))
    return splits[0], splits[1], RandomCropFlip(2, flip=True, mean=_CIFAR_STATS[0], std=_CIFAR_STATS[1])


def _synthetic(n_train: int = 600, n_test: int = 200) -> tuple[TensorImageDataset, TensorImageDataset, Augment]:
    """Ten smooth random class prototypes plus noise: learnable in one epoch, identical on every call."""
    g = torch.Generator().manual_seed(1234)
    protos = F.interpolate(torch.rand(10, 1, 4, 4, generator=g), size=(32, 32), mode="bilinear", align_corners=False)
    protos = (protos - protos.amin(dim=(2, 3), keepdim=True)) / protos.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)

    def sample(n: int) -> TensorImageDataset:
        labels = torch.arange(n) % 10
        x = 0.6 * protos[labels] + 0.4 * torch.rand(n, 1, 32, 32, generator=g)
        return TensorImageDataset((x.clamp(0, 1) * 255).round().to(torch.uint8), labels, (0.5,), (0.25,))

    train, test = sample(n_train), sample(n_test)
    return train, test, RandomCropFlip(2, flip=False, mean=(0.5,), std=(0.25,))


# --- ImageFolder ---------------------------------------------------------------------------------

_FOLDER_STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _image_folder(
    data_dir: str | None, size: int
) -> tuple[Dataset, Dataset, Augment, tuple[int, int, tuple[int, int]]]:
    """``data_dir/train`` and ``data_dir/val`` (or ``test``), one sub-folder per class, read lazily."""
    if not data_dir:
        raise DataError("imagefolder needs --data-dir: a folder with train/ and val/ (or test/) class folders")
    root = Path(data_dir)
    held_out = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or held_out is None:
        raise DataError(f"{root} must hold train/ and val/ (or test/) sub-folders, one folder per class inside")
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(*_FOLDER_STATS)]
    )
    try:
        train, test = ImageFolder(str(root / "train"), transform=tf), ImageFolder(str(held_out), transform=tf)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"cannot read image folder {root}: {exc}") from None
    if train.classes != test.classes:
        raise DataError(f"{root}/train and {held_out} have different class folders: make them match")
    aug = RandomCropFlip(max(1, size // 16), flip=True, mean=_FOLDER_STATS[0], std=_FOLDER_STATS[1])
    return train, test, aug, (3, len(train.classes), (size, size))
