import subprocess
import sys

import pytest

from bench.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_methods_and_strengths(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "null_embedding" in out and "0.9+ft" in out
    import re

    assert re.search(r"\ninput_filter +evasion ", out) and re.search(r"\nembedding_transform +output transformation ", out)


@pytest.mark.parametrize("args, message", [
    (["run", "--defenses", "nope"], "unknown defense 'nope'; valid:"),
    (["run", "--attacks", "fine_tuning,nope"], "unknown attack 'nope'; valid:"),
    (["run", "--seeds", "0"], "--seeds must be a positive integer"),
    (["report", "--out", "/nonexistent-wmbench"], "no results database"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_standard_profile_without_its_data_is_one_line(tmp_path, monkeypatch, capsys):
    """Offline and without Debian's package, `--profile standard` stops at once, saying how to get the data,
    and records no cell as failed."""
    from bench.datasets import ALLOW_DOWNLOAD, fashion_mnist

    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("WMBENCH_DATA", str(tmp_path / "no-root"))
    monkeypatch.delenv(ALLOW_DOWNLOAD, raising=False)
    fashion_mnist.load_fashion_mnist.cache_clear()
    assert main(["run", "--profile", "standard", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install dataset-fashion-mnist" in err and len(err.splitlines()) == 1
    from bench.results import ResultsDB

    statuses = {cell.status.partition(":")[0] for cell in ResultsDB(tmp_path / "run", "standard").cells()}
    assert statuses <= {"n/a"}  # the out-of-model rows only: not one cell ran, none recorded as failed


def test_output_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--out", str(f)]) == 2
    assert "output path is a file" in capsys.readouterr().err


def test_malformed_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [unclosed")
    assert main(["run", "--config", str(bad)]) == 2
    assert "malformed config file" in capsys.readouterr().err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("speed = 3")
    assert main(["run", "--config", str(unknown)]) == 2
    assert "unknown keys speed" in capsys.readouterr().err


def test_verify_command_on_a_marked_model(make_marked, tmp_path):
    from bench.cache import save_model_file

    _, ctx, key, model = make_marked("null_embedding", "classifier", 1234)
    key.save(tmp_path / "key.safetensors")
    save_model_file(model, tmp_path / "model.safetensors")
    save_model_file(ctx.base_model(), tmp_path / "clean.safetensors")
    result = run_cli("verify", "--defense", "null_embedding", "--key", str(tmp_path / "key.safetensors"),
                     "--model", str(tmp_path / "model.safetensors"), "--device", "cpu")
    assert result.returncode == 0 and result.stdout.startswith("DETECTED"), result.stderr
    clean = run_cli("verify", "--defense", "null_embedding", "--key", str(tmp_path / "key.safetensors"),
                    "--model", str(tmp_path / "clean.safetensors"), "--device", "cpu")
    assert clean.stdout.startswith("not detected")
    missing = run_cli("verify", "--defense", "null_embedding", "--key", str(tmp_path / "nokey"),
                      "--model", str(tmp_path / "model.safetensors"))
    assert missing.returncode == 2 and "key file not found" in missing.stderr


def test_publish_copies_a_run_and_its_summary_into_the_readme(run_config, tmp_path, capsys):
    from bench.runner import run_matrix

    cfg = run_config(defenses=["vlpmarker"], attacks=["pruning"], profile="smoke")  # n/a rows only: instant
    run_matrix(cfg, progress=False)
    readme = tmp_path / "README.md"
    other = "<!-- default-summary:start -->\nthe default profile's\n<!-- default-summary:end -->\n"
    readme.write_text(f"intro\n<!-- smoke-summary:start -->\nstale\n<!-- smoke-summary:end -->\n{other}rest\n")
    published = tmp_path / "published"
    assert main(["publish", "--from", str(cfg.out), "--to", str(published), "--profile", "smoke",
                 "--readme", str(readme)]) == 0
    assert {p.name for p in published.iterdir()} >= {"results.sqlite", "leaderboard.csv", "leaderboard.md"}
    assert "Setting: dataset `digits` at 16×16, all its training images" in (published / "leaderboard.md").read_text()
    text = readme.read_text()
    assert "stale" not in text and "| vlpmarker | n/a" in text.replace("  ", "") and text.endswith(f"{other}rest\n")
    # the run read again at another level: one it resolves (smoke: 19 null keys), and one it does not
    assert main(["report", "--out", str(published), "--profile", "smoke", "--alpha", "0.1"]) == 0
    assert "detected when p ≤ α = 0.1." in (published / "leaderboard.md").read_text()
    assert "coarser than the run's own α = 0.05" in (published / "leaderboard.md").read_text()
    assert "warning: Read at α = 0.1, coarser than the run's own α = 0.05" in capsys.readouterr().err
    assert main(["report", "--out", str(published), "--profile", "smoke", "--alpha", "0.01"]) == 2
    assert "finer than the null resolves: 19 null keys" in capsys.readouterr().err
    assert main(["publish", "--from", str(cfg.out), "--to", str(cfg.out)]) == 2
    assert main(["publish", "--from", str(tmp_path / "nothing"), "--to", str(published)]) == 2
    assert "no results database" in capsys.readouterr().err
