"""Ray executor (`--executor ray --address ...`): every task is a Ray task asking for one CPU, and one GPU
when the cluster has GPUs. Workers share models through the artifact cache, so on a multi-machine
cluster `--cache` must name a folder every node sees (a network file system). Ray is the optional
extra `wmbench[ray]`."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from bench.protocols import WmbenchError

Task = tuple[Any, ...]


class RayExecutor:
    def __init__(self, address: str | None, workers: int):
        self.address = address
        self.workers = workers
        self.started_here = False

    def __enter__(self) -> "RayExecutor":
        try:
            import ray
        except ImportError:
            raise WmbenchError("--executor ray needs Ray: pip install 'wmbench[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.workers}
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kwargs)
            self.started_here = True
        self.gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            self.ray.shutdown()

    def map(self, fn: Callable[..., Any], tasks: list[Task]) -> Iterator[tuple[Task, Any]]:
        remote = self.ray.remote(num_cpus=1, num_gpus=self.gpus)(fn)
        pending = {remote.remote(*args): args for args in tasks}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                args = pending.pop(ref)
                try:
                    yield args, self.ray.get(ref)
                except Exception as e:  # a failed task is its outcome; Ray wraps the original error
                    yield args, getattr(e, "cause", None) or e
