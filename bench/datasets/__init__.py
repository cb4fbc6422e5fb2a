"""Datasets by name, the timm / open_clip way: each file of this package registers one with
`@register_dataset`, its metadata as data (`DatasetInfo`: image size, channels, class names, how its splits
are made, where it comes from); outside packages register theirs as entry points (group `wmbench.datasets`,
pointing at a `DatasetInfo`). A profile names one by spec: `name`, or `name:<argument>` (a folder path)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from bench.data import Dataset
from bench.plugins import Catalog, instance_of

DATASET_GROUP = "wmbench.datasets"
ALLOW_DOWNLOAD = "WMBENCH_ALLOW_DOWNLOAD"  # "1": loaders may download what is not on disk


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    image_size: int  # native side length in pixels (the profile's image_size resizes to it)
    channels: int
    class_names: tuple[str, ...]
    splits: str  # how the owner / independent / test splits are made (the attacker draws from the independent one)
    load: Callable[[str, int, int], Dataset]  # (argument after ':', image size, training-image limit) → Dataset


_CATALOG: Catalog[DatasetInfo] = Catalog("dataset", DATASET_GROUP, (__name__,), instance_of(DatasetInfo))
register_dataset = _CATALOG.register
reload = _CATALOG.reload
dataset_names = _CATALOG.names
get_dataset_info = _CATALOG.get


def load_dataset(spec: str, size: int = 32, limit: int = 0) -> Dataset:
    """The dataset a spec names (`digits`, `fashion_mnist`, `fashion_mnist:<folder>`, `cifar10:<root>`,
    `folder:<path>`, …) at `size`×`size`, its training set limited to `limit` images when > 0."""
    name, _, argument = spec.partition(":")
    return get_dataset_info(name).load(argument, size, limit)


def downloads_allowed() -> bool:
    return os.environ.get(ALLOW_DOWNLOAD) == "1"


def data_root() -> str:
    """Where downloaded datasets go (torchvision's layout below it): $WMBENCH_DATA or the user cache."""
    from platformdirs import user_cache_dir

    return os.environ.get("WMBENCH_DATA") or os.path.join(user_cache_dir("wmbench"), "data")
