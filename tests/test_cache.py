import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from bench.cache import ArtifactCache, StorageError, atomic_write, digest, load_model_file, save_model_file
from bench.kinds.models import create_model
from bench.protocols import Key, WmbenchError


def small(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("small_cnn", in_channels=1, num_classes=10, width=4)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_model_is_built_once_then_reused(tmp_path):
    cache = ArtifactCache(tmp_path)
    desc = {"role": "test", "n": 1}
    first = cache.model(desc, small)
    second = cache.model(desc, lambda: pytest.fail("rebuilt a cached model"))
    assert cache.builds == 1 and cache.hits == 1
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_descriptor_changes_change_the_address():
    assert digest({"seed": 0}) != digest({"seed": 1})
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def _truncate(data, sidecar, other):
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _flip_a_byte(data, sidecar, other):
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # the same size, one weight altered
    data.write_bytes(bytes(raw))


def _drop_sidecar(data, sidecar, other):
    sidecar.unlink()


def _garble_sidecar(data, sidecar, other):
    sidecar.write_text('{"descriptor": {"role": "te')


def _drop_hash(data, sidecar, other):
    meta = json.loads(sidecar.read_text())
    del meta["sha256"]
    sidecar.write_text(json.dumps(meta))


def _another_entry(data, sidecar, other):  # a consistent entry, but of another descriptor
    shutil.copyfile(other[0], data)
    shutil.copyfile(other[1], sidecar)


CORRUPTIONS = [_truncate, _flip_a_byte, _drop_sidecar, _garble_sidecar, _drop_hash, _another_entry]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_corrupt_model_entry_is_rebuilt_with_a_warning_never_loaded(corrupt, tmp_path):
    cache = ArtifactCache(tmp_path)
    desc, other = {"role": "test", "n": 2}, {"role": "test", "n": 3}
    cache.model(other, lambda: small(1))
    cache.model(desc, small)
    corrupt(*cache._paths(digest(desc)), cache._paths(digest(other)))
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = cache.model(desc, small)
    assert cache.builds == 3 and same_weights(rebuilt, small())
    assert same_weights(cache.model(desc, lambda: pytest.fail("rebuilt a repaired entry")), small())


@pytest.mark.parametrize("corrupt", [_truncate, _flip_a_byte, _drop_sidecar, _another_entry],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_corrupt_key_entry_is_rebuilt_with_a_warning_never_loaded(corrupt, tmp_path):
    cache = ArtifactCache(tmp_path)
    key = Key("null_embedding", 7, {"target": 3}, {"trigger": torch.ones(2, 3)})
    other = Key("null_embedding", 8, {"target": 5}, {"trigger": torch.zeros(2, 3)})
    cache.key({"role": "key", "secret": 8}, lambda: other)
    cache.key({"role": "key", "secret": 7}, lambda: key)
    corrupt(*cache._paths(digest({"role": "key", "secret": 7})), cache._paths(digest({"role": "key", "secret": 8})))
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = cache.key({"role": "key", "secret": 7}, lambda: key)
    assert cache.builds == 3 and (rebuilt.secret, rebuilt.params) == (7, {"target": 3})
    assert torch.equal(cache.load_key({"role": "key", "secret": 7}).tensors["trigger"], torch.ones(2, 3))


def test_a_corrupt_attack_record_reruns_the_attack_with_a_warning(tmp_path):
    """The record says an attack's outcome is complete; a garbled one, one of another attack, or one whose
    value is not a mapping is never trusted: the attack runs again (with a warning), and its result is
    kept for the next call."""
    from bench.config import get_profile
    from bench.context import Context
    from bench.datasets.digits import load_digits

    from bench.protocols import AttackBase

    class Counting(AttackBase):
        name, model_kinds, strengths, version = "counting", ("classifier",), ("a", "b"), "1"

        def __init__(self):
            self.runs: list[str] = []

        def run(self, ctx, model, strength):
            self.runs.append(strength)
            return small(2 if strength == "a" else 3)

    profile = get_profile("smoke")
    cache = ArtifactCache(tmp_path)
    ctx = Context(load_digits(profile.image_size), profile, 0, "classifier", torch.device("cpu"), cache)
    attack, victim = Counting(), small()
    ctx.attacked(attack, victim, "a")
    ctx.attacked(attack, victim, "b")
    records = {json.loads(p.read_text())["descriptor"]["strength"]: p for p in (tmp_path / "records").iterdir()}
    good = records["a"].read_text()
    for corrupt in ('{"descriptor": {"ro', records["b"].read_text(),
                    json.dumps({**json.loads(good), "value": ["pirate_key", False]})):
        records["a"].write_text(corrupt)
        with pytest.warns(UserWarning, match="cache record .* is corrupt"):
            outcome = ctx.attacked(attack, victim, "a")
        assert same_weights(outcome.model, small(2))
    assert attack.runs == ["a", "b", "a", "a", "a"]
    ctx.attacked(attack, victim, "a")
    assert attack.runs == ["a", "b", "a", "a", "a"]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """Only files whose writer is gone go: a live writer's (this process), another host's, another file's stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process now
    host = socket.gethostname()
    path = tmp_path / "leaderboard.csv"
    orphan = tmp_path / f".leaderboard.csv.{host}.{gone.pid}.abc123.tmp"
    live = tmp_path / f".leaderboard.csv.{host}.{os.getpid()}.def456.tmp"
    elsewhere = tmp_path / f".leaderboard.csv.another-host.{gone.pid}.ghi789.tmp"
    other_file = tmp_path / f".claims.csv.{host}.{gone.pid}.jkl012.tmp"
    for p in (orphan, live, elsewhere, other_file):
        p.write_text("half")
    atomic_write(path, lambda p: p.write_text("whole"))
    assert path.read_text() == "whole"
    assert not orphan.exists() and live.exists() and elsewhere.exists() and other_file.exists()


@pytest.mark.parametrize("refusal", [OSError(errno.ENOSPC, "No space left on device"),
                                     OSError(errno.EROFS, "Read-only file system"),
                                     "Error while serializing: I/O error: No space left on device (os error 28)"])
def test_a_write_the_disk_refuses_is_a_storage_error_leaving_nothing(refusal, tmp_path):
    from safetensors import SafetensorError

    error = refusal if isinstance(refusal, OSError) else SafetensorError(refusal)

    def write(p):
        p.write_text("half")
        raise error

    with pytest.raises(StorageError, match=r"cannot write .*leaderboard.csv: (No space|Read-only)"):
        atomic_write(tmp_path / "leaderboard.csv", write)
    assert not list(tmp_path.iterdir())

    def buggy(p):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # any other error is left as it is
        atomic_write(tmp_path / "leaderboard.csv", buggy)
    assert not list(tmp_path.iterdir())


def test_key_round_trip(tmp_path):
    key = Key("null_embedding", 7, {"bits": [[1, 0]], "target": 3}, {"trigger": torch.ones(2, 3)})
    key.save(tmp_path / "k.safetensors")
    back = Key.load(tmp_path / "k.safetensors")
    assert (back.defense, back.secret, back.params) == (key.defense, key.secret, key.params)
    assert torch.equal(back.tensors["trigger"], key.tensors["trigger"])


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(WmbenchError, match="not found"):
        Key.load(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(WmbenchError, match="not a wmbench model file"):
        load_model_file(tmp_path / "junk.safetensors")


def test_model_file_round_trip(tmp_path):
    model = small()
    save_model_file(model, tmp_path / "m.safetensors")
    back = load_model_file(tmp_path / "m.safetensors")
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), back(x))


def test_builders_in_two_processes_build_once(tmp_path):
    """Two processes ask for the same missing model, the second only once the first is building, and the
    first finishes only once the second has reached the entry's lock: the lock alone keeps the second from
    building (tests/faultkit.py `build_racing`)."""
    import multiprocessing

    import faultkit

    spawn = multiprocessing.get_context("spawn")
    building, contending, results = spawn.Event(), spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=faultkit.build_racing, args=(str(tmp_path), role, building, contending, results))
             for role in ("first", "second")]
    for p in procs:
        p.start()
    got = {}
    for _ in procs:
        role, builds, weights = results.get(timeout=faultkit.HANDSHAKE_TIMEOUT_S)
        got[role] = (builds, weights)
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert got["first"][0] == 1 and got["second"][0] == 0 and got["first"][1] == got["second"][1]


def test_weights_digest_follows_the_weights_not_the_object():
    from bench.cache import weights_digest
    from bench.kinds.models import clone

    model = small()
    twin = clone(model)
    assert weights_digest(model) == weights_digest(twin)
    with torch.no_grad():
        twin.head.bias[0] += 1e-6
    assert weights_digest(model) != weights_digest(twin)


def test_attack_budgets_do_not_address_clean_models(make_ctx):
    """Changing what only attacks read keeps every clean (and so every marked) model; a training budget of
    the models themselves does not."""
    import dataclasses

    ctx = make_ctx("classifier", 0)
    base = ctx.base_descriptor(0)
    cheaper_attacks = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, attack_epochs=1,
                                                                           extraction_epochs=2))
    longer_training = dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, classifier_epochs=1))
    assert digest(cheaper_attacks.base_descriptor(0)) == digest(base)
    assert digest(longer_training.base_descriptor(0)) != digest(base)
