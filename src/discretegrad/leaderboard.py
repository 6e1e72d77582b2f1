"""The leaderboard: every registered estimator ranked on problems whose exact gradient is known.

A suite is a list of :class:`Entry` records (a named problem of one distribution, built on
demand, so a run restricted to other distributions builds nothing it does not rank). For each
problem, every estimator the registry holds for its distribution is compared against the exact
gradient with :func:`discretegrad.diagnostics.compare` (bias, variance, MSE, cosine) and timed
against a baseline estimator of the same family in the same run (:func:`time_estimators`:
repeated rounds, estimators in a fresh random order each round, the ratio taken within a round).
Nothing here names an estimator except the baseline preference :data:`BASELINES`, so an
estimator registered tomorrow is ranked with no edit.

* the suite: :func:`builtin_entries` = the ``example`` of every family that declares one (the
  demo's problems) plus a larger top-k and a larger spanning-tree problem; the VAE probes on
  MNIST live with the experiments' data (:mod:`discretegrad.experiments.vae_probes`) and are
  added by the ``discretegrad leaderboard`` command;
* estimators with ``min_samples > 1`` get that many samples; relaxed ones are ranked and flagged;
  one that cannot run on a problem (a relaxed sample for an ``f`` defined on discrete values
  only, or an error) is reported as skipped with the reason; a problem that cannot be built
  (:class:`Unavailable`, e.g. its data set is absent) likewise;
* :func:`run_leaderboard` writes the tables, plots, JSON and README through
  :mod:`discretegrad.leaderboard_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from discretegrad import leaderboard_report as report
from discretegrad.leaderboard_records import Budget, Entry, Problem, ProblemResult, Row, Unavailable
from discretegrad.diagnostics import GradientReport, compare, gradient_draws
from discretegrad.exact import gradient as exact_gradient
from discretegrad.registry import EstimatorSpec, estimators, families, get_family

__all__ = ["Problem", "Entry", "Unavailable", "Row", "ProblemResult", "Budget", "BASELINES", "builtin_entries",
           "time_estimators", "rank_problem", "run_leaderboard"]

BASELINES = ("stgs", "st", "entropy")
"""Timing baselines in order of preference: STGS, else ST, else the SST straight-through ``entropy``
(Gumbel-argmax forward, relaxed backward: the structured analogue of STGS, for top-k and trees)."""


# ----------------------------------------------------------------------------- the suite

def _example_entry(name: str) -> Entry:
    return Entry(name, name, lambda quick: Problem.from_example(name, name, get_family(name).example()))


def _topk_n10_k4(quick: bool) -> Problem:
    g = torch.Generator().manual_seed(11)
    n, k = 10, 4
    theta = 1.5 * torch.randn(1, n, generator=g, dtype=torch.float64)
    a = torch.randn(3, n, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        y = z @ a.T
        return ((y - b) ** 2).sum(-1) + torch.sin(3 * y[..., 0])

    return Problem("topk-n10-k4", "topk", f"k-subsets, n = {n}, k = {k} (210 subsets, logits of scale 1.5), "
                   "f(z) = ||A z - b||^2 + sin(3 (A z)_0), A 3 x 10", theta, f, {"k": k})


def _spanning_tree_k5(quick: bool) -> Problem:
    g = torch.Generator().manual_seed(12)
    n = 5
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    theta = (w + w.T).unsqueeze(0)  # symmetric, entries of scale 2: a peaked law
    c = torch.randn(n, n, generator=g, dtype=torch.float64)
    c = c + c.T
    d = torch.randn(n, n, generator=g, dtype=torch.float64)
    d = d + d.T

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z * c).sum((-1, -2)) - 1.0) ** 2 + torch.sin((z * d).sum((-1, -2)))

    return Problem("spanning_tree-K5", "spanning_tree", f"spanning trees of K_{n} (125 trees, exact law of the "
                   "Kruskal sample), f(z) = (<C, z> - 1)^2 + sin(<D, z>)", theta, f)


def builtin_entries() -> list[Entry]:
    """The demo's problems (every family's ``example``), then a larger top-k and spanning-tree problem."""
    out = [_example_entry(name) for name in families() if get_family(name).example is not None]
    return out + [Entry("topk-n10-k4", "topk", _topk_n10_k4), Entry("spanning_tree-K5", "spanning_tree",
                                                                       _spanning_tree_k5)]


# ----------------------------------------------------------------------------- measuring

def _seed(seed: int, *names: str) -> int:
    """A seed for the stream ``names`` of run ``seed``: an estimator's numbers do not depend on
    which other estimators are registered or in what order they are measured."""
    return int.from_bytes(hashlib.sha256("/".join([str(seed), *names]).encode()).digest()[:8], "big") >> 1


def _generator(seed: int, *names: str) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(seed, *names))


def _hparams(problem: Problem) -> dict[str, Any]:
    return dict(problem.options)


def time_estimators(problem: Problem, specs: Sequence[EstimatorSpec], *, baseline: str | None, rounds: int,
                    block: int, seed: int, errors: dict[str, str] | None = None
                    ) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds per gradient of each estimator, ``rounds`` times ``block`` gradients, the order of the
    estimators drawn afresh each round; returns ``name -> (ms per gradient per round, ratio to
    ``baseline`` in the same round)`` (no ratios without a baseline). With ``errors``, an estimator
    that raises is recorded there (``name -> reason``) and left out instead of stopping the timing."""
    order_gen = _generator(seed, problem.name, "timing-order")
    ms: dict[str, list[float]] = {s.name: [] for s in specs}
    for r in range(rounds):
        for i in torch.randperm(len(specs), generator=order_gen).tolist():
            s = specs[i]
            if s.name not in ms:
                continue
            gen = _generator(seed, problem.name, s.name, f"timing-{r}")
            t0 = time.perf_counter()
            try:
                gradient_draws(problem.f, problem.params, distribution=problem.distribution, estimator=s.name,
                               draws=block, n_samples=s.min_samples, generator=gen, **_hparams(problem))
            except Exception as e:  # noqa: BLE001
                if errors is None:
                    raise
                errors[s.name] = _reason(e)
                del ms[s.name]
                continue
            ms[s.name].append((time.perf_counter() - t0) / block * 1e3)
    ratios = {n: ([v / b for v, b in zip(t, ms[baseline], strict=True)] if baseline in ms else [])
              for n, t in ms.items()}
    return {n: (ms[n], ratios[n]) for n in ms}


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


