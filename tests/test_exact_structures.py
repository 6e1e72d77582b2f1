"""dg.exact over structures: Gibbs marginals and log-partition by enumeration, the Gumbel-top-k
law in dg.exact.expectation, and dg.diagnostics on a structured problem."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

import discretegrad as dg
from discretegrad.distributions import get_distribution
from problems import _trees as T


def _python_gibbs(weights: list[float], atoms: list[list[float]], tau: float):
    scores = [sum(w * a for w, a in zip(weights, atom, strict=True)) / tau for atom in atoms]
    m = max(scores)
    z = sum(math.exp(s - m) for s in scores)
    probs = [math.exp(s - m) / z for s in scores]
    mean = [sum(p * atom[i] for p, atom in zip(probs, atoms, strict=True)) for i in range(len(atoms[0]))]
    return mean, m + math.log(z)


@pytest.mark.parametrize("n,k", [(1, 1), (4, 2), (5, 3), (6, 1), (6, 6)])
def test_topk_marginals_and_log_partition(n, k):
    w = torch.randn(2, 2, n, generator=torch.Generator().manual_seed(n * 10 + k), dtype=torch.float64)
    atoms = [[1.0 if i in s else 0.0 for i in range(n)] for s in itertools.combinations(range(n), k)]
    mu = dg.exact.marginals(w, structure="topk", k=k, tau=0.7)
    log_z = dg.exact.log_partition(w, structure="topk", k=k, tau=0.7)
    assert mu.shape == w.shape and log_z.shape == (2, 2)
    for i, j in itertools.product(range(2), range(2)):
        mean, lz = _python_gibbs(w[i, j].tolist(), atoms, 0.7)
        torch.testing.assert_close(mu[i, j], torch.tensor(mean, dtype=torch.float64))
        assert abs(float(log_z[i, j]) - lz) < 1e-10


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_tree_marginals_and_log_partition(n):
    g = torch.Generator().manual_seed(n)
    w = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    sym = (w + w.transpose(-1, -2)) / 2
    cases = [("spanning_tree", sym, {}, T.undirected_trees(n), True)]  # root is an option of arborescences only
    cases += [("arborescence", w, {"root": r}, T.arborescences(n, r), False) for r in range(n)]
    for structure, weights, options, atoms, upper in cases:
        mu = dg.exact.marginals(weights, structure=structure, tau=1.3, **options)
        log_z = dg.exact.log_partition(weights, structure=structure, tau=1.3, **options)
        assert mu.shape == weights.shape and log_z.shape == (3,)
        scored = torch.triu(atoms, 1) if upper else atoms
        for b in range(3):
            mean, lz = _python_gibbs(weights[b].flatten().tolist(), scored.flatten(1).tolist(), 1.3)
            probs_times_atoms = torch.tensor(mean)  # marginal of the scored entries
            if upper:
                probs_times_atoms = probs_times_atoms.reshape(n, n)
                probs_times_atoms = probs_times_atoms + probs_times_atoms.T
            torch.testing.assert_close(mu[b], probs_times_atoms.reshape(n, n).double())
            assert abs(float(log_z[b]) - lz) < 1e-10


def test_structure_counts():
    for n in range(2, 7):
        ones = torch.zeros(n, n, dtype=torch.float64)
        # with zero weights, Z = number of structures: Cayley's n^(n-2) for both trees and arborescences
        assert round(math.exp(float(dg.exact.log_partition(ones, structure="spanning_tree")))) == n ** (n - 2)
        log_z = dg.exact.log_partition(ones, structure="arborescence", root=n - 1)
        assert round(math.exp(float(log_z))) == n ** (n - 2)
        for k in range(1, n + 1):
            z = math.exp(float(dg.exact.log_partition(torch.zeros(n, dtype=torch.float64), structure="topk", k=k)))
            assert round(z) == math.comb(n, k)


def test_refusals_and_bad_arguments():
    with pytest.raises(ValueError, match="MAX_TREE_VERTICES"):
        dg.exact.marginals(torch.zeros(dg.exact.MAX_TREE_VERTICES + 1, dg.exact.MAX_TREE_VERTICES + 1),
                           structure="spanning_tree")
    with pytest.raises(ValueError, match="MAX_SUBSETS"):
        dg.exact.marginals(torch.zeros(40), structure="topk", k=20)
    with pytest.raises(ValueError, match="structure"):
        dg.exact.marginals(torch.zeros(4), structure="matching")
    with pytest.raises(ValueError, match="Expected k"):
        dg.exact.marginals(torch.zeros(4), structure="topk")
    with pytest.raises(ValueError, match="Expected k"):
        dg.exact.log_partition(torch.zeros(4), structure="topk", k=5)
    with pytest.raises(ValueError, match="root"):
        dg.exact.marginals(torch.zeros(4, 4), structure="arborescence", root=4)
    with pytest.raises(ValueError, match="tau"):
        dg.exact.log_partition(torch.zeros(4), structure="topk", k=2, tau=0.0)
    with pytest.raises(ValueError, match="symmetric"):
        dg.exact.marginals(torch.triu(torch.ones(4, 4), 1), structure="spanning_tree")
    with pytest.raises(ValueError, match="weights"):
        dg.exact.marginals(torch.tensor([0.0, float("nan")]), structure="topk", k=1)


# ----------------------------------------------------------------------------- the sample law in dg.exact

def test_expectation_uses_the_gumbel_topk_law():
    """dg.exact.expectation on "topk" vs the Monte Carlo mean of f over 200,000 SMT samples:
    |difference| < z·SE with z for a two-sided false-failure rate of 1e-4 per batch element
    (Bonferroni over 2 elements), fixed seed."""
    theta = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0], [0.0, 0.3, -0.3, 1.0, -2.0]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)

    def f(z):
        return torch.sin(z @ c) + (z[..., 0] * z[..., 2])

    exact = dg.exact.expectation(f, theta, distribution="topk", k=3)
    m = 200_000
    z = dg.subsets.topk(theta.expand(m, 2, 5), 3, generator=torch.Generator().manual_seed(0))
    vals = f(z)
    mean, se = vals.mean(0), vals.std(0) / math.sqrt(m)
    zcrit = stats.norm.isf(1e-4 / (2 * 2))
    assert bool(((mean - exact).abs() < zcrit * se).all()), (mean, exact, se)
    # the law is not the Gibbs distribution: Gibbs marginals differ from the inclusion probabilities
    inclusion = get_distribution("topk").mean(theta, k=3)
    gibbs = dg.exact.marginals(theta, structure="topk", k=3)
    assert float((inclusion - gibbs).abs().max()) > 0.01


def test_expectation_options_are_checked():
    with pytest.raises(ValueError, match=r"options \['k'\]"):
        dg.exact.expectation(lambda z: z.sum(-1), torch.zeros(2, 4), distribution="topk")
    with pytest.raises(ValueError, match="options"):
        dg.exact.expectation(lambda z: z.sum(-1), torch.zeros(2, 4), distribution="categorical", k=2)


def test_expectation_refuses_arborescences_with_a_reason():
    w = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="no closed form"):
        dg.exact.expectation(lambda z: z.sum((-1, -2)), w, distribution="arborescence")
    with pytest.raises(ValueError, match="MAX_LAW_VERTICES"):
        dg.exact.expectation(lambda z: z.sum((-1, -2)), torch.zeros(6, 6), distribution="spanning_tree")


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_kruskal_law_matches_sample_frequencies(n):
    """Exact law of the Kruskal sample (Plackett-Luce over ordering prefixes) against 100,000 samples
    of dg.trees.spanning_tree: Pearson chi-square over the trees with expected count >= 5 (the rest
    pooled), false-failure rate 1e-4, fixed seed. Also: probabilities sum to 1."""
    theta = torch.randn(n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    theta = theta + theta.T
    atoms, log_table = get_distribution("spanning_tree").support(theta)
    probs = log_table.exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    m = 100_000
    z = dg.trees.spanning_tree(theta.expand(m, n, n), generator=torch.Generator().manual_seed(0))
    ids = (z.flatten(1).unsqueeze(1) == atoms.flatten(1).unsqueeze(0)).all(-1).double().argmax(-1)
    counts = torch.bincount(ids, minlength=atoms.shape[0]).double()
    expected = probs * m
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    if obs.numel() > 1:
        assert stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue > 1e-4


def test_kruskal_law_is_not_uniform_for_uniform_logits():
    """With equal logits, the 4 stars of K_4 have probability 1/15 and the 12 paths 11/180 (not 1/16)."""
    atoms, log_table = get_distribution("spanning_tree").support(torch.zeros(4, 4, dtype=torch.float64))
    star = atoms.sum(-1).amax(-1) == 3
    torch.testing.assert_close(log_table.exp()[star], torch.full((4,), 1 / 15, dtype=torch.float64))
    torch.testing.assert_close(log_table.exp()[~star], torch.full((12,), 11 / 180, dtype=torch.float64))


def test_spanning_tree_expectation_and_gradient_vs_monte_carlo():
    """dg.exact on "spanning_tree" (n = 4) against the Monte Carlo mean of f over 200,000 samples
    (z·SE, two-sided false-failure rate 1e-4 per batch element, Bonferroni over 2), and the exact
    gradient against central finite differences of the exact expectation."""
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    theta = theta + theta.transpose(-1, -2)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64)

    def f(z):
        return torch.sin((z * w).sum((-1, -2))) + z[..., 0, 1]

    exact = dg.exact.expectation(f, theta, distribution="spanning_tree")
    m = 200_000
    z = dg.trees.spanning_tree(theta.expand(m, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    vals = f(z)
    mean, se = vals.mean(0), vals.std(0) / math.sqrt(m)
    assert bool(((mean - exact).abs() < stats.norm.isf(1e-4 / 4) * se).all()), (mean, exact, se)
    grad = dg.exact.gradient(f, theta, distribution="spanning_tree")
    eps = 1e-6
    for (i, j) in [(0, 1), (1, 3), (2, 3)]:
        bump = torch.zeros_like(theta)
        bump[:, i, j] = bump[:, j, i] = eps
        fd = (dg.exact.expectation(f, theta + bump, distribution="spanning_tree")
              - dg.exact.expectation(f, theta - bump, distribution="spanning_tree")) / (2 * eps)
        # the bump moves one edge weight by eps: its derivative is the sum over both entries
        torch.testing.assert_close(grad[:, i, j] + grad[:, j, i], fd, rtol=1e-5, atol=1e-8)


def test_diagnostics_compare_relaxations_of_topk():
    theta = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)

    def f(z):
        return torch.sin(z @ c)

    reports = dg.diagnostics.compare(f, theta, distribution="topk", k=2, draws=50,
                                     estimators=["entropy", ("softsub", {"tau": 0.5})],
                                     generator=torch.Generator().manual_seed(0))
    assert [r.estimator for r in reports] == ["entropy", "softsub(tau=0.5)"]
    assert all(math.isfinite(r.bias) and r.exact_norm > 0 for r in reports)
    with pytest.raises(ValueError, match="no closed form"):
        dg.diagnostics.compare(lambda z: z.sum((-1, -2)), torch.zeros(1, 4, 4), distribution="arborescence", draws=2)


def test_diagnostics_compare_relaxations_of_spanning_trees():
    theta = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = theta + theta.transpose(-1, -2)
    reports = dg.diagnostics.compare(lambda z: (z[..., 0, :] ** 2).sum(-1) ** 2, theta, distribution="spanning_tree",
                                     draws=30, generator=torch.Generator().manual_seed(0))
    assert [r.name for r in reports] == ["entropy", "entropy_relaxed"]
    assert all(math.isfinite(r.bias) and r.exact_norm > 0 for r in reports)


def test_spanning_tree_gradients_share_one_convention():
    """Exact and estimated gradients both split an edge's derivative equally between (i, j) and (j, i),
    so dg.diagnostics compares like with like."""
    theta = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    theta = theta + theta.transpose(-1, -2)

    def f(z):
        return (z[..., 0, :] * torch.arange(4.0, dtype=torch.float64)).sum(-1) ** 2

    exact = dg.exact.gradient(f, theta, distribution="spanning_tree")
    torch.testing.assert_close(exact, exact.transpose(-1, -2))
    draws = dg.diagnostics.gradient_draws(f, theta, distribution="spanning_tree", estimator="entropy", draws=3,
                                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws, draws.transpose(-1, -2))
