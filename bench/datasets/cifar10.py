"""CIFAR-10 (Krizhevsky 2009): 60,000 32×32 colour photos, 10 classes, in its original on-disk format (the
`cifar-10-batches-py` folder of pickled batches that torchvision's `CIFAR10` downloads and reads).

`cifar10:<root>` reads `<root>/cifar-10-batches-py`; `cifar10` alone reads it under the data root, where
torchvision downloads it when WMBENCH_ALLOW_DOWNLOAD=1; otherwise a one-line error. The batches are read
here (a dict with `data`, N×3072 bytes, and `labels`) rather than through `torchvision.datasets.CIFAR10`,
whose integrity check accepts only the full official files. Splits as Fashion-MNIST's: the 50,000 training
images (or a subset) owner 2 : independent 1, utility on the official 10,000-image test batch."""
from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.data import Dataset, Split, split_training_set, to_unit_images
from bench.datasets import DatasetInfo, data_root, downloads_allowed, register_dataset
from bench.protocols import WmbenchError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def read_batches(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        try:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError) as e:
            raise WmbenchError(f"CIFAR-10 batch {folder / name} unreadable ({e.__class__.__name__})") from None
    return np.concatenate(images), np.concatenate(labels)


def find_folder(root: str = "") -> Path:
    folder = Path(root or data_root()) / FOLDER
    if all((folder / name).is_file() for name in TRAIN_BATCHES + (TEST_BATCH,)):
        return folder
    if not root and downloads_allowed():
        from torchvision.datasets import CIFAR10

        CIFAR10(data_root(), train=True, download=True)
        return folder
    raise WmbenchError(f"CIFAR-10 not found in {folder}: name the folder that holds {FOLDER} (cifar10:<root>) or "
                       f"allow the download (WMBENCH_ALLOW_DOWNLOAD=1)")


@lru_cache(maxsize=2)
def load_cifar10(root: str = "", size: int = 32, limit: int = 0) -> Dataset:
    folder = find_folder(root)
    train_x, train_y = read_batches(folder, TRAIN_BATCHES)
    test_x, test_y = read_batches(folder, (TEST_BATCH,))
    owner, independent = split_training_set(to_unit_images(train_x, size), torch.as_tensor(train_y), limit)
    test = Split(to_unit_images(test_x, size), torch.as_tensor(test_y))
    return Dataset("cifar10", owner, independent, test, CLASS_NAMES)


register_dataset(DatasetInfo(
    "cifar10", "CIFAR-10: 60,000 32×32 colour photos, the original python batches", 32, 3, CLASS_NAMES,
    "official training set (or a stratified subset) owner 2 : independent 1; official 10,000-image test batch",
    lambda argument, size, limit: load_cifar10(argument, size, limit)))