def _smoke(problem: Problem, spec: EstimatorSpec, seed: int) -> str | None:
    """Why ``spec`` cannot run on ``problem`` (one gradient raises), or ``None``."""
    try:
        gradient_draws(problem.f, problem.params, distribution=problem.distribution, estimator=spec.name, draws=1,
                       n_samples=spec.min_samples, generator=_generator(seed, problem.name, spec.name, "smoke"),
                       **_hparams(problem))
    except Exception as e:  # noqa: BLE001 -- one estimator that cannot run must not stop the board
        return _reason(e)
    return None


def _baseline(names: Sequence[str]) -> tuple[str | None, str]:
    for i, b in enumerate(BASELINES):
        if b in names:
            missing = ", ".join(BASELINES[:i])
            return b, (f"time ratio to `{b}`" + (f" (the family has no {missing})" if missing else ""))
    if names:
        return names[0], f"time ratio to `{names[0]}` (the family has none of {', '.join(BASELINES)})"
    return None, "no estimator ran"


def _skip_reason(spec: EstimatorSpec, problem: Problem) -> str | None:
    if spec.relaxed and not problem.relaxed_inputs:
        return "relaxed estimator: this problem's f is defined on discrete values only"
    return None


def rank_problem(problem: Problem, *, budget: Budget, seed: int, build_seconds: float = 0.0) -> ProblemResult:
    """Every registered estimator of ``problem.distribution`` on ``problem``, ranked by MSE: a smoke
    gradient (an estimator that raises is skipped with the reason), the interleaved timing, then
    ``compare`` with :meth:`Budget.draws_for` draws each against the exact gradient, computed once."""
    t0 = time.perf_counter()
    specs = estimators(problem.distribution)
    exact = exact_gradient(problem.f, problem.params, distribution=problem.distribution,
                           max_configs=problem.max_configs, **_hparams(problem))
    skipped: dict[str, str] = {}
    for s in specs:
        reason = _skip_reason(s, problem) or _smoke(problem, s, seed)
        if reason is not None:
            skipped[s.name] = reason
    baseline, note = _baseline([s.name for s in specs if s.name not in skipped])
    timing = time_estimators(problem, [s for s in specs if s.name not in skipped], baseline=baseline,
                             rounds=budget.rounds, block=budget.block, seed=seed, errors=skipped)
    reports: dict[str, GradientReport] = {}
    for s in specs:
        if s.name in skipped:
            continue
        try:
            rep = compare(problem.f, problem.params, distribution=problem.distribution, estimators=[s.name],
                          draws=budget.draws_for(statistics.median(timing[s.name][0])), n_samples=s.min_samples,
                          generator=_generator(seed, problem.name, s.name), exact=exact,
                          max_configs=problem.max_configs, **_hparams(problem))[0]
        except Exception as e:  # noqa: BLE001
            skipped[s.name] = _reason(e)
            continue
        if not math.isfinite(rep.mse):
            skipped[s.name] = f"non-finite gradients (MSE {rep.mse})"
        else:
            reports[s.name] = rep
    rows = []
    for s in specs:
        common = dict(estimator=s.name, kind=s.kind, unbiased=s.unbiased, relaxed=s.relaxed, n_samples=s.min_samples)
        if s.name not in reports:
            rows.append(Row(**common, skipped=skipped[s.name]))
            continue
        ms, ratio = timing[s.name]
        rows.append(Row(**common, report=reports[s.name], ms_per_gradient=statistics.median(ms),
                        time_ratio=statistics.median(ratio) if ratio else None,
                        ms_rounds=tuple(ms), ratio_rounds=tuple(ratio)))
    rows.sort(key=lambda r: (r.report is None, r.report.mse if r.report else 0.0, r.estimator))
    norm = float(torch.cat([t.flatten() for t in get_family(problem.distribution).split(exact)]).double().norm())
    return ProblemResult(problem, tuple(rows), baseline, note, norm, time.perf_counter() - t0, build_seconds)


