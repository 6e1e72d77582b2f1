"""The generic estimator suite: every registered estimator, with no per-estimator edits.

Parametrized over ``dg.estimators()``; per-distribution fixtures come from
``tests/problems/<distribution>.py``. Statistical tests use fixed seeds, so they are
deterministic; their stated false-failure rate is what a fresh seed would give. Policy (as
torch.distributions): bumping a seed once is allowed, needing it twice means a bug.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import discretegrad as dg
from discretegrad.distributions import get_distribution
from problems import LAW_ALPHA, case_for

SPECS = dg.estimators()
OPS = [s for s in SPECS if s.kind == "op"]
HARD_OPS = [s for s in OPS if not s.relaxed]
UNBIASED = [s for s in SPECS if s.unbiased]
BIASED_OPS_WITH_REF = [s for s in OPS
                       if not s.unbiased and s.name in getattr(case_for(s.distribution), "references", {})]
LOW = [torch.bfloat16, torch.float16]


def sid(spec: dg.EstimatorSpec) -> str:
    return f"{spec.distribution}:{spec.name}"


def case(spec):
    c = case_for(spec.distribution)
    assert c is not None, f"no tests/problems/{spec.distribution}.py"
    return c


def hp(spec, **extra):
    """The case's test hyperparameters that this estimator accepts, plus ``extra``."""
    base = {k: v for k, v in case(spec).test_hparams.items() if k in spec.hyperparameters}
    return {**base, **extra}


def call_op(spec, params, generator=None, **extra):
    return spec.fn(params, generator=generator, **hp(spec, **extra))


def lead_shapes():
    return [(), (3,), (2, 3), (2, 1, 2)]


# ----------------------------------------------------------------------------- forward law

@pytest.mark.parametrize("spec", HARD_OPS, ids=sid)
def test_forward_law(spec):
    """Hard samples are in the support and follow the law (goodness of fit, α = LAW_ALPHA), under the
    case's ``law_hparams`` for an op whose default sample only approximates the law."""
    c = case(spec)
    params = c.law_params()
    z = call_op(spec, params.expand(20000, *params.shape), torch.Generator().manual_seed(0),
                **c.law_hparams.get(spec.name, {}))
    assert c.is_valid(z)
    p = c.law_pvalue(params, z)
    assert p > LAW_ALPHA, f"goodness-of-fit p-value {p:.2e} < {LAW_ALPHA}"


# ----------------------------------------------------------------------------- shapes, dtypes, generator

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("spec", OPS, ids=sid)
def test_shape_dtype_and_finite_gradient(spec, dtype):
    c = case(spec)
    base = c.law_params()
    for lead in lead_shapes():
        params = base.expand(*lead, *base.shape).to(dtype).clone().requires_grad_(True)
        out = call_op(spec, params, torch.Generator().manual_seed(1))
        assert out.shape == params.shape and out.dtype == dtype and out.device == params.device
        assert torch.isfinite(out).all()
        if not spec.relaxed:
            assert c.is_valid(out.double())
        v = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        (grad,) = torch.autograd.grad((out * v).sum(), params)
        assert grad.dtype == dtype and torch.isfinite(grad).all()


@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_generator_reproducibility(spec):
    c = case(spec)
    prob = c.problems()[0]

    def draw(seed):
        params = prob.params.clone().requires_grad_(True)
        value = dg.surrogate(prob.f, params, distribution=spec.distribution, estimator=spec.name, n_samples=2,
                             generator=torch.Generator().manual_seed(seed), **hp(spec))
        (grad,) = torch.autograd.grad(value.sum(), params)
        return value.detach(), grad

    v1, g1 = draw(5)
    v2, g2 = draw(5)
    assert torch.equal(v1, v2) and torch.equal(g1, g2)
    if spec.kind == "op":
        params = c.law_params().expand(500, *c.law_params().shape)
        a = call_op(spec, params, torch.Generator().manual_seed(1))
        b = call_op(spec, params, torch.Generator().manual_seed(2))
        assert not torch.equal(a, b), "different seeds gave identical samples"


@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_surrogate_value_and_shapes(spec):
    """Value = Monte Carlo mean of f; shape = batch shape; f's own parameters get gradients."""
    prob = case(spec).problems()[0]
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    params = prob.params.clone().requires_grad_(True)
    value = dg.surrogate(lambda z: scale * prob.f(z), params, distribution=spec.distribution,
                         estimator=spec.name, n_samples=3, generator=torch.Generator().manual_seed(0), **hp(spec))
    family = get_distribution(spec.distribution)
    options = {o: hp(spec)[o] for o in family.option_names if o in hp(spec)}  # e.g. k for "topk"
    batch = prob.f(family.sample(prob.params, torch.Generator().manual_seed(1), **options).unsqueeze(0)).shape[1:]
    assert value.shape == batch
    g_params, g_scale = torch.autograd.grad(value.sum(), (params, scale))
    assert torch.isfinite(g_params).all()
    # d/d scale of mean(scale * f) = mean f = value / scale: the pathwise gradient into f's parameters
    torch.testing.assert_close(g_scale, value.detach().sum() / scale.detach())


# ----------------------------------------------------------------------------- extreme inputs

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("spec", OPS, ids=sid)
def test_extreme_inputs_stay_finite(spec, dtype):
    c = case(spec)
    taus = [1e-3, 1.0, 1e3] if "tau" in spec.hyperparameters else [None]
    for params in c.extreme_params(dtype):
        for tau in taus:
            extra = {} if tau is None else {"tau": tau}
            leaf = params.clone().requires_grad_(True)
            out = call_op(spec, leaf, torch.Generator().manual_seed(3), **extra)
            assert torch.isfinite(out).all(), f"non-finite output for tau={tau}"
            if not spec.relaxed:
                assert c.is_valid(out.double())
            v = torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(dtype)
            (grad,) = torch.autograd.grad((out * v).sum(), leaf)
            assert torch.isfinite(grad).all(), f"non-finite gradient for tau={tau}"


