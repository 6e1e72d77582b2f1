"""Property-based soak: every registered estimator on random valid problems (hypothesis).

Iterates ``dg.estimators()``, so a new estimator is covered with no edit here; problems come from
the family's fixture ``tests/problems/<family>.py`` (its ``Soak``: sizes, parameter map, options,
convex hull; its ``extreme_params``, ``is_valid``, ``test_hparams`` and ``reference_grid``). Each
case draws: a dtype (float16, bfloat16, float32, float64); a pattern of logits (random, a common
offset with O(1) differences, ties at five levels, all equal, one entry at ±1e4, or one of the
fixture's extreme inputs) of magnitude ``10^[-3, 4]`` (at most 1e4; the ends and 1, 100 drawn
more often); a shape (0-2 batch dims of size 1-3, every event size of the
fixture's range); every valid option (each ``k`` in ``1..n``, each ``root``); ``tau`` log-uniform
in ``[1e-3, 1e3]`` (the ends and 1 more often); the other hyperparameters from the fixture's
``reference_grid``; a noise seed.

Properties, per case:

* ops: output of the parameters' shape, dtype and device, gradient of ``<v, out>`` of the same;
  surrogate-kind estimators, through :func:`dg.surrogate`: a scalar value and a gradient of the
  parameters' shape, dtype and device;
* outputs and gradients finite, unless a half dtype genuinely overflows: the same case recomputed
  in float32 (same values, same seed) has an output, a gradient or a cost ``f`` beyond the half
  dtype's largest finite value;
* hard ops: every sample valid (``is_valid(z, **options)``: in the support);
* relaxed ops: in the convex hull of the support (``Soak.in_hull``), or in the weaker set an
  estimator is documented to reach (``Soak.outside_hull``: L2X, SoftSub), within
  ``tol = 1e-4 + eps(dtype)`` per entry and ``tol`` per summed entry for equalities and subset sums;
* documented limits (``Soak.refused``: the Gumbel-top-k law's ``k! <= 5040``) raise a ValueError.

Budget: ``DISCRETEGRAD_SOAK_CASES`` cases in all, split evenly over the estimators (default 10 per
estimator, 440 cases for 44 estimators, a few seconds), derandomised (hypothesis derives the draws
from the test, so CI is deterministic). The full soak, 10,000 cases, is one command::

    DISCRETEGRAD_SOAK_CASES=10000 .venv/bin/python -m pytest -q -n 2 -m slow tests/test_soak.py

``DISCRETEGRAD_SOAK_LOG=FILE`` appends one JSON line per estimator (cases, refusals, half-precision
overflows, seconds) for the record in ``results/reliability/soak.md`` (``benchmarks/run_soak.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import discretegrad as dg
from discretegrad.distributions import get_distribution
from problems import case_for

SPECS = dg.estimators()
DEFAULT_PER_ESTIMATOR = 10
TOTAL = int(os.environ.get("DISCRETEGRAD_SOAK_CASES", "0") or 0)
PER_ESTIMATOR = max(DEFAULT_PER_ESTIMATOR, math.ceil(TOTAL / len(SPECS))) if TOTAL else DEFAULT_PER_ESTIMATOR
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
PATTERNS = ["random", "offset", "ties", "all_equal", "one_huge", "extreme"]
HALF = (torch.float16, torch.bfloat16)
BIG = 1e4

# hypothesis keeps a cache of the constants it finds in the source under its home directory (default
# .hypothesis/ in the working directory): keep it out of the checkout
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "discretegrad-hypothesis")
SOAK_SETTINGS = settings(max_examples=PER_ESTIMATOR, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), print_blob=True)


def sid(spec) -> str:
    return f"{spec.distribution}:{spec.name}"


@dataclasses.dataclass
class Drawn:
    params: torch.Tensor
    size: int
    pattern: str
    options: dict
    hparams: dict
    seed: int

    def __repr__(self) -> str:  # what hypothesis prints for a failing case
        return (f"Drawn(pattern={self.pattern!r}, dtype={self.params.dtype}, shape={tuple(self.params.shape)}, "
                f"options={self.options}, hparams={self.hparams}, seed={self.seed},\n"
                f"      params={self.params.tolist()})")


def _values(pattern: str, shape: tuple[int, ...], scale: float, gen: torch.Generator) -> torch.Tensor:
    """Float64 logits of one pattern, at most BIG in magnitude."""
    if pattern == "random":
        x = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    elif pattern == "offset":  # a common offset of size scale, O(1) differences
        sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
        x = sign * scale + torch.randn(shape, generator=gen, dtype=torch.float64)
    elif pattern == "ties":  # five levels, many entries tied
        x = scale * torch.randint(-2, 3, shape, generator=gen).double() / 2
    elif pattern == "all_equal":
        sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
        x = torch.full(shape, sign * scale, dtype=torch.float64)
    else:  # one_huge: one entry at ±BIG among O(1) logits
        x = torch.randn(shape, generator=gen, dtype=torch.float64).flatten()
        if x.numel():
            x[int(torch.randint(x.numel(), (), generator=gen))] = BIG if torch.rand((), generator=gen) < 0.5 else -BIG
        x = x.reshape(shape)
    return x.clamp(-BIG, BIG)


@st.composite
def problems(draw, spec) -> Drawn:
    case = case_for(spec.distribution)
    soak = case.soak
    family = get_distribution(spec.distribution)
    dtype = draw(st.sampled_from(DTYPES))
    pattern = draw(st.sampled_from(PATTERNS))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    event_ndim = family.params[0].event_ndim
    if pattern == "extreme":
        extremes = case.extreme_params(dtype)
        params = extremes[draw(st.integers(0, len(extremes) - 1))]
        size = params.shape[-1] if event_ndim else 1
    else:
        size = draw(st.integers(*soak.sizes))
        lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        scale = 10.0 ** draw(st.one_of(st.sampled_from([-3.0, 0.0, 2.0, 4.0]), st.floats(-3, 4)))
        params = soak.to_params(_values(pattern, lead + soak.event_shape(size), scale, gen)).to(dtype)
    options = draw(st.sampled_from(soak.options(size)))
    hparams = dict(options)
    for name in spec.hyperparameters:
        if name == "tau":
            hparams["tau"] = 10.0 ** draw(st.one_of(st.sampled_from([-3.0, 0.0, 3.0]), st.floats(-3, 3)))
        elif name not in hparams and name in case.reference_grid:
            hparams[name] = draw(st.sampled_from(case.reference_grid[name]))
    hparams = {k: v for k, v in hparams.items() if k in spec.hyperparameters}
    return Drawn(params, size, pattern, options, hparams, seed)


# ----------------------------------------------------------------------------- one case

def _run(spec, params: torch.Tensor, d: Drawn, costs: list[float]):
    """(output, gradient) of one case; surrogate-kind estimators through dg.surrogate with a cost
    that is bounded for relaxed inputs (its linear part's magnitude recorded in ``costs``)."""
    leaf = params.detach().clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(d.seed)
    if spec.kind == "op":
        out = spec.fn(leaf, generator=gen, **d.hparams)
        assert out.requires_grad, "the op's output carries no gradient"
        v = torch.randn(out.shape, generator=torch.Generator().manual_seed(d.seed + 1)).to(out.dtype)
        (grad,) = torch.autograd.grad((out * v).sum(), leaf)
        return out, grad
    w = torch.randn(params.shape, generator=torch.Generator().manual_seed(d.seed + 1)).to(params.dtype)

    def f(z):
        lin = (z * w).reshape(z.shape[0], -1).sum(-1)
        costs.append(float(lin.detach().abs().max()) if lin.numel() else 0.0)
        return torch.sin(lin) + 0.1 * lin / max(1, w.numel())

    n = max(2, spec.min_samples)
    out = dg.surrogate(f, leaf, distribution=spec.distribution, estimator=spec.name, n_samples=n, generator=gen,
                       **d.hparams)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    return out, grad


def _overflows_half(spec, d: Drawn) -> bool:
    """Whether the case, recomputed in float32, has a value beyond the half dtype's range."""
    big = torch.finfo(d.params.dtype).max
    costs: list[float] = []
    out, grad = _run(spec, d.params.float(), d, costs)
    peak = max([float(out.detach().abs().max()), float(grad.abs().max()), *costs] if out.numel() else [0.0])
    return not math.isfinite(peak) or peak > big


STATS: dict[str, dict[str, float]] = {}


def _check(spec, d: Drawn) -> None:
    case = case_for(spec.distribution)
    soak = case.soak
    stats = STATS.setdefault(sid(spec), {"cases": 0, "refused": 0, "half_overflow": 0})
    stats["cases"] += 1
    for key in (str(d.params.dtype).removeprefix("torch."), d.pattern):
        stats[key] = stats.get(key, 0) + 1
    reason = soak.refused(spec, d.size, d.options)
    if reason is not None:  # a documented limit: refused with a message, nothing computed
        with pytest.raises(ValueError, match="Expected"):
            _run(spec, d.params, d, [])
        stats["refused"] += 1
        return
    out, grad = _run(spec, d.params, d, [])
    params = d.params
    if spec.kind == "op":
        assert out.shape == params.shape, f"output shape {tuple(out.shape)} != {tuple(params.shape)}"
    else:
        assert out.shape == (), f"surrogate value shape {tuple(out.shape)} != ()"
    assert out.dtype == params.dtype and out.device == params.device
    assert grad.shape == params.shape and grad.dtype == params.dtype and grad.device == params.device
    finite = bool(torch.isfinite(out).all()) and bool(torch.isfinite(grad).all())
    if not finite:
        assert params.dtype in HALF and _overflows_half(spec, d), (
            f"non-finite output or gradient (output finite: {bool(torch.isfinite(out).all())}, "
            f"gradient finite: {bool(torch.isfinite(grad).all())}) that float32 does not overflow")
        stats["half_overflow"] += 1
        return
    if spec.kind != "op":
        return
    z = out.detach()
    if not spec.relaxed:
        assert case.is_valid(z.double(), **d.options), "a hard sample outside the support"
        return
    tol = 1e-4 + torch.finfo(params.dtype).eps
    inside = soak.outside_hull.get(spec.name, soak.in_hull)
    assert inside is not None, f"tests/problems/{spec.distribution}.py: Soak.in_hull is needed for relaxed ops"
    assert inside(z, tol, **d.options), "a relaxed output outside the convex hull of the support"


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_soak(spec):
    """Every property of the module docstring on PER_ESTIMATOR random cases of this estimator."""
    assert case_for(spec.distribution).soak is not None, f"tests/problems/{spec.distribution}.py: no Soak"
    start = time.perf_counter()

    @SOAK_SETTINGS
    @given(problems(spec))
    def run(d):
        _check(spec, d)

    run()
    log = os.environ.get("DISCRETEGRAD_SOAK_LOG")
    if log:
        record = {"estimator": sid(spec), **STATS.get(sid(spec), {}), "seconds": time.perf_counter() - start}
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
