"""Datasets by name, the timm / open_clip way: each file of this package registers one with
`@register_dataset`, its metadata as data (`DatasetInfo`: image size, channels, class names, how its splits
are made, where it comes from); outside packages register theirs as entry points (group `wmbench.datasets`,
pointing at a `DatasetInfo`). A profile names one by spec: `name`, or `name:<argument>` (a folder path)."""
from __future__ import annotations

import importlib
import os
import pkgutil
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

from bench.data import Dataset
from bench.protocols import WmbenchError

DATASET_GROUP = "wmbench.datasets"
ALLOW_DOWNLOAD = "WMBENCH_ALLOW_DOWNLOAD"  # "1": loaders may download what is not on disk


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    image_size: int  # native side length in pixels (the profile's image_size resizes to it)
    channels: int
    class_names: tuple[str, ...]
    splits: str  # how the owner / attacker / test splits are made
    load: Callable[[str, int, int], Dataset]  # (argument after ':', image size, training-image limit) → Dataset


_DATASETS: dict[str, DatasetInfo] = {}
_plugins: set[str] = set()  # names added from entry points
_loaded = False


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    if info.name in _DATASETS and _DATASETS[info.name] is not info:
        raise WmbenchError(f"dataset '{info.name}' is registered twice")
    _DATASETS[info.name] = info
    return info


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for ep in metadata.entry_points(group=DATASET_GROUP):
        try:
            info = ep.load()
            if not isinstance(info, DatasetInfo):
                raise TypeError(f"{ep.value} is not a bench.datasets.DatasetInfo")
            if info.name not in _DATASETS:
                _DATASETS[info.name] = info
                _plugins.add(info.name)
        except Exception as e:  # a broken plugin must not take the rest down
            warnings.warn(f"plugin '{ep.name}' ({DATASET_GROUP}) failed to load: {e.__class__.__name__}: {e}",
                          stacklevel=2)


def reload() -> None:
    """Forget the entry-point plugins and load everything again (tests, after installing a plugin)."""
    global _loaded
    _loaded = False
    for name in _plugins:
        _DATASETS.pop(name, None)
    _plugins.clear()
    _load_all()


def dataset_names() -> list[str]:
    _load_all()
    return sorted(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    _load_all()
    if name not in _DATASETS:
        raise WmbenchError(f"unknown dataset '{name}'; valid: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


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
