"""Numerical guarantees of the structured relaxations, SoftSub, Poisson pWGF-MMD, the exact
oracle's support limit and the integer-like options (issue 9: each test reproduces a defect of
the code before the fix).

References are computed independently of the code under test: brute-force enumeration in
float64 (``dg.exact.marginals``, a local enumeration for correlated top-k, the topk fixture's
200-step float64 bisection for the LML projection), or the float64 path when the claim is "float32 equals float64".
Inputs are rounded to float32 first and the reference is computed from the rounded values, so
the comparison measures the algorithm's rounding, not the input's.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

import discretegrad as dg
from discretegrad import structures as S
from discretegrad.distributions import get_distribution
from problems.topk import _lml_bisect  # the fixture's float64 reference (200 bisection steps)

SCALES = [1e0, 1e2, 1e4, 1e6, 1e7]
HALF = [torch.float16, torch.bfloat16]


def _subsets(n: int, k: int) -> torch.Tensor:
    rows = [[1.0 if i in s else 0.0 for i in range(n)] for s in itertools.combinations(range(n), k)]
    return torch.tensor(rows, dtype=torch.float64)


def _corr_brute(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Item marginals of exp(<u, x> + Σ v_i x_i x_{i+1}) over k-hot x, by enumeration (float64)."""
    atoms = _subsets(u.shape[-1], k)
    score = u.double() @ atoms.T + v.double() @ (atoms[:, :-1] * atoms[:, 1:]).T
    return torch.softmax(score, -1) @ atoms


