"""scikit-learn's handwritten digits: the embedded default (ships inside the package, nothing downloaded)."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from bench.data import Dataset, split_three_ways
from bench.datasets import DatasetInfo, register_dataset

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@lru_cache(maxsize=4)
def load_digits(size: int = 32) -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8×8, 0–16) upscaled to `size`×`size` in [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    owner, independent, test = split_three_ways(x, y)
    return Dataset("digits", owner, independent, test, DIGIT_NAMES)


register_dataset(DatasetInfo(
    "digits", "scikit-learn's 1,797 handwritten digits, upscaled", 8, 1, DIGIT_NAMES,
    "owner 50 % / independent 25 % / test 25 % of all images (stratified, seeded)",
    lambda argument, size, limit: load_digits(size)))
