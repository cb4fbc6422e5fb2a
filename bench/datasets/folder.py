"""A user's own images: `folder:<root>` with one subfolder per class."""
from __future__ import annotations

from pathlib import Path

import torch

from bench.data import Dataset, split_three_ways
from bench.datasets import DatasetInfo, register_dataset
from bench.protocols import WmbenchError


def load_image_folder(root: str | Path, size: int = 32) -> Dataset:
    """`root/<class name>/<image files>`, resized to `size`×`size` RGB."""
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise WmbenchError(f"image folder not found: {root}")
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    try:
        folder = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise WmbenchError(f"not a class-per-subfolder image folder: {root} ({e})") from None
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    y = torch.as_tensor(folder.targets, dtype=torch.int64)
    owner, independent, test = split_three_ways(x, y)
    names = tuple(c.replace("_", " ") for c in folder.classes)
    return Dataset(root.name, owner, independent, test, names)


register_dataset(DatasetInfo(
    "folder", "your own images: folder:<root>/<class name>/<image files>", 0, 3, (),
    "owner 50 % / independent 25 % / test 25 % of all images (stratified, seeded)",
    lambda argument, size, limit: load_image_folder(argument, size)))