def _corr_brute_cov(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Covariance of the item indicators under the same law: the Jacobian of the marginals in u."""
    atoms = _subsets(u.shape[-1], k)
    score = u.double() @ atoms.T + v.double() @ (atoms[:, :-1] * atoms[:, 1:]).T
    p = torch.softmax(score, -1)
    mean = p @ atoms
    return torch.einsum("...s,si,sj->...ij", p, atoms, atoms) - mean.unsqueeze(-1) * mean.unsqueeze(-2)


# ----------------------------------------------------------------------------- the structures under test

K, N_ITEMS, N_VERTICES = 3, 8, 5


def _topk(w):
    return S.topk_marginals(w, K)


def _lml(w):
    return S.lml(w, K)


def _corr(w):  # items and pairs from one tensor [..., 2n - 1]: u = w[..., :n], v = w[..., n:]
    return S.corr_topk_marginals(w[..., :N_ITEMS], w[..., N_ITEMS:], K)


def _tree(w):
    return S.tree_marginals(w, directed=False)


def _arb(w):
    return S.tree_marginals(w, directed=True, root=1)


def _ref_topk(w):
    return dg.exact.marginals(w.double(), structure="topk", k=K)


def _ref_corr(w):
    return _corr_brute(w[..., :N_ITEMS], w[..., N_ITEMS:], K)


def _ref_tree(w):
    return dg.exact.marginals(w.double(), structure="spanning_tree")


def _ref_arb(w):
    return dg.exact.marginals(w.double(), structure="arborescence", root=1)


# name -> (op, reference, input shape, size of a structure, sum of the marginals over)
STRUCTURES = {
    "topk": (_topk, _ref_topk, (4, N_ITEMS), K, (-1,)),
    "lml": (_lml, lambda w: _lml_bisect(w.double(), K), (4, N_ITEMS), K, (-1,)),
    "corr": (_corr, _ref_corr, (4, 2 * N_ITEMS - 1), K, None),
    "spanning_tree": (_tree, _ref_tree, (20, N_VERTICES, N_VERTICES), N_VERTICES - 1, "upper"),
    "arborescence": (_arb, _ref_arb, (20, N_VERTICES, N_VERTICES), N_VERTICES - 1, (-2, -1)),
}


def _total(name: str, mu: torch.Tensor) -> torch.Tensor:
    over = STRUCTURES[name][4]
    if name == "corr":
        return mu.double().sum(-1)
    if over == "upper":
        return torch.triu(mu.double(), 1).sum((-2, -1))
    return mu.double().sum(over)


def _pattern(name: str, pattern: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Inputs (float64, before rounding) for one pattern at one scale."""
    shape = STRUCTURES[name][2]
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    if pattern == "offset":  # a common offset, O(1) differences
        w = scale + base
    elif pattern == "spread":  # O(scale) differences
        w = scale * base
    elif pattern == "ties":  # five tied levels -1, -0.5, 0, 0.5, 1 times the scale
        w = scale * torch.randint(-2, 3, shape, generator=gen).double() / 2
    elif pattern == "one_huge":  # one entry far above the others
        w = base.clone()
        w.view(-1, *shape[1:])[..., 0] += scale
    else:  # all equal
        w = torch.full(shape, scale, dtype=torch.float64)
    if name == "spanning_tree":
        w = (w + w.transpose(-1, -2)) / 2
    return w


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_float32_marginals_ignore_a_common_offset(name, scale):
    """|w|/τ up to 1e7 with O(1) differences: float32 marginals equal the float64 brute-force ones
    of the same (rounded) input to 1e-5. Before centring, the DPs kept absolute scores and lost
    log10(scale) of float32's 7 digits (errors 1e-3 at 1e4 and above 0.1 at 1e7)."""
    op, ref, *_ = STRUCTURES[name]
    w = _pattern(name, "offset", scale, torch.Generator().manual_seed(1)).float()
    got = op(w)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref(w.double()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_arborescence_marginals_ignore_per_vertex_offsets(scale):
    """Adding c_j to every in-edge of vertex j changes no arborescence's probability: the float32
    marginals are those of the unshifted weights (the centring is per column)."""
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(3, N_VERTICES, N_VERTICES, generator=gen, dtype=torch.float64)
    shift = scale * torch.randn(3, 1, N_VERTICES, generator=gen, dtype=torch.float64)
    w = (base + shift).float()
    torch.testing.assert_close(_arb(w).double(), _ref_arb(w.double()), rtol=0, atol=1e-5)


PATTERNS = ["offset", "spread", "ties", "one_huge", "all_equal"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_float32_marginals_sum_to_the_structure_size(name, pattern, scale):
    """Every pattern and scale up to 1e7: finite marginals in [0, 1] summing to k (n - 1 for trees)
    to 1e-4 relative. Before the fix the LML sums were off by up to 23 % and the tree sums by
    up to 13 % at a 1e7 offset; centring the tree columns once, not at every elimination step,
    still left the spanning-tree sums 4.4e-3 off for ties at 1e7 (a pivot far below 0 whose
    logsumexp backward, exp(x - out), is no longer normalised once out is rounded)."""
    op, _, _, size, _ = STRUCTURES[name]
    w = _pattern(name, pattern, scale, torch.Generator().manual_seed(3)).float()
    mu = op(w)
    assert torch.isfinite(mu).all()
    assert bool(((mu >= -1e-6) & (mu <= 1 + 1e-6)).all())
    torch.testing.assert_close(_total(name, mu), torch.full_like(_total(name, mu), float(size)), rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_half_inputs_are_computed_in_float32(name, dtype):
    """A half-precision input gives the float32 result of the same (half-rounded) values, cast to
    half, at logits up to 1e4 (float16 overflowed inside the DP before: its -inf stand-in is not
    representable there)."""
    op = STRUCTURES[name][0]
    w = _pattern(name, "offset", 1e4, torch.Generator().manual_seed(4)).to(dtype)
    got = op(w)
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert torch.equal(got, op(w.float()).to(dtype))


# ----------------------------------------------------------------------------- correlated top-k

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_corr_topk_issue_reproducer(dtype):
    """The issue's call (13 items at 1e4, pair logits 5e3, tau = 1e-3, k = 10): finite, sums to 10
    and equals the brute-force marginals of the same perturbed utilities, for 60 successive noise
    draws of one generator. Before the fix draw 9 put the contiguous block in the wrong place (an
    error of 1 in four marginals): two blocks 13.7 apart in a score of 1.4e8, where float32 rounds
    to 8."""
    logits = torch.full((13,), 1e4, dtype=dtype)
    pairs = torch.full((12,), 5e3, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        state = gen.get_state()
        out = dg.subsets.topk(logits, 10, tau=1e-3, relaxation="corr", hard=False, pair_logits=pairs, generator=gen)
        replay = torch.Generator().set_state(state)  # the op's noise: one Gumbel per item, then one per pair
        u = logits.float() + dg.noise.gumbel_like(logits.float(), generator=replay)
        v = pairs.float() + dg.noise.gumbel_like(pairs.float(), generator=replay)
        assert out.dtype == dtype and torch.isfinite(out).all()
        ref = _corr_brute(u / 1e-3, v / 1e-3, 10)  # u / tau rounded in float32, as the op computes it
        tol = 1e-4 if dtype == torch.float32 else 1e-2  # half: the output's own rounding
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol)
        assert abs(float(out.double().sum()) - 10) <= 13 * tol


def test_corr_topk_hard_gradient_at_a_large_offset():
    """The hard op's backward is the Jacobian of the marginals: with logits 1e6 + O(1) and pair
    logits 5e5 + O(1) at tau = 1 (|logits|/tau = 1e6), the float32 gradient equals the brute-force
    covariance product to 1e-4. Before the fix it inherited the marginals' error (about 0.1)."""
    gen = torch.Generator().manual_seed(5)
    n, k = 9, 4
    logits = (1e6 + torch.randn(6, n, generator=gen, dtype=torch.float64)).float().requires_grad_(True)
    pairs = (5e5 + torch.randn(6, n - 1, generator=gen, dtype=torch.float64)).float()
    w = torch.randn(6, n, generator=gen, dtype=torch.float64)
    out = dg.subsets.topk(logits, k, relaxation="corr", pair_logits=pairs, generator=torch.Generator().manual_seed(6))
    (grad,) = torch.autograd.grad((out * w.float()).sum(), logits)
    replay = torch.Generator().manual_seed(6)
    u = logits.detach() + dg.noise.gumbel_like(logits.detach(), generator=replay)
    v = pairs + dg.noise.gumbel_like(pairs, generator=replay)
    expected = (_corr_brute_cov(u, v, k) @ w.unsqueeze(-1)).squeeze(-1)
    assert bool(((out == 0) | (out == 1)).all()) and bool((out.sum(-1) == k).all())
    torch.testing.assert_close(grad.double(), expected, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- SoftSub

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_softsub_never_draws_a_saturated_item_twice(dtype):
    """Keys [0, 100] at tau = 0.1: the first softmax saturates (1 - p rounds to 0), and the mask
    must still remove exactly that mass, so the second draw takes the other item: [1, 1]. Before,
    log((1 - p).clamp_min(tiny)) left the saturated key ahead and gave [0, 2]."""
    for seed in range(5):
        out = dg.subsets.softsub(torch.tensor([0.0, 100.0], dtype=dtype), 2, tau=0.1,
                                 generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out.double(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)
    leaf = torch.tensor([0.0, 100.0, 200.0], dtype=dtype, requires_grad=True)
    out = dg.subsets.softsub(leaf, 3, tau=0.1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.double(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad((out * torch.tensor([1.0, -2.0, 3.0], dtype=dtype)).sum(), leaf)
    assert torch.isfinite(grad).all()


def test_softsub_exceeds_one_at_moderate_tau_as_the_method_says():
    """Values above 1 are SoftSub's own (the docstring's example): the float64 op agrees with the
    recursion a^{j+1} = a^j + log(1 - p_j) written out here, and that recursion has entries > 1."""
    gen = torch.Generator().manual_seed(8)
    theta = torch.randn(2000, 4, generator=gen, dtype=torch.float64)
    out = dg.subsets.softsub(theta, 2, tau=1.0, generator=torch.Generator().manual_seed(9))
    a = theta + dg.noise.gumbel(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(9))
    ref = torch.zeros_like(a)
    for _ in range(2):
        p = torch.softmax(a, -1)
        ref, a = ref + p, a + torch.log(1 - p)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert float(out.max()) > 1.0 and float(out.max()) <= 2.0
    torch.testing.assert_close(out.sum(-1), torch.full((2000,), 2.0, dtype=torch.float64))


# ----------------------------------------------------------------------------- Poisson pWGF-MMD

@pytest.mark.parametrize("rate", [1e4, 1e5, 1e6])
def test_pwgf_linear_kernel_is_st_in_float32_at_large_rates(rate):
    """With the linear kernel pWGF-MMD is ST exactly: gradient 1 per unit upstream gradient. Before,
    float32 gave 0.9947 at 1e4, -2.84 at 1e5 and 1258 at 1e6 (cancellation in the pmf and kernel)."""
    r = torch.full((8,), rate, dtype=torch.float32, requires_grad=True)
    z = dg.poisson.pwgf_mmd(r, kernel="linear", generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(z.sum(), r)
    torch.testing.assert_close(grad, torch.ones_like(grad), rtol=1e-5, atol=0)


@pytest.mark.parametrize("rate", [0.5, 3.0, 1e2, 1e4, 1e5, 1e6])
def test_pwgf_rbf_float32_matches_float64(rate):
    """The RBF kernel's gradient in float32 equals the float64 one (same samples) to 1e-3 relative."""
    grads = []
    for dtype in (torch.float32, torch.float64):
        r = torch.full((8,), rate, dtype=dtype, requires_grad=True)
        z = dg.poisson.pwgf_mmd(r, generator=torch.Generator().manual_seed(1))
        v = torch.linspace(-2, 2, 8, dtype=dtype)
        (grad,) = torch.autograd.grad((z * v).sum(), r)
        grads.append(grad.double())
    scale = float(grads[1].abs().max())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-3 * scale)


# ----------------------------------------------------------------------------- the exact oracle's limit

@pytest.mark.parametrize("distribution,params,options", [
    ("poisson", torch.tensor([1e12]), {}),
    ("binomial", torch.zeros(2), {"total_count": 10**12}),
    ("topk", torch.zeros(100), {"k": 50}),
])
def test_exact_refuses_a_huge_support_before_building_it(distribution, params, options):
    """Rate 1e12 (a support of 1e12 points), 1e12 + 1 binomial counts, C(100, 50) subsets: a
    ValueError naming max_configs at once. Before, the support was built first (a terabyte
    allocation for the Poisson rate, an endless enumeration of subsets)."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="max_configs"):
        dg.exact.expectation(lambda z: z.reshape(z.shape[0], -1).sum(-1), params, distribution=distribution,
                             batch_ndim=0, **options)
    assert time.perf_counter() - start < 5.0


# ----------------------------------------------------------------------------- integer-like options, meta tensors

INTEGER_LIKE = [np.int64(2), np.int32(2), np.array(2), torch.tensor(2), torch.tensor(2, dtype=torch.int32)]
NOT_INTEGER = [2.0, np.float64(2.0), torch.tensor(2.0), torch.tensor([2]), np.array([2]), True, torch.tensor(True), "2"]


@pytest.mark.parametrize("value", INTEGER_LIKE, ids=repr)
def test_k_root_and_total_count_accept_integer_likes(value):
    """As mc_samples and n_samples do: numpy integers and 0-dim integer tensors (arrays) are ints."""
    gen = torch.Generator().manual_seed(0)
    z = dg.subsets.topk(torch.zeros(5), value, generator=gen)
    assert int(z.sum()) == 2
    logits = torch.zeros(1, 4, dtype=torch.float64)
    exact = dg.exact.expectation(lambda z: z[..., 0], logits, distribution="topk", k=value)
    torch.testing.assert_close(exact, torch.tensor([0.5], dtype=torch.float64))
    value_est = dg.surrogate(lambda z: z[..., 0], logits, distribution="topk", estimator="entropy", k=value,
                             generator=gen)
    assert value_est.shape == (1,)
    arb = dg.trees.arborescence(torch.zeros(4, 4), root=value, generator=gen)
    assert float(arb[:, 2].sum()) == 0.0 and float(arb.sum()) == 3.0  # vertex 2 is the root
    z = dg.surrogate(lambda z: z.sum(-1), torch.zeros(3), distribution="binomial", estimator="st",
                     total_count=value, generator=gen)
    assert z.shape == ()
    z = dg.categorical.gumbel_rao(torch.zeros(3), mc_samples=value, generator=gen)
    assert z.shape == (3,)


@pytest.mark.parametrize("value", NOT_INTEGER, ids=repr)
def test_k_and_root_refuse_what_is_not_an_integer(value):
    with pytest.raises(ValueError, match="Expected k to be an int in"):
        dg.subsets.topk(torch.zeros(5), value)
    with pytest.raises(ValueError, match="Expected root to be an int in"):
        dg.trees.arborescence(torch.zeros(4, 4), root=value)


@pytest.mark.parametrize("family", dg.families())
def test_meta_tensors_are_refused_naming_the_parameter(family):
    """A tensor on the 'meta' device has no values: every estimator of every family refuses it with
    a ValueError that names the parameter (before: RuntimeError/NotImplementedError from deep inside)."""
    import problems

    fam = get_distribution(family)
    case = problems.case_for(family)
    params = case.law_params().to("meta")
    for spec in dg.estimators(family):
        hparams = {k: v for k, v in case.test_hparams.items() if k in spec.hyperparameters}
        with pytest.raises(ValueError, match=f"Expected {fam.param_name} .*'meta' device"):
            if spec.kind == "op":
                spec.fn(params, **hparams)
            else:
                dg.surrogate(lambda z: z.sum(), params, distribution=family, estimator=spec.name,
                             n_samples=spec.min_samples, **hparams)
    pair = torch.zeros(4, device="meta")
    with pytest.raises(ValueError, match="Expected pair_logits .*'meta' device"):
        dg.subsets.topk(torch.zeros(5), 2, relaxation="corr", pair_logits=pair)
