"""Categorical-specific checks: GR-MCK against STGS, conditional Gumbels, the GST gap."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import discretegrad as dg
from discretegrad.noise import conditional_gumbel, gumbel

EULER = 0.5772156649015329
ALPHA = 1e-4  # false-failure rate per test (Bonferroni over the coordinates compared)


def _grad_draws(fn, theta, v, gen, **hp):
    leaf = theta.clone().requires_grad_(True)
    out = fn(leaf, generator=gen, **hp)
    (g,) = torch.autograd.grad((out * v).sum(), leaf)
    return g


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_gumbel_rao_mean_matches_stgs(tau):
    """Rao-Blackwellisation keeps the mean of the STGS gradient and lowers its variance."""
    m = 20000
    theta = torch.tensor([0.5, -1.0, 1.2, 0.0, 0.3], dtype=torch.float64).expand(m, 5)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64).expand(m, 5)
    g_st = _grad_draws(dg.categorical.stgs, theta, v, torch.Generator().manual_seed(1), tau=tau)
    g_rb = _grad_draws(dg.categorical.gumbel_rao, theta, v, torch.Generator().manual_seed(2), tau=tau, mc_samples=20)
    diff = g_st.mean(0) - g_rb.mean(0)
    se = torch.sqrt(g_st.var(0) / m + g_rb.var(0) / m)
    z = stats.norm.isf(ALPHA / (2 * 5))
    assert (diff.abs() <= z * se).all(), (diff / se)
    assert g_rb.var(0).sum() < 0.7 * g_st.var(0).sum()


def test_gumbel_rao_does_not_keep_k_copies_for_backward():
    # N = 10 < K: N x N second moments kept
    theta = torch.randn(64, 30, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def saved_bytes(k):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            dg.categorical.gumbel_rao(theta, mc_samples=k, generator=torch.Generator().manual_seed(0))
        return total

    assert saved_bytes(1000) == saved_bytes(20)
    assert saved_bytes(1000) <= 64 * 30 * 10 * 4 * (10 + 3)  # N x N second moment + a few vectors


def test_conditional_gumbel_law():
    """Given argmax = D, the max is Gumbel(logsumexp θ); mixing over D gives back Gumbel(θ_k)."""
    theta = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)
    m = 50000
    g = torch.Generator().manual_seed(3)
    d = torch.multinomial(torch.softmax(theta, -1), m, replacement=True, generator=g)
    z = conditional_gumbel(theta.expand(m, 4), d, 1, generator=g)[0]
    assert torch.equal(z.argmax(-1), d)
    top = z.gather(-1, d.unsqueeze(-1)).squeeze(-1)
    sd = math.pi / math.sqrt(6)
    zcrit = stats.norm.isf(ALPHA / (2 * 5))
    assert abs(top.mean() - (torch.logsumexp(theta, 0) + EULER)) < zcrit * sd / math.sqrt(m)
    # marginal of every coordinate after mixing over D ~ softmax(θ): Gumbel(θ_k), mean θ_k + γ
    assert ((z.mean(0) - (theta + EULER)).abs() < zcrit * sd / math.sqrt(m)).all()


def test_conditional_gumbel_extreme_logits_finite():
    theta = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    z = conditional_gumbel(theta, torch.tensor([0, 2]), 50, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(z).all()
    assert torch.equal(z.argmax(-1), torch.tensor([0, 2]).expand(50, 2))


def test_gap_pi_worked_example_and_expected_gap():
    """GST-p gap -log(1-π_D)/π_D equals E[top - second | argmax = D] under Gumbel-max (FACTS §1.1)."""
    theta = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    pi = torch.softmax(theta, 0)
    assert dg.categorical.gap_pi(pi[:1]).item() == pytest.approx(1.047, abs=1e-3)
    m = 400000
    pert = theta + gumbel((m, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    top2 = pert.topk(2, -1).values
    gaps = (top2[:, 0] - top2[:, 1])[pert.argmax(-1) == 0]
    se = gaps.std() / math.sqrt(gaps.numel())
    assert abs(gaps.mean() - dg.categorical.gap_pi(pi[:1]).item()) < stats.norm.isf(ALPHA / 2) * se


def test_gap_pi_limits_are_finite():
    p = torch.tensor([0.0, 1e-30, 0.5, 1.0 - 1e-9, 1.0])
    g = dg.categorical.gap_pi(p)
    assert torch.isfinite(g).all() and g[0] == 1.0 and g[-1] > 10


INVERSE_CDF_OPS = {"st", "gst", "reinmax", "gumbel_rao"}  # forward needs only D: one uniform per row


def test_hard_estimators_share_the_sample_within_their_sampler():
    """For one generator state the hard estimators of one sampler draw the same D (common random
    numbers): the inverse-CDF ops (one uniform per row) and the Gumbel-max ops (one Gumbel per entry)."""
    theta = torch.randn(100, 7, generator=torch.Generator().manual_seed(0))
    groups: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for s in dg.estimators("categorical"):
        if s.kind == "op" and not s.relaxed:
            groups[s.name in INVERSE_CDF_OPS].append(s.fn(theta, generator=torch.Generator().manual_seed(9)))
    assert len(groups[True]) == len(INVERSE_CDF_OPS) and len(groups[False]) >= 3
    for outs in groups.values():
        for o in outs[1:]:
            assert torch.equal(o, outs[0])
    sample = dg.get_family("categorical").sample(theta, generator=torch.Generator().manual_seed(9))
    assert torch.equal(sample, groups[False][0])  # the family's sampler is Gumbel-max


def test_stgs_matches_torch_gumbel_softmax_gradient_formula():
    """Same estimator as torch.nn.functional.gumbel_softmax(hard=True) for the same noise."""
    theta = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    g = gumbel(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(0))
    y = torch.softmax((theta + g) / 0.7, -1)
    ref = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0) - y.detach() + y
    out = dg.categorical.stgs(theta, tau=0.7, generator=torch.Generator().manual_seed(0))
    v = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(2))
    (a,) = torch.autograd.grad((out * v).sum(), theta)
    (b,) = torch.autograd.grad((ref * v).sum(), theta)
    torch.testing.assert_close(out, ref.detach())
    torch.testing.assert_close(a, b)


def test_low_precision_forward_is_exactly_one_hot():
    theta = torch.randn(1000, 10, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    for s in dg.estimators("categorical"):
        if s.kind == "op" and not s.relaxed:
            out = s.fn(theta, generator=torch.Generator().manual_seed(0))
            assert out.dtype == torch.bfloat16 and ((out == 0) | (out == 1)).all() and (out.sum(-1) == 1).all()


def test_generator_type_is_checked():
    with pytest.raises(TypeError, match="generator"):
        dg.categorical.st(torch.zeros(3), generator=42)


def test_log_uniform_into_law_and_draws():
    """``noise.log_uniform_into``: ``-log U`` is Exp(1) (KS test and mean, each at false-failure rate ALPHA / 2),
    float32 from 31 random bits ``i`` (``log i - 31 log 2``, the int32 draws of the same generator), float64
    from ``log1p(-rand)``."""
    m = 200_000
    e = -dg.noise.log_uniform_into(torch.empty(m), torch.Generator().manual_seed(11)).double()
    assert (e >= 0).all()  # +inf (probability 2^-31 per draw) stands for the tail beyond 31 log 2
    e = e.clamp_max(40.0)  # an inf would carry P(E > 40) = 4e-18 of the mass: no effect on either test
    assert stats.kstest(e.numpy(), "expon").pvalue > ALPHA / 2
    assert abs(e.mean().item() - 1.0) < stats.norm.isf(ALPHA / 4) / math.sqrt(m)  # Var E = 1
    bits = torch.empty(64, dtype=torch.int32).random_(generator=torch.Generator().manual_seed(4))
    assert (bits >= 0).all()
    got = dg.noise.log_uniform_into(torch.empty(64), torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, bits.double().log().sub(31 * math.log(2)).float())  # float32 rounding
    u = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got64 = dg.noise.log_uniform_into(torch.empty(64, dtype=torch.float64), torch.Generator().manual_seed(4))
    assert torch.equal(got64, torch.log1p(-u))
