"""What every dataset is made of: the `Dataset` of three fixed, seeded, disjoint splits (owner's training
data, independent data the owner never used, held-out test data) and the attacker's data drawn from the
independent split, the split rules, and the out-of-distribution image sources (crops of the photos shipped
with scikit-learn; key-seeded procedural images). The datasets themselves are registered by name in
`bench.datasets`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from bench.protocols import WmbenchError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_SEED = 0  # the splits never depend on a cell's seed
VERIFICATION_IMAGES = 2000  # held-out images a verifier checks a suspect on (`Dataset.verification`)
OWNER_FRACTION, INDEPENDENT_FRACTION = 0.5, 0.25  # the rest is the held-out test split


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) floats in [0, 1]
    y: torch.Tensor  # (N,) int64 labels

    def __len__(self) -> int:
        return len(self.y)

    def sample(self, n: int, seed: int) -> "Split":
        """`n` of its images (at most all), drawn without replacement with `seed`."""
        keep = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))[:n]
        keep = keep.to(self.y.device)
        return Split(self.x[keep], self.y[keep])


def stratified_subset(split: Split, n: int, seed: int) -> Split:
    """`n` images of `split` (at most all) in the proportions of its classes, drawn without replacement with
    `seed`: each class gets its share of `n` rounded down, the images left over go to the classes with the
    largest remainders (ties to the lower label), and within a class the images are a seeded permutation's
    first. Works for any `n`, even fewer images than classes (then some classes have none)."""
    labels = split.y.cpu().numpy()
    if n >= len(labels):
        return split
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / len(labels)
    take = np.floor(exact).astype(int)
    for i in sorted(range(len(classes)), key=lambda i: (-(exact[i] - take[i]), classes[i]))[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]))
    keep = torch.as_tensor(keep).to(split.y.device)
    return Split(split.x[keep], split.y[keep])


@dataclass(frozen=True)
class Dataset:
    """The splits a run sees. `independent` is data the owner never used: the innocent models are trained on
    all of it, and the attacker's data (`attacker`) is drawn from it. A loader leaves `attacker` out (the
    whole independent split); a run narrows it to its attacker's share (`with_attacker_share`)."""

    name: str
    owner: Split
    independent: Split
    test: Split
    class_names: tuple[str, ...]
    attacker: Split = None  # type: ignore[assignment]  # None: the whole independent split (set below)

    def __post_init__(self) -> None:
        if self.attacker is None:
            object.__setattr__(self, "attacker", self.independent)

    @property
    def channels(self) -> int:
        return self.owner.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.owner.x.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def verification(self) -> Split:
        """The held-out images every verifier checks a suspect on: the test split, or a fixed seeded sample of
        `VERIFICATION_IMAGES` of it when it is larger (Fashion-MNIST's 10,000: a trigger or key test on 2,000
        images has power to spare, and each check costs a fifth). Utility is always the whole test split's."""
        return self.test if len(self.test) <= VERIFICATION_IMAGES else self.test.sample(VERIFICATION_IMAGES, SPLIT_SEED)

    def split(self, name: str) -> Split:
        """The `owner`, `independent`, `attacker` or `test` split."""
        if name not in SPLITS:
            raise WmbenchError(f"unknown data split '{name}'; valid: {', '.join(SPLITS)}")
        return getattr(self, name)

    def attacker_size(self, share: float) -> int:
        """How many images an attacker holding `share` of the owner's training-set size gets: that many,
        at most the whole independent split."""
        return min(round(share * len(self.owner)), len(self.independent))

    def with_attacker_share(self, share: float) -> "Dataset":
        """This dataset with the attacker's data narrowed to `share` of the owner's training-set size: a
        stratified subset of the independent split (`stratified_subset`), seeded with the split seed, never a
        cell's, so every cell and seed of a run attacks with the same images."""
        return replace(self, attacker=stratified_subset(self.independent, self.attacker_size(share), SPLIT_SEED))

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda s: Split(s.x.to(device), s.y.to(device))  # noqa: E731
        independent = move(self.independent)
        attacker = independent if self.attacker is self.independent else move(self.attacker)
        return replace(self, owner=move(self.owner), independent=independent, attacker=attacker,
                       test=move(self.test))


SPLITS = ("owner", "independent", "attacker", "test")


