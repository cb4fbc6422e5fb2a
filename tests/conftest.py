"""Shared fixtures: one artifact cache for the whole test session, so each model is trained once."""
from __future__ import annotations

import dataclasses
import os

from bench.portable import pin_kernels

pin_kernels()  # before torch loads: the tests train with the kernels a portable run uses (bench/portable.py); on
# another CPU family the models can differ, so margins are sized for that; the tests' own subprocesses inherit it

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.cache import ArtifactCache  # noqa: E402
from bench.config import RunConfig, get_profile  # noqa: E402
from bench.context import Context  # noqa: E402
from bench.datasets.digits import load_digits  # noqa: E402


torch.set_num_threads(1)  # as every runner task does: numbers must not depend on who trained a model


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One artifact cache for the whole test run. Under pytest-xdist (`make test` runs a worker per core) the
    workers share it: its build locks let one worker train a model while another that needs it waits."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    path = root / "cache"
    path.mkdir(exist_ok=True)
    return str(path)


@pytest.fixture(scope="session")
def make_ctx(cache_dir):
    """Context factory: make_ctx(kind, seed) on CPU with the default profile and the shared cache."""
    cache = ArtifactCache(cache_dir)

    def make(kind: str, seed: int = 0) -> Context:
        profile = get_profile("default")
        return Context(load_digits(profile.image_size), profile, seed, kind, torch.device("cpu"), cache)

    return make


@pytest.fixture(scope="session")
def make_marked(make_ctx):
    """make_marked(defense, kind, secret) → (defense, ctx, key, marked model), the model cached."""
    from bench.registry import get_defense

    def make(defense_name: str, kind: str, secret: int):
        defense = get_defense(defense_name)
        ctx = dataclasses.replace(make_ctx(kind, 0), defense=defense_name)
        key = defense.make_key(ctx, secret=secret)
        model = ctx.cache.model({"test": f"{defense_name}_marked", "secret": secret},
                                lambda: defense.watermark(ctx, key))
        return defense, ctx, key, model

    return make


@pytest.fixture
def run_config(cache_dir, tmp_path):
    def make(**kw) -> RunConfig:
        return RunConfig(**{"seeds": 1, "out": tmp_path / "out", "cache": cache_dir, "device": "cpu", "workers": 1,
                            **kw})

    return make


@pytest.fixture
def plugin_entry_point(monkeypatch):
    """plugin_entry_point(group, obj): install `obj` as the one entry point of `group`, as an outside package
    would (a module `wmbench_test_plugin` holding it); undone after the test."""
    import sys
    import types
    from importlib import metadata

    def install(group: str, obj: object) -> None:
        module = types.ModuleType("wmbench_test_plugin")
        module.PLUGIN = obj
        monkeypatch.setitem(sys.modules, "wmbench_test_plugin", module)
        eps = [metadata.EntryPoint("test_plugin", "wmbench_test_plugin:PLUGIN", group)]
        real = metadata.entry_points
        monkeypatch.setattr(metadata, "entry_points",
                            lambda group=None, **kw: [e for e in eps if e.group == group] if group else real(**kw))

    return install
