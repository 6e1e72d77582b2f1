"""The structures package: the semiring chain DP, the Plackett-Luce log-probability and Edmonds,
each against brute-force enumeration or a plain-Python reference (float64, small n)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from discretegrad import structures as S
from discretegrad.structures import plackett_luce
from discretegrad.structures.logspace import gradient
from discretegrad.structures.semiring import chain_argmax, chain_score


def _atoms(n, k):
    return S.all_ksubsets(n, k, dtype=torch.float64, device=torch.device("cpu"))


def _scores(u, v, atoms):
    """score(x) = <u, x> + Σ v_i x_i x_{i+1} for every atom: [..., A]."""
    s = u @ atoms.T
    return s if v is None else s + v @ (atoms[:, :-1] * atoms[:, 1:]).T


def _cases(n, seed):
    g = torch.Generator().manual_seed(seed)
    for k in range(1, n + 1):
        u = torch.randn(3, n, generator=g, dtype=torch.float64) * 2
        v = torch.randn(3, n - 1, generator=g, dtype=torch.float64) * 2
        yield k, u, None
        yield k, u, v


# ----------------------------------------------------------------------------- the chain DP

@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_chain_dp_log_partition_max_marginals_and_argmax_vs_enumeration(n):
    for k, u, v in _cases(n, n):
        atoms = _atoms(n, k)
        score = _scores(u, v, atoms)
        torch.testing.assert_close(chain_score(u, k, v, semiring="sum"), torch.logsumexp(score, -1), rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(chain_score(u, k, v, semiring="max"), score.amax(-1), rtol=1e-12, atol=1e-12)
        mu = S.topk_marginals(u, k) if v is None else S.corr_topk_marginals(u, v, k)
        torch.testing.assert_close(mu, torch.softmax(score, -1) @ atoms, rtol=1e-10, atol=1e-12)
        best = atoms[score.argmax(-1)]  # continuous scores: the maximiser is unique
        assert torch.equal(chain_argmax(u, k, v), best)
        # the traceback is the gradient of the max score (the documented equivalent)
        assert torch.equal(gradient(lambda a: chain_score(a, k, v, semiring="max"), u), best)


@pytest.mark.parametrize("n", [2, 4, 5])
def test_marginals_jacobian_is_the_covariance(n):
    """∂μ/∂u = Cov(x) and ∂μ/∂v = Cov(x, y), y_i = x_i x_{i+1}: double backward through the DP."""
    for k, u, v in _cases(n, 20 + n):
        atoms = _atoms(n, k)
        p = torch.softmax(_scores(u, v, atoms), -1)  # [3, A]
        mean = p @ atoms
        cov = torch.einsum("ba,ai,aj->bij", p, atoms, atoms) - mean[:, :, None] * mean[:, None, :]
        if v is None:
            jac = torch.stack([torch.autograd.functional.jacobian(lambda a: S.topk_marginals(a, k), u[b])
                               for b in range(3)])
            torch.testing.assert_close(jac, cov, rtol=1e-9, atol=1e-11)
            continue
        pairs = atoms[:, :-1] * atoms[:, 1:]
        cross = torch.einsum("ba,ai,aj->bij", p, atoms, pairs) - mean[:, :, None] * (p @ pairs)[:, None, :]
        for b in range(3):
            ju, jv = torch.autograd.functional.jacobian(lambda a, c: S.corr_topk_marginals(a, c, k), (u[b], v[b]))
            torch.testing.assert_close(ju, cov[b], rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(jv, cross[b], rtol=1e-9, atol=1e-11)


def test_chain_dp_ties_give_one_valid_maximiser():
    """Tied scores: the traceback still returns a single k-hot maximiser, equal to ∂ max / ∂ u."""
    u = torch.zeros(2, 6, dtype=torch.float64)
    v = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0], [0.0] * 5], dtype=torch.float64)
    for k in (1, 3, 6):
        for pair in (None, v):
            x = chain_argmax(u, k, pair)
            assert torch.equal(x.sum(-1), torch.full((2,), float(k), dtype=torch.float64))
            assert bool(((x == 0) | (x == 1)).all())
            value = (u * x).sum(-1) + (0 if pair is None else (pair * x[:, :-1] * x[:, 1:]).sum(-1))
            torch.testing.assert_close(value, chain_score(u, k, pair, semiring="max"))
            assert torch.equal(gradient(lambda a: chain_score(a, k, pair, semiring="max"), u), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,k", [(2, 1), (9, 4), (40, 10), (40, 40)])
def test_chain_argmax_equals_the_gradient_of_the_max_with_many_ties(dtype, n, k):
    """Integer scores in {-2..2} (exact in both dtypes): many tied maximisers per row, and the traceback
    picks the one ``∂ max / ∂ u`` picks (ties to x_{i-1} = 0 at every step), masked items included."""
    g = torch.Generator().manual_seed(n + k)
    u = torch.randint(-2, 3, (64, n), generator=g).to(dtype)
    v = torch.randint(-2, 3, (64, n - 1), generator=g).to(dtype)
    if n > k + 1:
        u[::3, n // 2] = -math.inf
    for pair in (None, v):
        assert torch.equal(chain_argmax(u, k, pair), gradient(lambda a: chain_score(a, k, pair, semiring="max"), u))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_marginals_and_their_gradient_stay_finite_at_extreme_scale(dtype):
    """Logits of order 1e7 (1e4 / tau 1e-3): marginals in [0, 1] summing to k, finite double backward."""
    g = torch.Generator().manual_seed(3)
    u = (torch.randn(4, 12, generator=g, dtype=torch.float64) * 1e7).to(dtype).requires_grad_(True)
    v = (torch.randn(4, 11, generator=g, dtype=torch.float64) * 1e7).to(dtype).requires_grad_(True)
    w = torch.randn(4, 12, generator=g, dtype=torch.float64).to(dtype)
    for mu in (S.topk_marginals(u, 3), S.corr_topk_marginals(u, v, 3)):
        assert torch.isfinite(mu).all() and bool(((mu >= 0) & (mu <= 1 + 1e-6)).all())
        torch.testing.assert_close(mu.sum(-1), torch.full((4,), 3.0, dtype=dtype))
        grads = torch.autograd.grad((mu * w).sum(), (u, v), allow_unused=True)
        assert all(gr is None or torch.isfinite(gr).all() for gr in grads)


def test_marginals_under_no_grad_and_inference_mode():
    u = torch.randn(3, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = (S.topk_marginals(u, 3), S.corr_topk_marginals(u, v, 3), S.corr_topk_hard(u, v, 3))
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out = (S.topk_marginals(u, 3), S.corr_topk_marginals(u, v, 3), S.corr_topk_hard(u, v, 3))
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            assert not a.requires_grad
    leaf = u.clone().requires_grad_(True)
    with torch.no_grad():  # no graph is built even for inputs that require grad
        assert not S.topk_marginals(leaf, 3).requires_grad


# ----------------------------------------------------------------------------- Plackett-Luce

def _pl_reference(scores: list[float], order: list[int]) -> float:
    """log P(order) drawing without replacement with probabilities ∝ exp(scores), in plain Python."""
    remaining = list(range(len(scores)))
    total = 0.0
    for item in order:
        total += scores[item] - math.log(sum(math.exp(scores[e]) for e in remaining))
        remaining.remove(item)
    return total


def test_plackett_luce_log_prob_vs_plain_python():
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(4, 6, generator=g, dtype=torch.float64) * 2
    orders = torch.stack([torch.randperm(6, generator=g)[:4] for _ in range(4)])  # [4, 4] prefixes
    got = plackett_luce.log_prob(scores, orders)
    ref = [_pl_reference(scores[b].tolist(), orders[b].tolist()) for b in range(4)]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # padded prefixes: positions past each length count for nothing; batch dims broadcast
    lengths = [1, 2, 3, 4]
    valid = torch.arange(4).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    got = plackett_luce.log_prob(scores.unsqueeze(-2), orders, valid)  # [4 scores, 4 orders]
    ref = [[_pl_reference(scores[b].tolist(), orders[o, :lengths[o]].tolist()) for o in range(4)] for b in range(4)]
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # finite gradient through padding
    leaf = scores.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(plackett_luce.log_prob(leaf.unsqueeze(-2), orders, valid).sum(), leaf)
    assert torch.isfinite(grad).all()


def test_plackett_luce_laws_sum_to_one():
    scores = torch.randn(2, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    full = torch.tensor(list(itertools.permutations(range(5))))
    torch.testing.assert_close(plackett_luce.log_prob(scores.unsqueeze(-2), full).exp().sum(-1),
                               torch.ones(2, dtype=torch.float64))
    for k in (1, 2, 5):
        atoms = _atoms(5, k)
        set_prob = plackett_luce.subset_log_prob(scores.unsqueeze(-2), atoms, max_orderings=5040).exp()
        torch.testing.assert_close(set_prob.sum(-1), torch.ones(2, dtype=torch.float64))
        # a set's probability is the sum over the prefixes (orderings) of its elements
        idx = atoms[-1].nonzero().flatten().tolist()
        ref = sum(math.exp(_pl_reference(scores[0].tolist(), list(o))) for o in itertools.permutations(idx))
        assert set_prob[0, -1].item() == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="k! <= 2"):
        plackett_luce.subset_log_prob(scores, _atoms(5, 3)[:1], max_orderings=2)


# ----------------------------------------------------------------------------- Edmonds

@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_edmonds_vs_all_arborescences(n):
    """Batched Chu-Liu/Edmonds reaches the best score over every arborescence, for every root, including
    weights that make the greedy in-edges cyclic (so cycles are contracted, and nested)."""
    g = torch.Generator().manual_seed(30 + n)
    w = torch.randn(16, n, n, generator=g, dtype=torch.float64)
    w[8:, 1, 2] += 4  # cycles 1 -> 2 -> 0 -> 1 and 1 <-> 2
    w[8:, 2, 0] += 4
    w[8:, 0, 1] += 4
    w[12:, 2, 1] += 5
    for root in range(n):
        atoms = S.all_arborescences(n, root, dtype=torch.float64, device=torch.device("cpu"))
        score = w.flatten(1) @ atoms.flatten(1).T
        hard = S.edmonds(w, root)
        assert torch.equal(hard, atoms[score.argmax(-1)])


def test_logaddexp_derivatives_are_exact_at_ties_and_finite_at_huge_gaps():
    from discretegrad.structures.logspace import logaddexp

    a = torch.tensor([0.0, 3.0, -1e300, 1e300, -1e300], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.0, -2.0, -1e300, 0.0, 5.0], dtype=torch.float64, requires_grad=True)
    out = logaddexp(a, b)
    torch.testing.assert_close(out.detach(), torch.logaddexp(a, b).detach())
    (ga,) = torch.autograd.grad(out.sum(), a, create_graph=True)
    (haa,) = torch.autograd.grad(ga.sum(), a)
    s = torch.sigmoid(a.detach() - b.detach())
    torch.testing.assert_close(ga.detach(), s)
    torch.testing.assert_close(haa, s * (1 - s))  # 1/4 at the tie, 0 at the huge gaps
    assert torch.isfinite(haa).all()
