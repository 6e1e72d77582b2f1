"""The torch.distributions objects (dg.Categorical, ...) and the dg.nn layers, on the generic fixtures.

Parametrised over the registry: every registered op is checked as an ``rsample``, every family's
law (sample, log_prob, entropy, mean) against ``dg.exact`` / enumeration.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributions as td

import discretegrad as dg
from discretegrad.distributions import CLASSES, make
from _nets import linear
from problems import LAW_ALPHA, case_for

SPECS = dg.estimators()
OPS = [s for s in SPECS if s.kind == "op"]
NEEDS_F = [s for s in SPECS if s.kind == "surrogate"]
FAMILIES = sorted(CLASSES)
LAW_FAMILIES = [f for f in FAMILIES if f != "arborescence"]  # the arborescence law is not computable


def sid(spec):
    return f"{spec.distribution}:{spec.name}"


def options(distribution):
    family = dg.get_family(distribution)
    return {k: v for k, v in case_for(distribution).test_hparams.items() if k in family.option_names}


def hp(spec):
    return {k: v for k, v in case_for(spec.distribution).test_hparams.items() if k in spec.hyperparameters}


def test_every_family_has_a_class():
    assert FAMILIES == dg.families()
    for name, cls in CLASSES.items():
        assert issubclass(cls, td.Distribution) and getattr(dg, cls.__name__) is cls


# ----------------------------------------------------------------------------- rsample = the functional op

@pytest.mark.parametrize("spec", OPS, ids=sid)
def test_rsample_equals_the_functional_op(spec):
    c = case_for(spec.distribution)
    base = c.law_params()
    for sample_shape in [(), (3,), (2, 2)]:
        a_leaf, b_leaf = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
        q = make(spec.distribution, a_leaf, estimator=spec.name, **hp(spec))
        assert q.has_rsample
        a = q.rsample(sample_shape, generator=torch.Generator().manual_seed(4))
        b = spec.fn(b_leaf.expand(*sample_shape, *base.shape), generator=torch.Generator().manual_seed(4), **hp(spec))
        assert a.shape == q._extended_shape(sample_shape)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        v = torch.linspace(-1, 1, a.numel(), dtype=a.dtype).reshape(a.shape)
        (ga,) = torch.autograd.grad((a * v).sum(), a_leaf)
        (gb,) = torch.autograd.grad((b * v).sum(), b_leaf)
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)
        if not spec.relaxed and sample_shape:
            assert bool(q.support.check(a.detach()).all())


@pytest.mark.parametrize("spec", NEEDS_F, ids=sid)
def test_score_function_estimators_are_refused_by_rsample(spec):
    q = make(spec.distribution, case_for(spec.distribution).law_params(), estimator=spec.name, **hp(spec))
    assert not q.has_rsample
    with pytest.raises(ValueError, match="dg.surrogate"):
        q.rsample()
    z = q.sample((4,), generator=torch.Generator().manual_seed(0))  # sample and log_prob still work
    assert torch.isfinite(q.log_prob(z)).all()


def test_estimator_and_hparams_are_checked():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="estimator"):
        dg.Categorical(logits=logits, estimator="nope")
    with pytest.raises(ValueError, match="hyperparameters"):
        dg.Categorical(logits=logits, estimator="st", gap=1.0)
    with pytest.raises(ValueError, match="tau"):
        dg.Categorical(logits=logits, estimator="gst", tau=-1.0).rsample()
    with pytest.raises(ValueError, match="k"):
        dg.TopK(9, logits=logits)


# ----------------------------------------------------------------------------- the law

@pytest.mark.parametrize("distribution", FAMILIES)
def test_sample_follows_the_law(distribution):
    c = case_for(distribution)
    params = c.law_params()
    q = make(distribution, params, **options(distribution))
    z = q.sample((20000,), generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, *params.shape) and not z.requires_grad and c.is_valid(z)
    p = c.law_pvalue(params, z)
    assert p > LAW_ALPHA, f"goodness-of-fit p-value {p:.2e} < {LAW_ALPHA}"


@pytest.mark.parametrize("distribution", LAW_FAMILIES)
def test_log_prob_entropy_mean_against_exact(distribution):
    """Entropy = exact E[-log p(z)] (dg.exact enumerates the joint support of each batch element);
    the probabilities of the enumerated support sum to one; mean = Σ p(z) z."""
    opts = options(distribution)
    for prob in case_for(distribution).problems():
        params = prob.params.clone().requires_grad_(True)
        q = make(distribution, params, **opts)
        var_dims = tuple(range(1, len(q.batch_shape))) if len(q.batch_shape) > 1 else ()

        def neg_log_p(z):
            lp = -q.log_prob(z)
            return lp.sum(tuple(d + 1 for d in var_dims)) if var_dims else lp

        exact = dg.exact.expectation(neg_log_p, params, distribution=distribution, batch_ndim=1, **opts)
        entropy = q.entropy()
        torch.testing.assert_close(entropy.sum(var_dims) if var_dims else entropy, exact)
        (g_exact,) = torch.autograd.grad(exact.sum(), params, retain_graph=True)
        (g_ent,) = torch.autograd.grad(entropy.sum(), params)
        torch.testing.assert_close(g_ent, g_exact)
        if q.has_enumerate_support:
            atoms = q.enumerate_support()
            lp = q.log_prob(atoms)
            torch.testing.assert_close(lp.exp().sum(0), torch.ones(q.batch_shape, dtype=lp.dtype))
            shape = (lp.shape[0], *q.batch_shape, *(1,) * len(q.event_shape))
            torch.testing.assert_close(q.mean, (lp.exp().reshape(shape) * atoms).sum(0))


TORCH_TWINS = {
    "categorical": lambda l, o: td.OneHotCategorical(logits=l),
    "bernoulli": lambda l, o: td.Bernoulli(logits=l),
    "poisson": lambda r, o: td.Poisson(r),
    "binomial": lambda l, o: td.Binomial(o["total_count"], logits=l),
}


@pytest.mark.parametrize("distribution", sorted(TORCH_TWINS))
def test_agrees_with_torch_distributions(distribution):
    c = case_for(distribution)
    params, opts = c.law_params(), options(distribution)
    ours, theirs = make(distribution, params, **opts), TORCH_TWINS[distribution](params, opts)
    z = ours.sample((50,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.log_prob(z), theirs.log_prob(z))
    torch.testing.assert_close(ours.mean, theirs.mean)
    torch.testing.assert_close(ours.variance, theirs.variance)
    torch.testing.assert_close(ours.mode, theirs.mode.nan_to_num(0.0))  # torch: NaN at a Bernoulli tie; ours: 0
    assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
    if distribution != "poisson":  # torch has no Poisson entropy
        torch.testing.assert_close(ours.entropy(), theirs.entropy())
    if ours.has_enumerate_support:
        torch.testing.assert_close(ours.enumerate_support(), theirs.enumerate_support())


def test_modes_are_the_most_likely_structures():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(4, 4, generator=g, dtype=torch.float64) * 2
        for q in (dg.SpanningTree(w + w.T), dg.TopK(3, logits=torch.randn(6, generator=g, dtype=torch.float64) * 2)):
            atoms = q.enumerate_support()
            assert torch.equal(atoms[q.log_prob(atoms).argmax()], q.mode)


def test_arborescence_law_is_refused_clearly():
    c = case_for("arborescence")
    q = dg.Arborescence(c.law_params(), root=0)
    z = q.rsample((5,), generator=torch.Generator().manual_seed(0))
    assert c.is_valid(z) and c.is_valid(q.mode.unsqueeze(0))
    for method in (lambda: q.log_prob(z), q.entropy, lambda: q.mean):
        with pytest.raises(ValueError, match="no closed form"):
            method()
    with pytest.raises(NotImplementedError, match="not computable"):
        q.enumerate_support()


def test_entropy_enumeration_limit():
    with pytest.raises(ValueError, match="MAX_ENUMERATION"):
        dg.TopK(10, logits=torch.zeros(30)).entropy()


# ----------------------------------------------------------------------------- probs, validation, expand

def test_probs_are_validated_and_converted():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]], dtype=torch.float64)
    q = dg.Categorical(probs=p)
    torch.testing.assert_close(q.probs, p)
    assert torch.isneginf(q.logits[1, 0])  # a zero probability is a masked class
    z = q.rsample((100,), generator=torch.Generator().manual_seed(0))
    assert (z[:, 1] == torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).all()
    torch.testing.assert_close(q.entropy(), td.OneHotCategorical(probs=p).entropy())  # masked classes: 0 log 0 = 0
    leaf = p.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dg.Categorical(probs=leaf).entropy().sum(), leaf)
    assert torch.isfinite(grad[0]).all()
    for bad, match in [(torch.tensor([0.5, 0.6]), "sum to 1"), (torch.tensor([1.5, -0.5]), r"in \[0, 1\]")]:
        with pytest.raises(ValueError, match=match):
            dg.Categorical(probs=bad)
        dg.Categorical(probs=bad, validate_args=False)  # switched off: no check
    for cls in (dg.Bernoulli, lambda probs: dg.Binomial(3, probs=probs)):
        with pytest.raises(ValueError, match="probs"):
            cls(probs=torch.tensor([0.2, 1.2]))
    torch.testing.assert_close(dg.Bernoulli(probs=torch.tensor([0.25])).probs, torch.tensor([0.25]))
    with pytest.raises(ValueError, match="exactly one of probs or logits"):
        dg.Categorical(probs=p, logits=p)
    with pytest.raises(ValueError, match="exactly one of probs or logits"):
        dg.Bernoulli()


def test_validate_args_checks_samples_and_params():
    q = dg.Categorical(logits=torch.zeros(2, 3))
    with pytest.raises(ValueError):
        q.log_prob(torch.tensor([1.0, 1.0, 0.0]))  # not one-hot
    with pytest.raises(ValueError, match="logits"):
        dg.Categorical(logits=torch.tensor([0.0, float("nan")]))
    dg.Categorical(logits=torch.tensor([0.0, float("nan")]), validate_args=False)
    with pytest.raises(TypeError, match="validate_args"):
        dg.Categorical(logits=torch.zeros(3), validate_args="yes")


def test_expand():
    q = dg.Categorical(logits=torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), estimator="gst", tau=0.5)
    e = q.expand((2, 3))
    assert e.batch_shape == (2, 3) and e.event_shape == (4,) and e.estimator == "gst" and e.hparams == {"tau": 0.5}
    a = e.rsample(generator=torch.Generator().manual_seed(1))
    b = dg.categorical.gst(q.logits.expand(2, 3, 4), tau=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    t = dg.TopK(2, logits=torch.zeros(5)).expand((3,))
    assert t.k == 2 and t.sample(generator=torch.Generator().manual_seed(0)).shape == (3, 5)


# ----------------------------------------------------------------------------- KL

def _kl_by_enumeration(p, q):
    atoms = p.enumerate_support()
    lp, lq = p.log_prob(atoms), q.log_prob(atoms)
    return torch.where(lp > -torch.inf, lp.exp() * (lp - lq), 0.0).sum(0)


def test_kl_divergences():
    g = torch.Generator().manual_seed(0)
    inf = float("inf")
    la = torch.tensor([[0.3, -inf, 1.0, 0.0], [1.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    lb = torch.randn(2, 4, generator=g, dtype=torch.float64)
    pairs = [(dg.Categorical(logits=la), dg.Categorical(logits=lb)),
             (dg.Bernoulli(logits=lb), dg.Bernoulli(logits=lb.flip(-1))),
             (dg.Binomial(4, logits=lb), dg.Binomial(4, logits=lb.flip(-1)))]
    for p, q in pairs:
        torch.testing.assert_close(td.kl_divergence(p, q), _kl_by_enumeration(p, q))
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    expected = _kl_by_enumeration(pairs[0][0], dg.Categorical(probs=uniform))
    torch.testing.assert_close(td.kl_divergence(pairs[0][0], td.OneHotCategorical(probs=uniform)), expected)
    torch.testing.assert_close(td.kl_divergence(pairs[0][0], td.Categorical(probs=uniform)), expected)
    half = torch.tensor(0.5, dtype=torch.float64)
    torch.testing.assert_close(td.kl_divergence(pairs[1][0], td.Bernoulli(probs=half)),
                               td.kl_divergence(td.Bernoulli(logits=lb), td.Bernoulli(probs=half)))
    rates = torch.tensor([0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(td.kl_divergence(dg.Poisson(rates), td.Poisson(rates.flip(0))),
                               td.kl_divergence(td.Poisson(rates), td.Poisson(rates.flip(0))))
    # masked classes: finite KL and finite, zero gradients on the masked logits
    leaf = la.clone().requires_grad_(True)
    kl = td.kl_divergence(dg.Categorical(logits=leaf), td.OneHotCategorical(probs=uniform)).sum()
    (grad,) = torch.autograd.grad(kl, leaf)
    assert torch.isfinite(kl) and torch.isfinite(grad).all() and grad[0, 1] == 0
    with pytest.raises(ValueError, match="total_count"):
        td.kl_divergence(dg.Binomial(3, logits=lb), dg.Binomial(4, logits=lb))


# ----------------------------------------------------------------------------- dg.nn

def test_straight_through_layer_trains_by_rsample_and_evaluates_the_mode():
    logits = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    layer = dg.nn.StraightThrough("categorical", "gst", tau=0.5, gap=1.0,
                                  generator=torch.Generator().manual_seed(1))
    z = layer(logits)
    expected = dg.categorical.gst(logits, tau=0.5, gap=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, expected, rtol=0, atol=0)
    layer.eval()
    torch.testing.assert_close(layer(logits), torch.nn.functional.one_hot(logits.argmax(-1), 5).float())
    k_layer = dg.nn.StraightThrough("topk", "entropy", k=2).eval()
    assert torch.equal(k_layer(logits), dg.TopK(2, logits=logits).mode)


def test_layer_reads_a_stepped_temperature():
    class Schedule:  # what a training loop steps: the layer only reads it
        def __init__(self):
            self.value = 2.0

        def __call__(self):
            return self.value

    schedule = Schedule()
    layer = dg.nn.StraightThrough("categorical", "stgs", tau=schedule, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(2, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    for tau in (2.0, 0.3):
        schedule.value = tau
        layer.generator.manual_seed(0)
        (g_layer,) = torch.autograd.grad((layer(logits) * torch.arange(5.0)).sum(), logits)
        out = dg.categorical.stgs(logits, tau=tau, generator=torch.Generator().manual_seed(0))
        (g_op,) = torch.autograd.grad((out * torch.arange(5.0)).sum(), logits)
        torch.testing.assert_close(g_layer, g_op)
    assert dg.nn.current_tau(torch.tensor(0.7)) == pytest.approx(0.7)
    with pytest.raises(TypeError, match="tau"):
        dg.nn.current_tau("hot")


def test_layers_in_sequential_and_bad_arguments():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(linear(6, 12, g), torch.nn.Unflatten(-1, (3, 4)),
                                dg.nn.GumbelSoftmax(tau=0.5, hard=True, generator=g), torch.nn.Flatten(),
                                linear(12, 1, g))
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    model(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="dg.surrogate"):
        dg.nn.StraightThrough("categorical", "reinforce")
    with pytest.raises(ValueError, match="hyperparameters"):
        dg.nn.StraightThrough("bernoulli", "st", tau=0.5)
    with pytest.raises(TypeError, match="generator"):
        dg.nn.StraightThrough("categorical", "st", generator=0)


def test_nn_layer_follows_a_stepped_schedule():
    """The layer reads the temperature the loop has stepped to (GST mixed schedule: tau at every
    20th step, mid_tau in between): its gradient equals the functional op's at that temperature."""
    tau = dg.nn.Stepped(dg.nn.MixedTemperature(tau=0.1, mid_tau=0.5, period=2))
    layer = dg.nn.StraightThrough(distribution="categorical", estimator="stgs", tau=tau)
    layer.train()
    v = torch.arange(3.0).expand(4, 3)

    def grad(fn):
        logits = torch.linspace(-1, 1, 12).reshape(4, 3).requires_grad_(True)
        (g,) = torch.autograd.grad((fn(logits) * v).sum(), logits)
        return g

    for expected in (0.1, 0.5, 0.1):
        got = grad(lambda t: layer(t, generator=torch.Generator().manual_seed(0)))
        want = grad(lambda t, e=expected: dg.categorical.stgs(t, tau=e, generator=torch.Generator().manual_seed(0)))
        torch.testing.assert_close(got, want)
        assert float(tau) == expected
        tau.step()
    assert tau.current == 3
    other = dg.nn.Stepped(dg.nn.MixedTemperature(tau=0.1))
    other.load_state_dict(tau.state_dict())
    assert other.current == 3
    with pytest.raises(TypeError, match="schedule"):
        dg.nn.Stepped(0.5)
