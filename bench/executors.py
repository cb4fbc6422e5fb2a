"""Executors spread independent tasks over workers: `serial` (in this process), `local` (worker
processes, one per core by default) and `ray`
(a Ray cluster; optional extra). Each yields (args, outcome) pairs as tasks finish; an exception
raised by a task comes back as its outcome instead of stopping the others."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Protocol

from bench.protocols import WmbenchError

Task = tuple[Any, ...]


class Executor(Protocol):
    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: object) -> None: ...

    def map(self, fn: Callable[..., Any], tasks: list[Task]) -> Iterator[tuple[Task, Any]]: ...


class SerialExecutor:
    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn: Callable[..., Any], tasks: list[Task]) -> Iterator[tuple[Task, Any]]:
        for args in tasks:
            try:
                yield args, fn(*args)
            except Exception as e:
                yield args, e


class LocalExecutor:
    """Worker processes (spawned, so each has a clean torch) on this machine; each task uses one torch
    thread (see `bench.runner.runner_task`), so as many workers as cores fill the machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "LocalExecutor":
        self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.pool is not None
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable[..., Any], tasks: list[Task]) -> Iterator[tuple[Task, Any]]:
        assert self.pool is not None, "use the executor as a context manager"
        futures: dict[Future, Task] = {self.pool.submit(fn, *args): args for args in tasks}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in done:
                args = futures.pop(f)
                error = f.exception()
                yield args, (error if error is not None else f.result())


def make_executor(name: str, workers: int = 1, address: str | None = None) -> Executor:
    if name == "local":
        return SerialExecutor() if workers == 1 else LocalExecutor(workers)
    if name == "serial":
        return SerialExecutor()
    if name == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(address, workers)
    raise WmbenchError(f"unknown executor '{name}'; valid: local, serial, ray")
