"""Every code example in the docs runs with today's API.

- The ```python blocks of README.md and of each docs/*.md run in order as one script per file (later blocks
  may use what earlier ones defined), in a fresh folder, with the plugin guide's example package installed.
- The plugin guide's example package is the blocks of docs/plugins.md whose first line is `# file: <path>`:
  assembled into a folder with a `.dist-info` that declares its entry points (what `pip install` writes), so
  `wmbench` finds its defense, attack, dataset and architecture as it finds any installed plugin; then the
  guide's own `wmbench list` and `wmbench run --profile smoke` commands run against it.
Blocks that are not meant to run use another fence language (```console, ```text, ```toml)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLUGIN_GUIDE = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FILE_LINE = re.compile(r"\A# file: (\S+)\n")


def fenced(path: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a Markdown file."""
    return FENCE.findall(path.read_text())


def example_files() -> dict[str, str]:
    """The plugin guide's example package: path → text of every `# file:` block."""
    return {m.group(1): body for _, body in fenced(PLUGIN_GUIDE) if (m := FILE_LINE.match(body))}


def doc_script(path: Path) -> str:
    """The file's runnable ```python blocks, in order, as one script."""
    return "\n\n".join(body for lang, body in fenced(path) if lang == "python" and not FILE_LINE.match(body))


def console_command(path: Path, prefix: str) -> list[str]:
    """The arguments of the ```console command of `path` that starts with `$ <prefix>` (continuation lines
    joined, the trailing comment dropped)."""
    for lang, body in fenced(path):
        if lang != "console":
            continue
        for command in body.replace("\\\n", " ").splitlines():
            if command.startswith(f"$ {prefix}"):
                return shlex.split(command[2:], comments=True)
    raise AssertionError(f"no `$ {prefix}` command in {path.name}")


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "refused" not in proc.stderr, proc.stderr
    return proc


def wmbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", *args]


@pytest.fixture(scope="module")
def example_package(tmp_path_factory) -> Path:
    """The plugin guide's example package, installed as a folder on PYTHONPATH with its entry points."""
    root = tmp_path_factory.mktemp("example_package")
    files = example_files()
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    (root / "wmbench_example" / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist_info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                        f"Version: {project['version']}\n")
    (dist_info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()) + "\n"
        for group, entries in project["entry-points"].items()))
    return root


@pytest.fixture
def env(example_package, tmp_path) -> dict[str, str]:
    """The environment of a reader who installed the example package, with a cache of the test's own."""
    path = os.pathsep.join(p for p in (str(example_package), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "WMBENCH_CACHE": str(tmp_path / "cache")}


def test_the_plugin_guide_defines_a_package_of_each_plugin_kind():
    files = example_files()
    assert {"pyproject.toml", "wmbench_example/defense.py", "wmbench_example/attack.py",
            "wmbench_example/served_attack.py", "wmbench_example/dataset.py",
            "wmbench_example/architecture.py"} <= set(files)
    groups = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]
    assert set(groups) == {"wmbench.defenses", "wmbench.attacks", "wmbench.datasets", "wmbench.architectures",
                           "wmbench.transforms"}
    for path in DOCS:  # a `# file:` block anywhere else would be skipped silently
        if path != PLUGIN_GUIDE:
            assert not [b for _, b in fenced(path) if FILE_LINE.match(b)], path.name


@pytest.mark.parametrize("path", [p for p in DOCS if doc_script(p)], ids=lambda p: p.name)
def test_every_python_block_runs(path, env, tmp_path):
    script = tmp_path / f"{path.stem}_examples.py"
    script.write_text(doc_script(path))
    run([sys.executable, str(script)], cwd=tmp_path, env=env)


def test_the_example_plugins_are_listed_and_run_in_the_matrix(env, tmp_path):
    listed = run(wmbench(*console_command(PLUGIN_GUIDE, "wmbench list")[1:]), cwd=tmp_path, env=env).stdout
    for name in ("noise_triggers", "weight_jitter", "box_blur_service", "digits5", "tiny_mlp"):
        assert name in listed
    args = console_command(PLUGIN_GUIDE, "wmbench run --profile smoke")
    assert "--out" in args
    run(wmbench(*args[1:], "--workers", "1", "--quiet"), cwd=tmp_path, env=env)
    out = tmp_path / args[args.index("--out") + 1]
    table = pd.read_csv(out / "leaderboard.csv", dtype={"strength": str})
    rows = set(zip(table.defense, table.attack, table.strength))
    for defense in ("noise_triggers", "null_embedding"):  # the plugin attack pairs with in-tree defenses too
        assert {(defense, "weight_jitter", s) for s in ("0.1", "0.5", "0.5+ft")} | {(defense, "none", "-")} <= rows
    assert (table.status == "ok").all(), table[["defense", "attack", "strength", "status"]]
    assert table[table.attack == "weight_jitter"].attack_report.str.contains("relative_noise").all()
    # the attack that serves its victim behind the plugin's own input transformation ran in every cell
    assert {(d, "box_blur_service", s) for d in ("noise_triggers", "null_embedding") for s in ("3", "5")} <= rows
    claims = pd.read_csv(out / "claims.csv")
    assert (claims.defense == "noise_triggers").sum() == 3  # the example defense's claims are judged
