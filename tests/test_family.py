"""The family object: parameters with constraints, options, several tensor parameters, and the
registry's consistency checks between families and estimators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.distributions import constraints

import discretegrad as dg
from discretegrad import registry, score_function
from discretegrad._validation import finite_float_tensor
from discretegrad.family import Family, Param

UNBIASED_ALPHA = 1e-4  # family-wise false-failure rate of the unbiasedness check (Bonferroni over coordinates)


def _real(t, name):
    return finite_float_tensor(name, t)


def _product_family() -> Family:
    """A toy two-parameter family: z ~ Bernoulli(σ(a b)), ``a`` and ``b`` tensors of the same shape."""

    def sample(params, generator):
        a, b = params
        x = (a * b).detach()
        u = torch.rand(x.shape, dtype=x.dtype, generator=generator)
        return (u < torch.sigmoid(x)).to(x.dtype)

    def log_prob(params, z):
        a, b = params
        return z * F.logsigmoid(a * b) + (1 - z) * F.logsigmoid(-a * b)

    def support(params):
        a, b = params
        atoms = torch.tensor([0.0, 1.0], dtype=a.dtype)
        return atoms, torch.stack([F.logsigmoid(-a * b), F.logsigmoid(a * b)], -1)

    return Family(name="product_bernoulli",
                  params=(Param("a", constraints.real, _real), Param("b", constraints.real, _real)),
                  event_ndim=0, sample_fn=sample, log_prob_fn=log_prob, support_fn=support,
                  mean_fn=lambda params: torch.sigmoid(params[0] * params[1]))


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))


def test_declared_parameters_and_options():
    topk = dg.get_family("topk")
    assert topk.param_name == "logits" and topk.option_names == ("k",)
    assert topk.arg_constraints == {"logits": constraints.real_vector}
    assert dg.get_family("poisson").arg_constraints == {"rate": constraints.positive}
    assert dg.get_family("arborescence").option_defaults() == {"root": 0}
    assert repr(dg.get_family("binomial").option_defaults()["total_count"]) == "REQUIRED"
    with pytest.raises(ValueError, match=r"Expected k to be given .*options \['k'\]"):
        topk.check_options({}, torch.zeros(5))
    with pytest.raises(ValueError, match=r"Expected k to be an int in \[1, 5\]"):
        topk.check_options({"k": 6}, torch.zeros(5))
    with pytest.raises(ValueError, match=r"options \['k'\].*but got \['k', 'n'\]"):
        topk.check_options({"k": 2, "n": 1}, torch.zeros(5))
    assert dg.get_family("arborescence").check_options({}, torch.zeros(3, 3)) == {"root": 0}


def test_registry_checks_estimators_against_their_family(isolated_registry):
    with pytest.raises(ValueError, match="distribution"):
        dg.register("x", distribution="no_such_family")(lambda p, *, generator=None: p)
    with pytest.raises(TypeError, match="option 'k'"):  # an op of "topk" must take k
        dg.register("no_k", distribution="topk")(lambda logits, *, generator=None: logits)

    def takes_k(logits, *, k, generator=None):
        return dg.subsets.topk(logits, k, generator=generator)

    dg.register("takes_k", distribution="topk")(takes_k)
    spec = dg.get_estimator("takes_k", distribution="topk")
    assert spec.required == ("k",) and spec.hyperparameters == {"k": registry.REQUIRED}
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(dg.get_family("topk"))


def test_several_tensor_parameters_through_every_layer(isolated_registry):
    family = registry.register_family(_product_family())
    score_function.register_for("product_bernoulli", "reinforce", "rloo")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(3, generator=gen, dtype=torch.float64)

    def f(z):
        return torch.sin(z @ w) + (z.sum(-1) - 1.0) ** 2

    # the exact oracle: closed form of E[f] by enumerating the 2^3 configurations independently
    exact_value = dg.exact.expectation(f, (a, b), distribution="product_bernoulli")
    p = torch.sigmoid(a * b)
    configs = torch.tensor([[(c >> i) & 1 for i in range(3)] for c in range(8)], dtype=torch.float64)
    probs = (configs[:, None, :] * p + (1 - configs[:, None, :]) * (1 - p)).prod(-1)  # [8, 2]
    torch.testing.assert_close(exact_value, (probs * f(configs)[:, None]).sum(0))
    ga, gb = dg.exact.gradient(f, (a, b), distribution="product_bernoulli")
    assert ga.shape == a.shape and gb.shape == b.shape

    # unbiasedness of the generic score-function estimators for both parameters: z·SE, Bonferroni
    draws = 4000
    for name in ("reinforce", "rloo"):
        la = a.expand(draws, 2, 3).clone().requires_grad_(True)
        lb = b.expand(draws, 2, 3).clone().requires_grad_(True)
        value = dg.surrogate(f, (la, lb), distribution="product_bernoulli", estimator=name, n_samples=2,
                             generator=torch.Generator().manual_seed(1))
        assert value.shape == (draws, 2)
        grads = torch.autograd.grad(value.sum(), (la, lb))
        z = stats.norm.isf(UNBIASED_ALPHA / (2 * 12))
        for g, exact in zip(grads, (ga, gb), strict=True):
            mean, se = g.mean(0), g.std(0) / math.sqrt(draws)
            assert ((mean - exact).abs() <= z * se + 1e-12).all(), (name, ((mean - exact) / se).abs().max())

    reports = dg.diagnostics.compare(f, (a, b), distribution="product_bernoulli", estimators=["reinforce"],
                                     draws=50, generator=torch.Generator().manual_seed(2))
    assert reports[0].exact_norm == pytest.approx(float(torch.cat([ga.flatten(), gb.flatten()]).norm()))

    with pytest.raises(TypeError, match=r"tuple of tensors \['a', 'b'\]"):
        family.check(a)
    with pytest.raises(ValueError, match="variable shape"):
        family.check((a, b[:, :2]))
    with pytest.raises(ValueError, match="finite"):
        family.check((a, b.clone().fill_(float("nan"))))
