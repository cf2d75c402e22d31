"""Datasets: shapes, a deterministic and disjoint validation split, and one-line errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwprune import data as data_mod
from hwprune.data import SYSTEM_FASHION_MNIST, TensorImageDataset, load_data, make_loader
from hwprune.errors import ConfigError, DataError


def _rows(ds: TensorImageDataset) -> set[bytes]:
    return {img.numpy().tobytes() for img in ds.images}


def test_synthetic_shapes_and_loader() -> None:
    bundle = load_data("synthetic")
    assert (bundle.in_channels, bundle.num_classes, bundle.input_size) == (1, 10, (32, 32))
    x, y = bundle.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    xb, yb = next(iter(make_loader(bundle.train, 64, shuffle=True, seed=0)))
    assert xb.shape == (64, 1, 32, 32) and yb.shape == (64,) and yb.dtype == torch.int64
    assert bundle.augment is not None
    assert bundle.augment(xb, torch.Generator().manual_seed(0)).shape == xb.shape


def test_val_split_is_seeded_and_disjoint_from_train() -> None:
    a, b, other = load_data("synthetic", seed=3), load_data("synthetic", seed=3), load_data("synthetic", seed=4)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.images, b.train.images)
    assert not torch.equal(a.val.images, other.val.images)
    assert not _rows(a.val) & _rows(a.train)
    assert len(a.val) + len(a.train) == len(_rows(a.val) | _rows(a.train)) == 600
    assert not _rows(a.test) & (_rows(a.train) | _rows(a.val))


def test_val_size_fraction_and_limit_train() -> None:
    bundle = load_data("synthetic", val_size=0.25, limit_train=100)
    assert (len(bundle.val), len(bundle.train)) == (150, 100)
    with pytest.raises(ConfigError):
        load_data("synthetic", val_size=0)


def test_loader_order_depends_only_on_seed() -> None:
    ds = load_data("synthetic").train
    first = [next(iter(make_loader(ds, 32, shuffle=True, seed=s)))[1] for s in (7, 7, 8)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_loads_padded_to_32() -> None:
    bundle = load_data("fashion-mnist")
    assert len(bundle.train) + len(bundle.val) == 60000 and len(bundle.val) == 5000
    assert len(bundle.test) == 10000
    x, y = bundle.test[0]
    assert x.shape == (1, 32, 32) and bundle.input_size == (32, 32)
    assert set(bundle.test.labels.unique().tolist()) == set(range(10))


def test_nonexistent_data_dir_is_one_line_with_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir") as info:
        load_data("fashion-mnist", data_dir=str(tmp_path / "nope"))
    assert "\n" not in str(info.value)


def test_fashion_mnist_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "SYSTEM_FASHION_MNIST", tmp_path / "system")
    monkeypatch.setattr(data_mod, "DOWNLOAD_CACHE", tmp_path / "cache")
    monkeypatch.setattr(data_mod, "_download_fashion_mnist", lambda root: None)  # offline
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist, or pass --data-dir") as info:
        load_data("fashion-mnist", data_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_idx_file_is_a_data_error(tmp_path: Path) -> None:
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (tmp_path / name).write_bytes(b"not gzip")
    with pytest.raises(DataError, match="re-install or re-download"):
        load_data("fashion-mnist", data_dir=str(tmp_path))


def test_unknown_dataset_suggests_a_name() -> None:
    with pytest.raises(DataError, match="did you mean fashion-mnist"):
        load_data("fashion_mnist")


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_folder_datasets_need_a_data_dir(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_data(name)
    with pytest.raises(DataError):
        load_data(name, data_dir=str(tmp_path))


def test_imagefolder_resizes_and_splits(tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 10), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (i * 20, 100, 200 if cls == "cat" else 0)).save(folder / f"{i}.png")
    bundle = load_data("imagefolder", data_dir=str(tmp_path), val_size=0.2)
    assert (bundle.in_channels, bundle.num_classes, bundle.input_size) == (3, 2, (32, 32))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (16, 4, 4)
    xb, yb = next(iter(make_loader(bundle.train, 8, shuffle=True)))
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8,)
