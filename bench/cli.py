"""`wmbench` command line: list, run, status, report, publish, reproduce, verify. Bad input gets one line and exit code 2."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from bench.protocols import WmbenchError


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import registry

    defenses = [(n, registry.get_defense(n).model_kind, registry.get_defense(n).version)
                for n in registry.defense_names()]
    attacks = [(n, a.family, ", ".join(a.model_kinds), ", ".join(a.strengths), a.version)
               for n in registry.attack_names() for a in [registry.get_attack(n)]]
    from bench.datasets import dataset_names, get_dataset_info

    data = [(n, info.description, info.image_size or "any", info.channels, len(info.class_names) or "any")
            for n in dataset_names() for info in [get_dataset_info(n)]]
    print(tabulate(defenses, headers=["defense", "model kind", "version"]))
    print()
    print(tabulate(attacks, headers=["attack", "family", "model kinds", "strengths", "version"]))
    print()
    print(tabulate(data, headers=["dataset", "description", "size", "channels", "classes"]))
    from bench.kinds.models import architecture_names, get_architecture

    archs = [(a.name, a.kind, a.description, a.head or "-", " → ".join(u for u in a.units if u) or "-",
              a.transform or "-") for a in map(get_architecture, architecture_names())]
    print()
    print(tabulate(archs, headers=["architecture", "model kind", "description", "last layer", "prunable units",
                                   "output transform"]))
    from bench.served import get_transform, transform_names

    print()
    print(tabulate([(t.name, t.description) for t in map(get_transform, transform_names())],
                   headers=["transform (served models)", "description"]))
    for error in registry.plugin_errors:
        print(f"warning: {error}", file=sys.stderr)
    return 0


def _config(args: argparse.Namespace):
    from bench.config import RunConfig

    overrides = {k: v for k, v in {
        "defenses": _names(args.defenses) or None, "attacks": _names(args.attacks) or None,
        "strengths": _names(args.strengths) or None, "seeds": args.seeds,
        "out": args.out, "device": args.device, "profile": args.profile, "cache": args.cache,
        "vlp": args.vlp, "data": args.data, "vlp_innocents": _names(args.vlp_innocents) or None,
        "attacker_share": args.attacker_share,
        "workers": args.workers, "alpha": args.alpha, "max_utility_drop": args.max_utility_drop,
        "portable": args.portable or None,
    }.items() if v is not None}
    if args.config:
        return RunConfig.from_file(args.config, **overrides)
    return RunConfig(**overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from bench.executors import make_executor
    from bench.report import write_leaderboard
    from bench.runner import run_matrix

    cfg = _config(args)
    executor = make_executor(args.executor, cfg.workers, args.address)
    summary = run_matrix(cfg, executor, progress=not args.quiet)
    write_leaderboard(cfg.out, cfg.label)
    print(timing_table(summary.timing, cfg.workers))
    print(f"{summary.ran} cells run, {summary.reused} reused from {cfg.out}, {summary.outside} n/a (outside the "
          f"threat model), {summary.failed} failed, "
          f"{summary.seconds:.1f} s; leaderboard: {cfg.out / 'leaderboard.md'}")
    return 1 if summary.failed else 0


def timing_table(timing: list, workers: int) -> str:
    """The runner's timing table: per wave its wall time, the summed seconds of its tasks, and how busy
    the workers were (task seconds / (wall seconds × workers))."""
    from tabulate import tabulate

    rows = [(t.wave, t.tasks, f"{t.wall_s:.1f}", f"{t.task_s:.1f}",
             f"{t.task_s / (t.wall_s * workers):.0%}" if t.tasks else "-") for t in timing]
    return tabulate(rows, headers=["wave", "tasks", "wall s", "task s", f"busy ({workers} workers)"])


def cmd_report(args: argparse.Namespace) -> int:
    from bench.publish import merge_runs
    from bench.report import write_latex, write_leaderboard
    from bench.results import DB_NAME

    out = Path(args.out)
    if args.merge:
        table = merge_runs(args.merge, out, args.profile)
        print(f"merged {len(args.merge)} runs into {out}: {len(table)} rows")
    elif not (out / DB_NAME).is_file():
        raise WmbenchError(f"no results database in {out} (run `wmbench run --out {out}` first)")
    else:
        loaded = write_leaderboard(out, args.profile, args.alpha)
        table = loaded.table
        if loaded.level_note:
            print(f"warning: {loaded.level_note}", file=sys.stderr)
    print(f"{len(table)} rows written to {out / 'leaderboard.csv'}, .md, .png and claims.csv")
    if args.latex:
        for path in write_latex(out, args.profile, args.alpha):
            print(f"LaTeX (booktabs): {path}")
    if args.site or args.screenshot:
        _site(out, args.profile, args.screenshot, args.alpha)
    return 0


def _site(out: Path, profile: str, screenshot: bool, alpha: float | None = None) -> None:
    from bench.site import screenshot as take_screenshot
    from bench.site import write_site

    index = write_site(out, profile, alpha)
    print(f"site: {index}")
    if screenshot:
        print(f"screenshot (headless Chromium): {take_screenshot(index, index.parent / 'screenshot.png')}")


def cmd_publish(args: argparse.Namespace) -> int:
    from bench.publish import publish

    table = publish(args.source, args.target, args.profile, readme=args.readme, allow_unlocked=args.allow_unlocked)
    print(f"published {args.source} → {args.target}: {len(table)} rows (results.sqlite, leaderboard.csv/.md/.png, "
          f"claims.csv)")
    _site(Path(args.target), args.profile, args.screenshot)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.audit import reproduce

    cells, prepared, notes = reproduce(args.folder, sample=args.sample, defenses=_names(args.defenses),
                                       attacks=_names(args.attacks), cache=args.cache, workers=args.workers,
                                       prepared=not args.cells_only)
    for note in notes:
        print(f"note: {note}")
    for audit in [*prepared, *cells]:
        print(audit.line())

    def tally(audits: list, what: str) -> str:
        differ = sum(not a.identical for a in audits)
        return f"{len(audits) - differ} of {len(audits)} {what} identical" + (f", {differ} differ" if differ else "")

    print(tally(cells, "cells") + (f"; {tally(prepared, 'prepared rows')}" if prepared else ""))
    return 1 if any(not a.identical for a in [*prepared, *cells]) else 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.runner import make_plan
    from bench.results import ResultsDB

    cfg = _config(args)
    plan = make_plan(cfg)
    status = {r.cell: r.status for r in ResultsDB(cfg.out, cfg.label).cells()}
    done = sum(status.get(c) == "ok" for c in plan.cells)
    failed = [c for c in plan.cells if c in status and status[c] != "ok" and c not in plan.outside]
    print(f"{done} done, {len(failed)} failed, {len(plan.cells) - done - len(failed) - len(plan.outside)} pending, "
          f"{len(plan.outside)} outside the threat model (n/a) of {len(plan.cells)} cells in {cfg.out}")
    for c in failed:
        print(f"  failed: {c.defense} × {c.attack}[{c.strength}] seed {c.seed}: {status[c]}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from bench import registry
    from bench.cache import load_model_file
    from bench.config import RunConfig
    from bench.protocols import Key
    from bench.runner import workbench

    defense = registry.get_defense(args.defense)
    key = Key.load(args.key)
    if key.defense != registry.scheme(defense):  # verification variants share their scheme's keys
        raise WmbenchError(f"key {args.key} belongs to defense '{key.defense}', not '{defense.name}'")
    model = load_model_file(args.model)
    kind = getattr(model, "kind", None)
    if kind != defense.model_kind:
        raise WmbenchError(f"model {args.model} is a {kind}; defense '{defense.name}' protects a {defense.model_kind}")
    wb = workbench(RunConfig(device=args.device, profile=args.profile, cache=args.cache))
    ctx = wb.context(defense.model_kind, seed=0)
    v = defense.verify(ctx, model.to(wb.device), key)
    print(f"{'DETECTED' if v.detected else 'not detected'}: statistic {v.statistic:.4f} "
          f"(threshold {v.threshold:.4f}), p-value {v.p_value:.3g}")
    for name, value in v.details.items():
        print(f"  {name}: {value:.4f}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wmbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered defenses and attacks").set_defaults(fn=cmd_list)

    def matrix_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--defenses", help="comma-separated defense names (default: all)")
        sp.add_argument("--attacks", help="comma-separated attack names (default: all)")
        sp.add_argument("--strengths", help="comma-separated strengths to keep (default: all of each attack)")
        sp.add_argument("--seeds", type=int, help="owner seeds per cell (default: the profile's, 10 for default, 5 for standard)")
        sp.add_argument("--out", type=Path, help="run folder (default runs/<profile>; `wmbench publish` copies a "
                                                 "run into the committed results/)")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--profile", help="model/data sizes: default, gpu, smoke")
        sp.add_argument("--vlp", help="protect a real open_clip model: open_clip:<model>:<pretrained or checkpoint file>")
        sp.add_argument("--vlp-innocents", dest="vlp_innocents",
                        help="with a pretrained --vlp: comma-separated other open_clip:<model>:<pretrained> "
                             "checkpoints, the innocent models (without them the false-positive columns say n/a)")
        sp.add_argument("--data", help="a dataset spec (`wmbench list`): digits (default), fashion_mnist[:<folder>], "
                                             "cifar10[:<root>], folder:<path> (class-per-subfolder images)")
        sp.add_argument("--attacker-share", dest="attacker_share", type=float,
                        help="the attacker's data as a fraction of the owner's training-set size: 0.01, 0.05, 0.10, "
                             "0.25 or 0.50 (the whole independent split); default: the profile's, 0.10")
        sp.add_argument("--cache", type=Path, help="artifact cache folder (default: $WMBENCH_CACHE or user cache)")
        sp.add_argument("--workers", type=int, help="worker processes (default: one per core)")
        sp.add_argument("--alpha", type=float,
                        help="level every ownership test is read at: a key is detected when its key-randomization "
                             "p-value is at most α (default: the profile's, 0.01; no finer than 1/(K+1) for the "
                             "profile's K null keys)")
        sp.add_argument("--max-utility-drop", dest="max_utility_drop", type=float,
                        help="utility an attack may lose and still count as a success (default 0.05)")
        sp.add_argument("--portable", action="store_true", default=None,
                        help="pin CPU kernels (AVX2) in every worker: the same numbers on every machine of one CPU family")
        sp.add_argument("--config", type=Path, help="TOML file with the same fields")

    run = sub.add_parser("run", help="evaluate the matrix and write the leaderboard")
    matrix_options(run)
    run.add_argument("--executor", default="local", help="local (worker processes) or ray")
    run.add_argument("--address", help="Ray cluster address (with --executor ray)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(fn=cmd_run)

    status = sub.add_parser("status", help="which cells are done, failed or pending")
    matrix_options(status)
    status.set_defaults(fn=cmd_status)

    publish = sub.add_parser("publish", help="copy a finished run into the committed leaderboard folder")
    publish.add_argument("--from", dest="source", type=Path, default=Path("runs/default"),
                         help="the run folder (default runs/default)")
    publish.add_argument("--to", dest="target", type=Path, default=Path("results"),
                         help="the published folder (default results)")
    publish.add_argument("--profile", default="default", help="the run's profile label")
    publish.add_argument("--readme", type=Path, default=Path("README.md"),
                         help="README whose generated blocks (summary, claims) are rewritten (default README.md)")
    publish.add_argument("--screenshot", action="store_true",
                         help="save the published site's screenshot from headless Chromium (site/screenshot.png)")
    publish.add_argument("--allow-unlocked", dest="allow_unlocked", action="store_true",
                         help="publish a run whose packages were not those of requirements.lock")
    publish.set_defaults(fn=cmd_publish)

    audit = sub.add_parser("reproduce", help="recompute published cells from scratch and compare them, field by field")
    audit.add_argument("folder", type=Path, help="a published folder (results.sqlite inside), e.g. results")
    audit.add_argument("--sample", type=int, help="recompute this many cells drawn at random (fixed seed); "
                                                  "default: every selected cell")
    audit.add_argument("--defenses", help="comma-separated defenses to draw from (default: all)")
    audit.add_argument("--attacks", help="comma-separated attacks to draw from (default: all)")
    audit.add_argument("--cache", type=Path, help="artifact cache to build into (default: a new empty folder, "
                                                  "removed afterwards)")
    audit.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)")
    audit.add_argument("--cells-only", action="store_true",
                       help="skip the prepared rows (utilities before any attack, the owner's, innocents' and other "
                            "parties' checks) of the chosen cells' (defense, seed) pairs")
    audit.set_defaults(fn=cmd_reproduce)

    report = sub.add_parser("report", help="rebuild the leaderboard files from the database")
    report.add_argument("--out", default="results", help="the run (or published) folder; with --merge, where the "
                                                         "combined run is written")
    report.add_argument("--profile", default="default", help="the run's profile label (as in its leaderboard title)")
    report.add_argument("--alpha", type=float, help="read the run's key-randomization tests at this level instead "
                                                    "of the run's own (no finer than 1/(K+1) for its K null keys)")
    report.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                        help="combine the databases of these runs (same profile) into --out")
    report.add_argument("--latex", action="store_true",
                        help="also write summary.tex and claims.tex (booktabs tables) for papers")
    report.add_argument("--site", action="store_true", help="also write the static site (site/index.html)")
    report.add_argument("--screenshot", action="store_true",
                        help="also write the site and save its screenshot from headless Chromium (site/screenshot.png)")
    report.set_defaults(fn=cmd_report)

    verify = sub.add_parser("verify", help="an auditor's check of one suspect model file")
    verify.add_argument("--defense", required=True)
    verify.add_argument("--key", required=True, type=Path)
    verify.add_argument("--model", required=True, type=Path)
    verify.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    verify.add_argument("--profile", default="default")
    verify.add_argument("--cache", type=Path)
    verify.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("once")
    try:
        return args.fn(args)
    except WmbenchError as e:
        print(f"wmbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wmbench: interrupted; finished cells are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