# ----------------------------------------------------------------------------- gradient references

def reference_grid(spec) -> list[dict]:
    """Every combination of the case's reference values of this estimator's hyperparameters."""
    grid = [{}]
    for name, values in case(spec).reference_grid.items():
        if name in spec.hyperparameters:
            grid = [{**g, name: v} for g in grid for v in values]
    return grid


@pytest.mark.parametrize("spec", BIASED_OPS_WITH_REF, ids=sid)
def test_gradient_matches_paper_formula(spec):
    """Given the drawn sample (and replayed noise), the gradient equals the paper's formula."""
    c = case(spec)
    ref = c.references[spec.name]
    assert c.reference_params is not None, f"tests/problems/{spec.distribution}.py: no reference_params"
    gen = torch.Generator().manual_seed(11)
    theta = c.reference_params(gen)
    for extra in reference_grid(spec):
        leaf = theta.clone().requires_grad_(True)
        before = torch.Generator().manual_seed(0)
        replay = torch.Generator().set_state(before.get_state())
        out = call_op(spec, leaf, before, **extra)
        v = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        (grad,) = torch.autograd.grad((out * v).sum(), leaf)
        expected = ref(theta.clone(), out, v, replay, **hp(spec, **extra))
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=c.reference_atol,
                                   msg=lambda m, e=extra: f"{e}: {m}")


# ----------------------------------------------------------------------------- unbiasedness

DRAWS = 4000
UNBIASED_ALPHA = 1e-4  # family-wise false-failure rate per (estimator, problem), Bonferroni over coordinates


@pytest.mark.parametrize("spec", UNBIASED, ids=sid)
def test_unbiased_against_exact(spec):
    """Mean of DRAWS independent gradient estimates is within z·SE of dg.exact, per coordinate.

    The draws are independent because the problem is replicated along a new leading batch dim
    (f keeps every leading dim), so one backward gives DRAWS draws.
    """
    options = {o: v for o, v in hp(spec).items() if o in get_distribution(spec.distribution).option_names}
    for prob in case(spec).problems():
        exact = dg.exact.gradient(prob.f, prob.params, distribution=spec.distribution, **options)
        params = prob.params.expand(DRAWS, *prob.params.shape).clone().requires_grad_(True)
        value = dg.surrogate(prob.f, params, distribution=spec.distribution, estimator=spec.name, n_samples=2,
                             generator=torch.Generator().manual_seed(21), **hp(spec))
        (grads,) = torch.autograd.grad(value.sum(), params)
        mean, se = grads.mean(0), grads.std(0) / math.sqrt(DRAWS)
        z = stats.norm.isf(UNBIASED_ALPHA / (2 * exact.numel()))
        # a coordinate whose gradient is exactly zero in every draw (se = 0) must be exact too
        tol = z * se + 1e-10 * (1 + exact.abs())
        bad = (mean - exact).abs() > tol
        worst = ((mean - exact).abs() / se).max()
        assert not bad.any(), f"{prob.name}: max |mean - exact|/SE = {worst:.2f} > z = {z:.2f}"


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_bad_hyperparameters_raise(spec):
    c = case(spec)
    prob = c.problems()[0]
    if not any(c.bad_hparams.get(name) for name in spec.hyperparameters):
        pytest.skip(f"{sid(spec)} has no hyperparameter with listed invalid values")
    for name in spec.hyperparameters:
        for bad in c.bad_hparams.get(name, []):
            with pytest.raises((ValueError, TypeError), match=name):
                dg.surrogate(prob.f, prob.params, distribution=spec.distribution, estimator=spec.name,
                             n_samples=2, generator=torch.Generator().manual_seed(0), **{**hp(spec), name: bad})
            if spec.kind == "op":
                with pytest.raises((ValueError, TypeError), match=name):
                    call_op(spec, prob.params, torch.Generator().manual_seed(0), **{name: bad})


@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_bad_params_raise(spec):
    c = case(spec)
    for bad, exc in c.bad_params():
        with pytest.raises(exc):
            dg.surrogate(lambda z: z.flatten(1).sum(-1), bad, distribution=spec.distribution, estimator=spec.name,
                         n_samples=2, generator=torch.Generator().manual_seed(0), **hp(spec))


@pytest.mark.parametrize("spec", SPECS, ids=sid)
def test_unknown_hyperparameter_and_bad_f(spec):
    prob = case(spec).problems()[0]
    with pytest.raises(ValueError, match="hyperparameters"):
        dg.surrogate(prob.f, prob.params, distribution=spec.distribution, estimator=spec.name, n_samples=2,
                     generator=torch.Generator().manual_seed(0), not_a_hparam=1, **hp(spec))
    with pytest.raises(ValueError, match="f to return costs"):
        dg.surrogate(lambda z: prob.f(z).unsqueeze(-1).expand(*prob.f(z).shape, 7), prob.params,
                     distribution=spec.distribution, estimator=spec.name, n_samples=2,
                     generator=torch.Generator().manual_seed(0), **hp(spec))


@pytest.mark.parametrize("spec", [s for s in OPS if s.distribution == "categorical"], ids=sid)
def test_nan_check_switchable(spec):
    bad = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(ValueError, match="logits"):
        call_op(spec, bad, torch.Generator().manual_seed(0))
    with dg.validate_args(False):
        call_op(spec, bad, torch.Generator().manual_seed(0))  # no check, no error (garbage in, garbage out)
    assert dg.get_default_validate_args()
