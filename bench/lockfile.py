"""The locked environment: `requirements.lock` (made by `make lock`: every dependency's exact version with its
hashes) against what is installed. A run records the installed versions, the lock's hash and whether the two
agree (`bench.runner.run_matrix`), and `wmbench publish` refuses a run made outside the lock."""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "requirements.lock"

# The packages whose versions the leaderboard's header names (the ones that compute its numbers).
NUMERIC_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "open-clip-torch", "kornia", "pandas")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical name
    version: str
    marker: str = ""  # the environment marker under which the lock installs it ('' = everywhere)

    def applies(self) -> bool:
        return not self.marker or Marker(self.marker).evaluate()


def read_lock(path: Path = LOCK_FILE) -> list[Pin]:
    """The pins of a lock file in pip's requirements format (`name==version ; marker \\`, hash lines after)."""
    pins = []
    for line in path.read_text().splitlines():
        if not line or line[0].isspace() or line.startswith(("#", "-")):
            continue
        requirement, _, marker = line.rstrip(" \\").partition(";")
        name, _, version = requirement.strip().partition("==")
        if version:
            pins.append(Pin(canonicalize_name(name), version.strip(), marker.strip()))
    return pins


def installed_versions() -> dict[str, str]:
    """Every installed distribution of this interpreter, by canonical name."""
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()
            if d.metadata["Name"]}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class LockStatus:
    """How the installed environment compares with the lock."""

    lock_sha256: str | None  # None: no lock file beside the code (an installed, non-editable wmbench)
    mismatches: list[str] = field(default_factory=list)  # 'name: lock X, installed Y' per differing package

    @property
    def locked(self) -> bool:
        return self.lock_sha256 is not None and not self.mismatches


def lock_status(path: Path = LOCK_FILE, installed: dict[str, str] | None = None) -> LockStatus:
    """Compare the installed versions with the lock's pins that apply to this interpreter and platform."""
    if not path.is_file():
        return LockStatus(None)
    installed = installed_versions() if installed is None else installed
    mismatches = [f"{p.name}: lock {p.version}, installed {installed.get(p.name, 'none')}"
                  for p in read_lock(path) if p.applies() and installed.get(p.name) != p.version]
    return LockStatus(file_sha256(path), mismatches)


def code_version() -> dict:
    """The git commit of the code that runs, and whether its tracked files differ from it ('' off git)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(commit) and bool(git("status", "--porcelain", "--untracked-files=no"))}


def environment_record() -> dict:
    """What a run stores about its software: the code's commit, the lock's hash, whether the installed
    environment is the lock's, and the version of every installed package."""
    installed = installed_versions()
    status = lock_status(installed=installed)
    return {"code": code_version(), "lock_sha256": status.lock_sha256, "locked": status.locked,
            "lock_mismatches": status.mismatches[:20], "packages": dict(sorted(installed.items()))}