def split_three_ways(x: torch.Tensor, y: torch.Tensor) -> tuple[Split, Split, Split]:
    """The default rule: owner 50 %, independent 25 %, held-out test 25 % (stratified, seeded)."""
    idx = np.arange(len(y))
    owner, rest = train_test_split(idx, train_size=OWNER_FRACTION, stratify=y.numpy(), random_state=SPLIT_SEED)
    independent_share = INDEPENDENT_FRACTION / (1 - OWNER_FRACTION)
    independent, test = train_test_split(
        rest, train_size=independent_share, stratify=y.numpy()[rest], random_state=SPLIT_SEED
    )
    return tuple(Split(x[i], y[i]) for i in map(torch.as_tensor, (owner, independent, test)))


def split_training_set(x: torch.Tensor, y: torch.Tensor, limit: int = 0) -> tuple[Split, Split]:
    """The same rule for a dataset with an official test set: its training set (first a stratified subset of
    `limit` images, when given) split owner 2 : independent 1, as 50 % : 25 % above."""
    idx = np.arange(len(y))
    if limit and limit < len(y):
        idx, _ = train_test_split(idx, train_size=limit, stratify=y.numpy(), random_state=SPLIT_SEED)
    owner, independent = train_test_split(idx, train_size=2 / 3, stratify=y.numpy()[idx], random_state=SPLIT_SEED)
    return tuple(Split(x[i], y[i]) for i in (torch.as_tensor(owner), torch.as_tensor(independent)))


def to_unit_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) 0–255 images → float (N, C, size, size) in [0, 1]."""
    x = torch.tensor(np.asarray(images), dtype=torch.float32) / 255.0  # a copy: IDX arrays are read-only views
    x = x[:, None] if x.dim() == 3 else x
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x


def sample_photo_crops(n: int, size: int, channels: int, seed: int, first_photo: int = 0) -> torch.Tensor:
    """Random crops (of random scale) of the photos shipped with scikit-learn, resized to `size`; crop i
    comes from photo (first_photo + i) mod the number of photos."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(np.array(im)).permute(2, 0, 1).float() / 255 for im in load_sample_images().images]
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for i in range(n):
        photo = photos[(first_photo + i) % len(photos)]
        h, w = photo.shape[1:]
        side = int(torch.randint(size * 2, min(h, w) // 2, (1,), generator=gen))
        top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        crops.append(photo[:, top : top + side, left : left + side])
    out = torch.stack([F.interpolate(c[None], size=(size, size), mode="area")[0] for c in crops])
    return out.mean(1, keepdim=True) if channels == 1 else out


def procedural_images(n: int, size: int, channels: int, seed: int) -> torch.Tensor:
    """Synthetic images no dataset or photo contains, drawn from `seed`: per image, three sinusoidal
    gratings of random orientation, frequency (1–6 cycles per image) and phase, a smooth random field
    (bicubic upsampling of a 4×4 grid) and a random flat rectangle, mixed with random weights and
    stretched to [0, 1]; each colour channel draws its own gratings. VLPMarker's trigger source: a thief
    who queries photos or digits never queries one of these."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    angle, freq, phase = rand(n, channels, 3, 1, 1) * torch.pi, 1 + 5 * rand(n, channels, 3, 1, 1), rand(n, channels, 3, 1, 1)
    gratings = torch.sin(2 * torch.pi * (freq * (xx * angle.cos() + yy * angle.sin()) + phase)).mean(2)
    field = F.interpolate(rand(n, channels, 4, 4) * 2 - 1, size=(size, size), mode="bicubic", align_corners=True)
    corners = (rand(n, 4) * size).long().sort(1).values
    rows, cols = torch.arange(size), torch.arange(size)
    inside = ((rows[None, :, None] >= corners[:, 0, None, None]) & (rows[None, :, None] <= corners[:, 2, None, None])
              & (cols[None, None, :] >= corners[:, 1, None, None]) & (cols[None, None, :] <= corners[:, 3, None, None]))
    rectangle = inside[:, None].float() * (rand(n, channels, 1, 1) * 2 - 1)
    weights = rand(n, 3, 1, 1, 1)
    image = weights[:, 0] * gratings + weights[:, 1] * field + weights[:, 2] * rectangle
    low = image.amin(dim=(1, 2, 3), keepdim=True)
    high = image.amax(dim=(1, 2, 3), keepdim=True)
    return (image - low) / (high - low).clamp(min=1e-6)