# ----------------------------------------------------------------------------- the job

def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages when the run ends (other processes slow the run's wall time)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _select(entries: Sequence[Entry], distributions: Sequence[str] | None) -> list[Entry]:
    if distributions is None:
        return list(entries)
    wanted = [get_family(d).name for d in distributions]  # raises on an unknown name
    return [e for e in entries if e.distribution in wanted]


def run_leaderboard(out_dir: str | os.PathLike[str] = "results/leaderboard", *, entries: Sequence[Entry] | None = None,
                    distributions: Sequence[str] | None = None, draws: int | None = None, seed: int = 0,
                    quick: bool = False, command: str | None = None, environment: Mapping[str, Any] | None = None,
                    echo: Callable[[str], None] = print) -> list[ProblemResult]:
    """Rank every registered estimator on every problem of ``entries`` (default :func:`builtin_entries`)
    of the ``distributions`` given (default all); write the tables, Pareto plots, JSON and README
    under ``out_dir``. ``quick``: 20 draws (unless ``draws`` says), 2 timing rounds of 2 gradients,
    and the entries' quick builds."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Expected seed to be an int >= 0, but got {seed!r}")
    budget = Budget.of(quick, draws)
    chosen = _select(builtin_entries() if entries is None else entries, distributions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # one intra-op thread: the tensors are small (threads add overhead), the timing is steadier, and a
    # machine shared with other jobs slows one thread far less than two that wait for each other
    torch.set_num_threads(1)
    try:
        results, unavailable, wall, cpu = _run(chosen, out, budget, seed, command, echo, quick)
    finally:
        torch.set_num_threads(threads)
    ranked = {e.distribution for e in chosen}
    no_problem = [d for d in (distributions or families()) if d not in ranked]
    meta = {"command": command, "environment": dict(environment or {}), "seed": seed, "quick": quick,
            "budget": dataclasses.asdict(budget), "torch_threads": 1, "wall_seconds": wall, "cpu_seconds": cpu,
            "load_average": _load_average()}
    report.write_all(results, unavailable, no_problem, out, meta)
    return results


def _run(chosen: Sequence[Entry], out: Path, budget: Budget, seed: int, command: str | None,
         echo: Callable[[str], None], quick: bool) -> tuple[list[ProblemResult], list[tuple[Entry, str]], float, float]:
    results: list[ProblemResult] = []
    unavailable: list[tuple[Entry, str]] = []
    t_start, cpu_start = time.perf_counter(), time.process_time()
    for entry in chosen:
        t0 = time.perf_counter()
        try:
            problem = entry.build(quick)
        except Unavailable as e:
            unavailable.append((entry, str(e)))
            echo(f"{entry.name}: skipped ({e})")
            continue
        result = rank_problem(problem, budget=budget, seed=seed, build_seconds=time.perf_counter() - t0)
        results.append(result)
        report.write_problem(result, out, budget=budget, seed=seed, command=command)
        echo(report.summary_line(result))
    return results, unavailable, time.perf_counter() - t_start, time.process_time() - cpu_start
