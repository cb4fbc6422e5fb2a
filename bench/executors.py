"""Executors spread independent tasks over workers: `serial` (in this process), `local` (worker
processes, one per core by default) and `ray`
(a Ray cluster; optional extra). Each yields (args, outcome) pairs as tasks finish; an exception
raised by a task comes back as its outcome instead of stopping the others. Tasks are drawn from the
iterable as workers free up (serial, local), so a caller that stops handing them out stops the map after
the tasks in flight."""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Protocol

from bench.protocols import WmbenchError

Task = tuple[Any, ...]


class Executor(Protocol):
    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: object) -> None: ...

    def map(self, fn: Callable[..., Any], tasks: Iterable[Task]) -> Iterator[tuple[Task, Any]]: ...


class SerialExecutor:
    def __enter__(self) -> "SerialExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(self, fn: Callable[..., Any], tasks: Iterable[Task]) -> Iterator[tuple[Task, Any]]:
        for args in tasks:
            try:
                yield args, fn(*args)
            except Exception as e:
                yield args, e


def _ignore_interrupts() -> None:
    """Worker processes leave Ctrl-C to the parent, which lets their tasks in flight finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """Worker processes (spawned, so each has a clean torch) on this machine; each task uses one torch
    thread (see `bench.runner.runner_task`), so as many workers as cores fill the machine. At most one
    task per worker is in flight. A worker that dies (killed, out of memory) fails the tasks in flight with
    BrokenProcessPool; a fresh pool takes the rest."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_ignore_interrupts)

    def __enter__(self) -> "LocalExecutor":
        self.pool = self._start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self.pool is not None
        if exc_type is not None:  # stopped early (Ctrl-C twice, a full disk): the workers ignore SIGINT
            for process in list((self.pool._processes or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, fn: Callable[..., Any], args: Task) -> Future:
        assert self.pool is not None, "use the executor as a context manager"
        try:
            return self.pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died: its tasks came back failed; a fresh pool takes the rest
            broken, self.pool = self.pool, self._start()
            broken.shutdown(wait=False, cancel_futures=True)
            return self.pool.submit(fn, *args)

    def map(self, fn: Callable[..., Any], tasks: Iterable[Task]) -> Iterator[tuple[Task, Any]]:
        todo = iter(tasks)
        running: dict[Future, Task] = {}
        while True:
            while len(running) < self.workers and (args := next(todo, None)) is not None:
                running[self._submit(fn, args)] = args
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                args = running.pop(future)
                error = future.exception()
                yield args, (error if error is not None else future.result())


def make_executor(name: str, workers: int = 1, address: str | None = None) -> Executor:
    if name == "local":
        return SerialExecutor() if workers == 1 else LocalExecutor(workers)
    if name == "serial":
        return SerialExecutor()
    if name == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(address, workers)
    raise WmbenchError(f"unknown executor '{name}'; valid: local, serial, ray")
