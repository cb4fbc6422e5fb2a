import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import _split, load_dataset, load_digits, load_image_folder, sample_photo_crops
from bench.protocols import WmbenchError


def test_splits_are_disjoint_and_cover_everything():
    x = torch.arange(200, dtype=torch.float32).view(200, 1, 1, 1)  # each "image" is its own index
    owner, attacker, test = _split(x, torch.arange(200) % 10)
    ids = [set(s.x.flatten().tolist()) for s in (owner, attacker, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 200 and [len(i) for i in ids] == [100, 50, 50]


def test_digits_are_fixed_and_in_range():
    d = load_digits()
    assert len(d.owner) + len(d.attacker) + len(d.test) == 1797 and d.owner.x.shape[1:] == (1, 32, 32)
    assert 0 <= float(d.owner.x.min()) and float(d.owner.x.max()) <= 1
    load_digits.cache_clear()
    assert torch.equal(load_digits().test.x, d.test.x)  # the same split every time


def test_photo_crops_are_seeded():
    a, b = sample_photo_crops(4, 32, 3, seed=1), sample_photo_crops(4, 32, 3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, sample_photo_crops(4, 32, 3, seed=2))


def test_image_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path}", size=16)
    assert d.class_names == ("cat", "dog") and d.channels == 3 and d.image_size == 16
    assert len(d.owner) + len(d.attacker) + len(d.test) == 24
    with pytest.raises(WmbenchError, match="image folder not found"):
        load_image_folder(tmp_path / "missing")
