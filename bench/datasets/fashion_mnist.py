"""Fashion-MNIST (Xiao et al. 2017): 70,000 28×28 grey product photos, 10 classes, the original IDX files.

Found, in this order: the folder the spec names (`fashion_mnist:<folder>`), Debian's `dataset-fashion-mnist`
package (`/usr/share/datasets/fashion-mnist`), torchvision's layout under the data root
(`<root>/FashionMNIST/raw`); downloaded with torchvision only when WMBENCH_ALLOW_DOWNLOAD=1; otherwise a
one-line error that says how to get it. Splits: the official 60,000 training images (a stratified subset of
the profile's `train_limit`, when set) split owner 2 : independent 1; utility on the official 10,000-image test set."""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.data import Dataset, Split, split_training_set, to_unit_images
from bench.datasets import DatasetInfo, data_root, downloads_allowed, register_dataset
from bench.protocols import WmbenchError

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): zero, zero, a type byte, the number of dimensions, each dimension
    as a big-endian 32-bit integer, then the values."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise WmbenchError(f"not an IDX file: {path}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise WmbenchError(f"truncated IDX file: {path} ({data.size} values for shape {shape})")
    return data.reshape(shape)


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete(folder: Path) -> bool:
    return all(_file(folder, stem) for pair in FILES.values() for stem in pair)


def find_files(folder: str = "") -> Path:
    """The folder holding the four IDX files, searched in the documented order."""
    torchvision_dir = Path(data_root()) / "FashionMNIST" / "raw"
    candidates = [Path(folder)] if folder else [DEBIAN_DIR, torchvision_dir]
    for candidate in candidates:
        if _complete(candidate):
            return candidate
    if folder:
        raise WmbenchError(f"no Fashion-MNIST IDX files in {folder} (want {', '.join(FILES['train'] + FILES['test'])}"
                           f", optionally .gz)")
    if downloads_allowed():
        from torchvision.datasets import FashionMNIST

        FashionMNIST(data_root(), train=True, download=True)
        FashionMNIST(data_root(), train=False, download=True)
        return torchvision_dir
    raise WmbenchError("Fashion-MNIST not found (looked in " + ", ".join(map(str, candidates)) + "): install "
                       "Debian's package (apt-get install dataset-fashion-mnist), name a folder "
                       "(fashion_mnist:<folder>), or allow the download (WMBENCH_ALLOW_DOWNLOAD=1)")


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (read_idx(_file(folder, stem)) for stem in FILES[split])
    if len(images) != len(labels):
        raise WmbenchError(f"Fashion-MNIST {split} images and labels differ in number in {folder}")
    return images, labels


@lru_cache(maxsize=2)
def load_fashion_mnist(folder: str = "", size: int = 32, limit: int = 0) -> Dataset:
    where = find_files(folder)
    (train_x, train_y), (test_x, test_y) = read_split(where, "train"), read_split(where, "test")
    owner, independent = split_training_set(to_unit_images(train_x, size), torch.as_tensor(train_y.astype(np.int64)),
                                         limit)
    test = Split(to_unit_images(test_x, size), torch.as_tensor(test_y.astype(np.int64)))
    return Dataset("fashion_mnist", owner, independent, test, CLASS_NAMES)


register_dataset(DatasetInfo(
    "fashion_mnist", "Fashion-MNIST: 70,000 28×28 grey product photos (Zalando), the original IDX files", 28, 1,
    CLASS_NAMES, "official training set (or a stratified subset) owner 2 : independent 1; official 10,000-image test set",
    lambda argument, size, limit: load_fashion_mnist(argument, size, limit)))
