"""The ``discretegrad`` command: a thin layer over the Python API.

Bad input, store errors, or a missing optional extra (matplotlib for ``demo``/``report``) print one
message to stderr and exit with status 2 (no traceback). ``run`` exits with status 1 when some run
failed (the others are stored) or a store error stopped it after it had stored runs, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from discretegrad._extras import MissingExtraError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"discretegrad: error: {message}\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from discretegrad.demo import run_demo

    run_demo(args.out, draws=args.draws, seed=args.seed)
    print(f"wrote tables and plots under {args.out}/")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from discretegrad.experiments.vae_probes import suite
    from discretegrad.harness.environment import environment, git_info
    from discretegrad.leaderboard import run_leaderboard

    run_leaderboard(args.out, entries=suite(), distributions=args.distribution, draws=args.draws, seed=args.seed,
                    quick=args.quick, command=shlex.join(["discretegrad", *args.argv]),
                    environment=environment("cpu", git_info()))
    print(f"wrote the leaderboard under {args.out}/")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from discretegrad.harness.contract import load_plugins
    from discretegrad.harness.catalog import catalog, format_catalog

    load_plugins(args.plugin)
    cat = catalog()
    print(json.dumps(cat, indent=2, default=str) if args.json else format_catalog(cat))
    return 0


def _sweep_args(args: argparse.Namespace) -> dict:
    from discretegrad.harness.grid import (DEFAULT_MAX_RUNS, check_max_runs, parse_assignment, parse_estimators,
                                           parse_seeds)

    max_runs = check_max_runs(DEFAULT_MAX_RUNS if args.max_runs is None else args.max_runs)
    return dict(
        out=args.out if args.out is not None else f"runs/{args.experiment}",
        estimators=parse_estimators(args.estimators) if args.estimators is not None else None,
        seeds=parse_seeds(args.seeds, limit=max_runs) if args.seeds is not None else None,
        overrides=dict(parse_assignment(a) for a in args.set),
        quick=args.quick, device=args.device, plugins=args.plugin, max_runs=max_runs,
        flush_denormal=not args.keep_denormals,
    )


def _backend(args: argparse.Namespace) -> tuple[object, str]:
    """``--backend``: (None for the local default, the device to check on this machine)."""
    ray_opts = {"--address": args.address, "--cpus-per-run": args.cpus_per_run,
                "--gpus-per-run": args.gpus_per_run, "--max-retries": args.max_retries}
    if args.backend == "local":
        given = [k for k, v in ray_opts.items() if v is not None]
        if given:
            raise ValueError(f"Expected --backend ray with {given[0]}, but got --backend local")
        return None, args.device
    if args.workers != 1:
        raise ValueError(f"Expected no --workers with --backend ray (Ray schedules by --cpus-per-run), "
                         f"but got --workers {args.workers}")
    from discretegrad.harness.ray_backend import RayBackend, check_ray_device

    check_ray_device(args.device, args.gpus_per_run or 0)
    opts = {k: v for k, v in (("cpus_per_run", args.cpus_per_run), ("gpus_per_run", args.gpus_per_run),
                              ("max_retries", args.max_retries)) if v is not None}
    backend = None if args.dry_run else RayBackend(args.address, **opts)
    return backend, "cpu" if args.device.startswith("cuda") else args.device


def _cmd_run(args: argparse.Namespace) -> int:
    from discretegrad.harness.grid import grid_point
    from discretegrad.harness.runner import plan_sweep, run_sweep, stored_statuses

    backend, device = _backend(args)
    plan = plan_sweep(args.experiment, **{**_sweep_args(args), "device": device})
    if device != args.device:  # the ray backend checks a GPU device against the tasks' resources
        plan = dataclasses.replace(plan, device=args.device)
    if args.dry_run:
        stored = stored_statuses(plan)
        for c in plan.configs:
            point = " ".join(f"{k}={v}" for k, v in grid_point(plan.experiment, c.params).items())
            print(f"{c.run_id}  {stored.get(c.run_id, 'to run'):<8}  {c.estimator.label}  seed={c.seed}  {point}")
        todo = sum(stored.get(c.run_id) not in ("finished", "diverged", "running") for c in plan.configs)
        resumes = sum(stored.get(c.run_id) == "resumes" for c in plan.configs)
        running = sum(stored.get(c.run_id) == "running" for c in plan.configs)
        print(f"{len(plan.configs)} runs, {todo} to run{f' ({resumes} from a checkpoint)' if resumes else ''}"
              f"{f', {running} running in another sweep' if running else ''}, into {plan.out}")
        return 0
    summary = run_sweep(plan, workers=args.workers, backend=backend, progress=False if args.quiet else None,
                        command=shlex.join(["discretegrad", *args.argv]))
    print(summary.describe())
    print(f"tables and plots: discretegrad report {summary.out}")
    if not summary.ok:
        print(f"discretegrad: {summary.failed} run(s) failed (stored with their error; a rerun retries them):",
              file=sys.stderr)
        for run_id, what, error in summary.failures:
            print(f"  {run_id} {what}: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from discretegrad.harness.report import summarize, write_report
    from discretegrad.harness.store import Store

    if args.json:
        with Store(args.dir) as store:
            print(json.dumps(summarize(store), indent=2))
        return 0
    path = write_report(args.dir)
    print(f"wrote {path} and its plots")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from discretegrad import __version__

    p = _Parser(prog="discretegrad", description="Gradient estimators for discrete random variables.")
    p.add_argument("--version", action="version", version=f"discretegrad {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="exact-gradient diagnostics of every registered estimator")
    d.add_argument("--out", default="results/demo", help="output directory (default: results/demo)")
    d.add_argument("--draws", type=int, default=1000, help="gradient draws per estimator (default: 1000)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    lb = sub.add_parser("leaderboard", help="rank every registered estimator on problems with exact gradients")
    lb.add_argument("--distribution", action="append", default=None, metavar="NAME",
                    help="only this distribution's problems (repeatable; default: all)")
    lb.add_argument("--draws", type=int, default=None, help="gradient draws per estimator (default: 1000; --quick: 20)")
    lb.add_argument("--out", default="results/leaderboard", help="output directory (default: results/leaderboard)")
    lb.add_argument("--seed", type=int, default=0, help="seed of the gradient draws (default: 0)")
    lb.add_argument("--quick", action="store_true", help="a tiny version (few draws, 3-step VAE probes)")
    lb.set_defaults(func=_cmd_leaderboard)

    plugin_help = ("import MODULE first (it registers experiments; repeatable). "
                   "The env var DISCRETEGRAD_PLUGINS=mod1,mod2 does the same.")
    ls = sub.add_parser("list", help="registered estimators (per distribution) and experiments")
    ls.add_argument("--json", action="store_true", help="print a JSON record instead of text")
    ls.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=plugin_help)
    ls.set_defaults(func=_cmd_list)

    r = sub.add_parser("run", help="run a sweep of an experiment (resumable)")
    r.add_argument("experiment", help="experiment name (see `discretegrad list`)")
    r.add_argument("--estimators", metavar="LIST",
                   help="comma-separated estimators, each optionally with hyperparameters: stgs,gst:gap=1.2 "
                        "(default: the experiment's)")
    r.add_argument("--seeds", metavar="SEEDS", help="seeds: 0-9, 0,3,5 or 0-2,7 (default: the experiment's)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable); a grid key given here is fixed instead of swept")
    r.add_argument("--quick", action="store_true", help="the reduced protocol (fewer epochs and seeds)")
    r.add_argument("--workers", type=int, default=1, help="local worker processes (default: 1, in-process)")
    r.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray cluster (needs the ray extra)")
    r.add_argument("--address", default=None, help="ray: the cluster's address (default: a local instance)")
    r.add_argument("--cpus-per-run", type=float, default=None, metavar="C", help="ray: CPUs (threads) per run (default: 1)")
    r.add_argument("--gpus-per-run", type=float, default=None, metavar="G", help="ray: GPUs per run (default: 0)")
    r.add_argument("--max-retries", type=int, default=None, metavar="N",
                   help="ray: retries of a run whose worker died (default: 3)")
    r.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/EXPERIMENT)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    r.add_argument("--keep-denormals", action="store_true",
                   help="compute with subnormal floats instead of flushing them to zero (slower on CPUs; "
                        "not part of a run's identity)")
    r.add_argument("--quiet", action="store_true", help="no progress output (bar or per-run lines)")
    r.add_argument("--dry-run", action="store_true", help="validate and list the runs (stored or to run); create nothing")
    r.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="refuse a sweep of more than N runs (default: 10000)")
    r.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=plugin_help)
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="tables and plots of a stored sweep")
    rep.add_argument("dir", metavar="DIR", help="the output directory of `discretegrad run`")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON records, write nothing")
    rep.set_defaults(func=_cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError, MissingExtraError) as e:  # store errors included (harness.store.StoreError)
        print(f"discretegrad: error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)  # 1: a sweep stopped after storing some runs
    except KeyboardInterrupt:
        print("discretegrad: interrupted (finished runs are stored; rerun the same command to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
