"""Shared fixtures: one artifact cache for the whole test session, so each model is trained once."""
from __future__ import annotations

import pytest
import torch

from bench.cache import ArtifactCache
from bench.config import RunConfig, get_profile
from bench.context import Context
from bench.data import load_digits


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def make_ctx(cache_dir):
    """Context factory: make_ctx(kind, seed) on CPU with the default profile and the shared cache."""
    cache = ArtifactCache(cache_dir)

    def make(kind: str, seed: int = 0) -> Context:
        return Context(load_digits(), get_profile("default"), seed, kind, torch.device("cpu"), cache)

    return make


@pytest.fixture
def run_config(cache_dir, tmp_path):
    def make(**kw) -> RunConfig:
        return RunConfig(**{"seeds": 1, "out": tmp_path / "out", "cache": cache_dir, "device": "cpu", **kw})

    return make
