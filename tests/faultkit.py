"""Fault injection for tests/test_faults.py and tests/test_cache.py: callables that stand in for a runner
task inside worker processes (so they live in an importable module, not in a test file), a child process for
the cache's lock test, and a driver that runs `wmbench` with a pause point.

    python tests/faultkit.py --pause POINT --handshake DIR -- run --profile smoke ...

runs the CLI in this process, and at POINT (`cell:N`: the start of the N-th cell; `cache:N`: the N-th cache
data file, written but not yet renamed into place; `sidecar:N`, `record:N`, `publish:N`: the N-th cache
sidecar, attack record, leaderboard.md, likewise) creates DIR/paused and waits until DIR/go exists (or it
is killed). POINT `each-cell` instead pauses every cell in the worker processes (`PauseEachCell`). Every
wait here is on a condition another process creates (a file, an event), never a sleep that hopes for an
overlap."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

HANDSHAKE_TIMEOUT_S = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Poll `condition` until it holds (a handshake with another process), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pause(handshake: Path) -> None:
    """Say 'paused', and wait for 'go' (or to be killed)."""
    (handshake / "paused").touch()
    wait_for((handshake / "go").exists, "the test's go", timeout=600)


class DieOn:
    """Stands in for `bench.runner.run_cell` in a worker: the worker dies (SIGKILL, as the kernel's OOM killer
    does) on `strength`; other cells run normally."""

    def __init__(self, strength: str):
        self.strength = strength

    def __call__(self, cfg: Any, cell: Any) -> Any:
        from bench import runner

        if cell.strength == self.strength:
            os.kill(os.getpid(), signal.SIGKILL)
        return runner.run_cell(cfg, cell)


class PauseEachCell:
    """Stands in for `bench.runner.run_cell` in a worker: announces the cell (`DIR/started-<strength>`), waits
    until `DIR/go` exists, then runs it."""

    def __init__(self, handshake: Path):
        self.handshake = Path(handshake)

    def __call__(self, cfg: Any, cell: Any) -> Any:
        from bench import runner

        (self.handshake / f"started-{cell.strength}").touch()
        wait_for((self.handshake / "go").exists, "the test's go")
        return runner.run_cell(cfg, cell)


def build_racing(root: str, role: str, building: Any, contending: Any, results: Any) -> None:
    """One of two processes asking the cache for the same missing model (tests/test_cache.py). The `first`
    builds, and holds its build until the `second` has reached the entry's lock (or, were there no lock,
    started a build of its own); the second starts once the first is building. Each puts (role, builds,
    weights digest) on `results` (a string: a tensor would be shared through this process, which may be gone
    when it is read)."""
    import torch

    from bench import cache as cache_module
    from bench.cache import ArtifactCache, weights_digest
    from bench.kinds.models import create_model

    def model() -> torch.nn.Module:
        torch.manual_seed(0 if role == "first" else 1)  # a second build would differ: it cannot go unseen
        return create_model("small_cnn", in_channels=1, num_classes=10, width=4)

    def build() -> torch.nn.Module:
        if role == "first":
            building.set()
            if not contending.wait(HANDSHAKE_TIMEOUT_S):
                raise TimeoutError("the second process never reached the lock")
        else:
            contending.set()
        return model()

    class AnnouncedLock(cache_module.FileLock):  # the second says when it is about to wait for the lock
        def acquire(self, *args: Any, **kwargs: Any) -> Any:
            if role == "second":
                contending.set()
            return super().acquire(*args, **kwargs)

    cache_module.FileLock = AnnouncedLock
    if role == "second" and not building.wait(HANDSHAKE_TIMEOUT_S):
        raise TimeoutError("the first process never started its build")
    cache = ArtifactCache(root)
    got = cache.model({"role": "race"}, build)
    results.put((role, cache.builds, weights_digest(got)))


def _pause_points(point: str, handshake: Path) -> None:
    """Install the pause at `point` (see the module's docstring) in this process."""
    from bench import cache, publish, report, runner, site

    where, _, nth = point.partition(":")
    n = int(nth or 1)
    seen = {"count": 0}

    def reached() -> bool:
        seen["count"] += 1
        return seen["count"] == n

    if where == "each-cell":
        import faultkit  # this file as a module: what the spawned workers can unpickle

        runner.run_cell = faultkit.PauseEachCell(handshake)
        return
    if where == "cell":
        real_cell = runner.run_cell

        def run_cell(cfg: Any, cell: Any) -> Any:
            if reached():
                pause(handshake)
            return real_cell(cfg, cell)

        runner.run_cell = run_cell
        return
    matches = {"cache": lambda p: p.suffix == ".safetensors",
               "sidecar": lambda p: p.suffix == ".json" and p.parent.name != "records",
               "record": lambda p: p.parent.name == "records", "publish": lambda p: p.name == "leaderboard.md"}[where]
    real_write = cache.atomic_write

    def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
        if not (matches(Path(path)) and reached()):
            return real_write(path, write)

        def write_then_pause(tmp: Path) -> None:
            write(tmp)
            pause(handshake)

        return real_write(path, write_then_pause)

    for module in (cache, publish, report, site):
        module.atomic_write = atomic_write


def main(argv: list[str]) -> int:
    from bench.cli import main as cli

    split = argv.index("--")
    options, args = argv[:split], argv[split + 1:]
    point = options[options.index("--pause") + 1]
    handshake = Path(options[options.index("--handshake") + 1])
    _pause_points(point, handshake)
    return cli(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
