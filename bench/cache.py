"""Content-addressed artifact cache: models and keys stored once under the hash of everything that
determines them, as safetensors plus a JSON sidecar (recipe, descriptor, file hash), and small JSON
records. Nothing is pickled. A corrupt entry of any kind (a truncated or altered data file, a missing or
unreadable sidecar, a sidecar or record of another descriptor) is rebuilt with a warning, never loaded. A
build holds a file lock on its entry, so worker processes (or machines sharing the folder) that need the
same artifact at the same time build it once: the others wait and load it. Every file is written through a
temporary file and a rename (`atomic_write`); a disk that refuses a write raises `StorageError`."""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator

import platformdirs
import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bench.protocols import Key, WmbenchError

CACHE_FORMAT = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


def default_cache_dir() -> Path:
    return Path(os.environ.get("WMBENCH_CACHE") or platformdirs.user_cache_dir("wmbench"))


def digest(descriptor: dict[str, Any]) -> str:
    text = json.dumps({"format": CACHE_FORMAT, **descriptor}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def weights_digest(model: nn.Module) -> str:
    """A hash of a model's recipe and every weight and buffer: equal for bit-identical models, however
    they were made (so work on a model can be shared by everything that holds the same weights)."""
    h = hashlib.sha256(json.dumps(getattr(model, "spec", None), sort_keys=True, default=str).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


class Memo:
    """A small in-process memo for values derived from a model's weights (keyed by `weights_digest`): one
    suspect is checked against many keys in a cell; beyond `size` entries the oldest is dropped."""

    def __init__(self, size: int):
        self.size = size
        self.items: dict[Any, Any] = {}

    def __call__(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.items:
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = make()
        return self.items[key]

    def clear(self) -> None:
        self.items.clear()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class StorageError(WmbenchError):
    """The disk refused a write (full, read-only, no permission): a fault of the machine, not of a method,
    so it stops a run in one line instead of failing its cells."""


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
_HOST = socket.gethostname()


def storage_errno(error: BaseException) -> int | None:
    """The errno of a write the disk refused: an OSError's, or the one in the text of the Rust I/O errors
    that safetensors raises ('... No space left on device (os error 28)'); None for any other error."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None and not isinstance(error, WmbenchError):
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    return code if code in _STORAGE_ERRNOS else None


@contextmanager
def disk_refusals(path: Path) -> Iterator[None]:
    """Inside, an error of a write the disk refused becomes the StorageError of writing `path`; any other
    error passes unchanged."""
    try:
        yield
    except BaseException as e:
        code = storage_errno(e)
        if code is None:
            raise
        raise StorageError(f"cannot write {path}: {os.strerror(code)}") from e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_orphans(path: Path) -> list[Path]:
    """Remove the temporary files of `path` that a writer on this host left when it was killed (its process
    is gone); those of live writers, and of other hosts sharing the folder, stay. Returns what it removed."""
    removed = []
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        host_pid_random = tmp.name[len(prefix):-len(".tmp")].rsplit(".", 2)
        if len(host_pid_random) != 3:
            continue
        host, pid, _ = host_pid_random
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file. The
    temporary file is named after this host and process, so the next write of `path` removes those a killed
    writer left behind (`remove_orphans`). A write the disk refuses raises StorageError, leaving nothing."""
    path = Path(path)
    tmp: Path | None = None
    with disk_refusals(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_orphans(path)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.",
                                        suffix=".tmp")
            os.close(fd)
            tmp = Path(name)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                with suppress(OSError):
                    tmp.unlink(missing_ok=True)
            raise


# How a model is rebuilt from its recipe (`model.spec`: an architecture's name and keyword arguments). The
# architecture registry (`bench.kinds.models`, a layer above the cache) sets it when it is imported.
_rebuild: Callable[[dict[str, Any]], nn.Module] | None = None


def set_model_factory(rebuild: Callable[[dict[str, Any]], nn.Module]) -> None:
    """Tell the cache how to rebuild a model from its recipe."""
    global _rebuild
    _rebuild = rebuild


def load_model_file(path: str | Path, spec: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a model from a safetensors file whose recipe is in its metadata (or given as `spec`)."""
    path = Path(path)
    if not path.is_file():
        raise WmbenchError(f"model file not found: {path}")
    try:
        if spec is None:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                spec = json.loads((f.metadata() or {})["wmbench_spec"])
        if _rebuild is None:
            raise WmbenchError("no architecture registry is loaded to rebuild models (import bench.kinds)")
        model = _rebuild(spec)
        model.load_state_dict(load_file(str(path)), strict=True)
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, OSError) as e:
        raise WmbenchError(f"not a wmbench model file: {path} ({e.__class__.__name__}: {str(e)[:120]})") from None
    return model.eval()


def save_model_file(model: nn.Module, path: str | Path) -> None:
    """Save weights and recipe to one safetensors file (what `wmbench verify --model` reads)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"wmbench_spec": json.dumps(model.spec)})


class ArtifactCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        if self.root.exists() and not self.root.is_dir():
            raise WmbenchError(f"cache path is not a folder: {self.root}")
        self.hits = 0
        self.builds = 0

    def _paths(self, h: str) -> tuple[Path, Path]:
        return self.root / h[:2] / f"{h}.safetensors", self.root / h[:2] / f"{h}.json"

    def _read(self, descriptor: dict[str, Any], load: Callable[[Path, dict], Any]) -> Any | None:
        h = digest(descriptor)
        data, sidecar = self._paths(h)
        if not data.exists():  # never built, or its build was cut short (the data file is put in place last)
            return None
        try:
            try:
                meta = json.loads(sidecar.read_text())
            except FileNotFoundError:
                raise ValueError("its sidecar is missing") from None
            if digest(meta["descriptor"]) != h:
                raise ValueError("its sidecar describes another artifact")
            if meta["sha256"] != file_sha256(data):
                raise ValueError("hash mismatch")
            return load(data, meta)
        except (ValueError, KeyError, TypeError, OSError, WmbenchError, SafetensorError) as e:
            warnings.warn(f"cache entry {data.name} is corrupt ({e}); rebuilding", stacklevel=3)
            return None

    def _write(self, descriptor: dict[str, Any], save: Callable[[Path], None], extra: dict[str, Any]) -> None:
        """Write an entry: its data to a temporary file, then its sidecar (with the data's hash), then the
        data into place, so a data file always has its sidecar and an entry cut short is simply missing."""
        data, sidecar = self._paths(digest(descriptor))

        def save_and_describe(tmp: Path) -> None:
            save(tmp)
            meta = {"descriptor": descriptor, "sha256": file_sha256(tmp), **extra}
            atomic_write(sidecar, lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str)))

        atomic_write(data, save_and_describe)

    def load_model(self, descriptor: dict[str, Any]) -> nn.Module | None:
        """The cached model for `descriptor`, or None."""
        cached = self._read(descriptor, lambda path, meta: load_model_file(path, meta["spec"]))
        self.hits += cached is not None
        return cached

    def load_key(self, descriptor: dict[str, Any]) -> Key | None:
        """The cached key for `descriptor`, or None."""
        cached = self._read(descriptor, lambda path, meta: Key.load(path))
        self.hits += cached is not None
        return cached

    @contextmanager
    def building(self, descriptor: dict[str, Any]) -> Iterator[None]:
        """Hold the build lock of `descriptor`'s entry: one process at a time builds it (a waiting one
        finds it built when it gets the lock). Locks are only ever taken on an artifact's own inputs
        while it is built, which can never form a cycle."""
        path = self.root / "locks" / f"{digest(descriptor)}.lock"
        lock = FileLock(path)
        with disk_refusals(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def model(self, descriptor: dict[str, Any], build: Callable[[], nn.Module]) -> nn.Module:
        """The cached model for `descriptor`, built (and stored) on a miss."""

        def store() -> nn.Module:
            model = build().cpu().eval()
            self._write(descriptor, lambda p: save_model_file(model, p), {"spec": model.spec})
            return model

        return self._load_or_build(descriptor, self.load_model, store)

    def key(self, descriptor: dict[str, Any], build: Callable[[], Key]) -> Key:
        """The cached key for `descriptor`, built (and stored) on a miss."""

        def store() -> Key:
            key = build()
            self._write(descriptor, key.save, {})
            return key

        return self._load_or_build(descriptor, self.load_key, store)

    def _load_or_build(self, descriptor: dict[str, Any], load: Callable[[dict], Any], store: Callable[[], Any]) -> Any:
        cached = load(descriptor)
        if cached is not None:
            return cached
        with self.building(descriptor):
            cached = load(descriptor)  # built by another process while this one waited for the lock
            if cached is not None:
                return cached
            self.builds += 1
            return store()

    def record(self, descriptor: dict[str, Any], value: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A small JSON record: stores `value` when given, else returns the stored one (None if absent; a
        corrupt record, or one of another descriptor, is None with a warning, so its work is done again)."""
        path = self.root / "records" / f"{digest(descriptor)}.json"
        if value is not None:
            atomic_write(path, lambda p: p.write_text(json.dumps({"descriptor": descriptor, "value": value},
                                                                 default=str)))
            return value
        try:
            stored = json.loads(path.read_text())
            if digest(stored["descriptor"]) != digest(descriptor):
                raise ValueError("it records another artifact")
            if not isinstance(stored["value"], dict):
                raise TypeError("its value is not a mapping")
            return stored["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"cache record {path.name} is corrupt ({e}); recomputing", stacklevel=2)
            return None
