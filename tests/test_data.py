import numpy as np
import pytest
import torch
from PIL import Image

from bench import datasets
from bench.data import VERIFICATION_IMAGES, Dataset, Split, sample_photo_crops, split_three_ways
from bench.datasets import cifar10, fashion_mnist, load_dataset
from bench.datasets.digits import load_digits
from bench.datasets.folder import load_image_folder
from bench.protocols import WmbenchError


def test_splits_are_disjoint_and_cover_everything():
    x = torch.arange(200, dtype=torch.float32).view(200, 1, 1, 1)  # each "image" is its own index
    owner, attacker, test = split_three_ways(x, torch.arange(200) % 10)
    ids = [set(s.x.flatten().tolist()) for s in (owner, attacker, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 200 and [len(i) for i in ids] == [100, 50, 50]


def test_digits_are_fixed_and_in_range():
    d = load_digits()
    assert len(d.owner) + len(d.attacker) + len(d.test) == 1797 and d.owner.x.shape[1:] == (1, 32, 32)
    assert 0 <= float(d.owner.x.min()) and float(d.owner.x.max()) <= 1
    load_digits.cache_clear()
    assert torch.equal(load_digits().test.x, d.test.x)  # the same split every time


def test_verification_images_are_the_test_split_or_a_fixed_sample_of_it():
    d = load_digits()
    assert d.verification is d.test  # 450 held-out images: all of them
    x = torch.arange(3000, dtype=torch.float32).view(3000, 1, 1, 1)  # each "image" is its own index
    big = Dataset("big", d.owner, d.attacker, Split(x, torch.arange(3000) % 10), d.class_names)
    sample = big.verification.x.flatten()
    assert len(sample) == VERIFICATION_IMAGES and len(set(sample.tolist())) == VERIFICATION_IMAGES
    again = Dataset("big", d.owner, d.attacker, Split(x, torch.arange(3000) % 10), d.class_names)
    assert torch.equal(again.verification.x.flatten(), sample)  # the same images for every check and run


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


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file as the original Fashion-MNIST / MNIST files are written."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def fashion_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        images, labels = fashion_mnist.FILES[split]
        write_idx(tmp_path / f"{images}.gz", rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(tmp_path / labels, np.arange(n) % 10)
    return tmp_path


def test_idx_reader_reads_what_the_format_says(fashion_folder):
    images = fashion_mnist.read_idx(fashion_folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    assert list(fashion_mnist.read_idx(fashion_folder / "t10k-labels-idx1-ubyte")[:3]) == [0, 1, 2]
    (fashion_folder / "broken").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09\x01")
    with pytest.raises(WmbenchError, match="truncated IDX file"):
        fashion_mnist.read_idx(fashion_folder / "broken")


def test_fashion_mnist_loads_from_a_named_folder(fashion_folder):
    d = load_dataset(f"fashion_mnist:{fashion_folder}", size=32)
    assert d.class_names[0] == "t-shirt" and d.owner.x.shape[1:] == (1, 32, 32)
    assert (len(d.owner), len(d.attacker), len(d.test)) == (40, 20, 20)  # train 2 : 1, the official test set
    limited = load_dataset(f"fashion_mnist:{fashion_folder}", size=28, limit=30)
    assert (len(limited.owner), len(limited.attacker)) == (20, 10) and limited.image_size == 28


def test_missing_fashion_mnist_is_one_line_naming_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("WMBENCH_DATA", str(tmp_path / "no-root"))
    monkeypatch.delenv(datasets.ALLOW_DOWNLOAD, raising=False)
    with pytest.raises(WmbenchError) as error:
        fashion_mnist.find_files()
    message = str(error.value)
    assert "\n" not in message and "dataset-fashion-mnist" in message and "WMBENCH_ALLOW_DOWNLOAD" in message
    with pytest.raises(WmbenchError, match="no Fashion-MNIST IDX files in"):
        fashion_mnist.find_files(str(tmp_path))


@pytest.mark.skipif(not fashion_mnist._complete(fashion_mnist.DEBIAN_DIR),
                    reason="Debian's dataset-fashion-mnist package is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_fashion_mnist_files():
    d = load_dataset("fashion_mnist", size=32, limit=3000)
    assert len(d.test) == 10_000 and (len(d.owner), len(d.attacker)) == (2000, 1000)
    assert set(d.test.y.tolist()) == set(range(10))


def test_cifar10_reads_the_original_batches(tmp_path):
    import pickle

    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in cifar10.TRAIN_BATCHES + (cifar10.TEST_BATCH,):
        batch = {b"data": rng.integers(0, 256, (12, 3072), dtype=np.uint8), b"labels": list(np.arange(12) % 10)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    d = load_dataset(f"cifar10:{tmp_path}", size=32)
    assert d.channels == 3 and len(d.test) == 12 and len(d.owner) + len(d.attacker) == 60
    assert d.class_names[3] == "cat"
    with pytest.raises(WmbenchError, match="CIFAR-10 not found"):
        load_dataset(f"cifar10:{tmp_path / 'elsewhere'}")


def test_a_dataset_registers_by_entry_point(plugin_entry_point, monkeypatch):
    plugin_entry_point(datasets.DATASET_GROUP, datasets.DatasetInfo(
        "tiny_plugin", "a test dataset", 8, 1, ("a", "b"), "all owner", lambda argument, size, limit: load_digits(size)))
    datasets.reload()
    try:
        assert "tiny_plugin" in datasets.dataset_names() and "fashion_mnist" in datasets.dataset_names()
        assert load_dataset("tiny_plugin").name == "digits"
    finally:
        monkeypatch.undo()
        datasets.reload()
    with pytest.raises(WmbenchError, match="unknown dataset 'tiny_plugin'"):
        load_dataset("tiny_plugin")
