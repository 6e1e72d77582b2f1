"""Top-k (k-subset) fixtures for the generic suite: k-hot samples, Gumbel-top-k law.

Every estimator of the ``"topk"`` distribution needs the subset size ``k`` (a required
hyperparameter), given here through ``test_hparams``. The hard estimators' forward law is
Gumbel-top-k (sampling without replacement, Plackett-Luce set probabilities), checked against
probabilities computed here in plain Python, independently of the library.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch
from scipy import stats

import discretegrad as dg
from problems import Case, Problem, Soak, bounded

K = 2


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(7)
    out = []
    for shape in [(2, 5), (1, 3, 4)]:
        logits = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(shape[1:], generator=g, dtype=torch.float64)
        c = torch.randn(math.prod(shape[1:]), generator=g, dtype=torch.float64)

        def f(z, w=w, c=c, nd=len(shape) - 1):
            dims = tuple(range(-nd, 0))
            lin = (z * w).sum(dims)
            return lin**2 + torch.cos(z.flatten(-nd) @ c)

        out.append(Problem(f"topk{'x'.join(map(str, shape))}_k{K}", logits, f))
    return out


def gumbel_topk_probs(logits: list[float], k: int) -> dict[tuple[int, ...], float]:
    """P(set) = Σ over orderings of Π_j p_{σ_j} / (1 - Σ_{l<j} p_{σ_l}) (sampling without replacement)."""
    m = max(logits)
    p = [math.exp(x - m) for x in logits]
    total = sum(p)
    p = [x / total for x in p]
    out = {}
    for subset in itertools.combinations(range(len(p)), k):
        prob = 0.0
        for order in itertools.permutations(subset):
            term, used = 1.0, 0.0
            for i in order:
                term *= p[i] / (1.0 - used)
                used += p[i]
            prob += term
        out[subset] = prob
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    n = params.shape[-1]
    z = samples.reshape(-1, n)
    k = int(z[0].sum())
    probs = gumbel_topk_probs(params.tolist(), k)
    keys = list(probs)
    code = {s: i for i, s in enumerate(keys)}
    idx = [code[tuple(torch.nonzero(row).flatten().tolist())] for row in z.to(torch.int64)]
    counts = torch.bincount(torch.tensor(idx), minlength=len(keys)).double()
    expected = torch.tensor([probs[s] for s in keys], dtype=torch.float64) * counts.sum()
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


def _is_valid(z: torch.Tensor, k: int = K) -> bool:
    return bool(((z == 0) | (z == 1)).all() and (z.sum(-1) == k).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [
        torch.tensor([[big, -big, 0.0, 1.0, big], [0.0, 0.0, 0.0, 0.0, 0.0],
                      [-big, -big, -big, big, -big]], dtype=dtype),
        torch.tensor([[big, big, big, -big]], dtype=dtype),  # a three-way tie for two places
    ]


def _masked(dtype: torch.dtype) -> list[torch.Tensor]:
    """Masked (``-inf``) items: rows with more than ``K`` unmasked, exactly ``K``, and extreme values."""
    inf = float("inf")
    return [
        torch.tensor([[0.3, -inf, 1.2, -0.5, -inf], [-inf, 2.0, -inf, 0.1, -inf], [1.0, 0.0, -inf, 0.5, 0.2]],
                     dtype=dtype),
        torch.tensor([[[1e4, -inf, -1e4, 0.0], [-inf, -1e4, -inf, 1e4]]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([[0.0, float("nan"), 1.0]]), ValueError),
        (torch.tensor([[0.0, float("inf"), 1.0]]), ValueError),
        (torch.tensor([[0, 1, 2]]), TypeError),
        ([[0.0, 1.0]], TypeError),
        (torch.tensor(1.0), ValueError),
        (torch.tensor([[0.5]]), ValueError),  # n = 1 < k = 2
        (torch.tensor([[0.0, -float("inf"), -float("inf")]]), ValueError),  # 1 unmasked item < k = 2
        (torch.tensor([[-float("inf"), -float("inf"), -float("inf")]]), ValueError),  # every item masked
    ]


CASE = Case(
    distribution="topk",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0, -0.2], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    masked_params=_masked,
    bad_hparams={"tau": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "k": [0, -1, 6, 2.5, True, "2", None],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)],
                 "lam": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "noise": ["gaussian", None, 1],
                 "noise_terms": [0, -1, 2.5, True]},
    test_hparams={"k": K},
    # I-MLE's default sum-of-Gamma noise gives top-k of θ + ε, only approximately Gumbel-top-k
    # (test_subsets_map::test_imle_forward_is_topk_of_sum_of_gamma_perturbation covers it)
    law_hparams={"imle": {"noise": "gumbel"}},
)


def _sums_to(z: torch.Tensor, total: float, tol: float) -> bool:
    return bool(((z.double().sum(-1) - total).abs() <= tol * z.shape[-1]).all())


def _refused(spec, size: int, options: dict) -> str | None:
    # the score-function estimators need the Gumbel-top-k law, which sums over the k! orderings
    if spec.kind == "surrogate" and math.factorial(options["k"]) > 5040:
        return f"k! > MAX_LAW_ORDERINGS = 5040 (k = {options['k']})"
    return None


CASE = dataclasses.replace(CASE, soak=Soak(
    sizes=(1, 10),
    event_shape=lambda n: (n,),
    options=lambda n: [{"k": k} for k in range(1, n + 1)],
    # the hypersimplex {0 <= x <= 1, Σ x = k} is the convex hull of the k-hot vectors
    in_hull=lambda z, tol, k: bounded(z, tol) and _sums_to(z, k, tol),
    outside_hull={
        # L2X: the union of k draws with replacement, so Σ x lies in [1, k] (SST paper, L2X)
        "l2x": lambda z, tol, k: bounded(z, tol) and bool(((z.double().sum(-1) >= 1 - tol * z.shape[-1])
                                                           & (z.double().sum(-1) <= k + tol * z.shape[-1])).all()),
        # SoftSub: Σ x = k, but an entry can exceed 1 at moderate tau (docstring): 0 <= x <= k
        "softsub": lambda z, tol, k: bounded(z, tol, 0.0, float(k)) and _sums_to(z, k, tol),
    },
    refused=_refused,
))


# ----------------------------------------------------------------------------- gradient references
# Written from the SST paper's definitions, independently of the library: brute-force
# enumeration of the k-subsets for the exponential-family entropy (Jacobian = covariance / t),
# the implicit-function formula for the LML projection, and the max of softmaxes for L2X.

def _replay_gumbel(shape, dtype, generator):
    u = torch.rand(shape, dtype=dtype, generator=generator)  # Gumbel by inversion: -log(-log(1 - U))
    return -(-torch.log1p(-u)).clamp_min(torch.finfo(dtype).tiny).log()


def _subsets(n, k, dtype):
    rows = [[1.0 if i in s else 0.0 for i in range(n)] for s in itertools.combinations(range(n), k)]
    return torch.tensor(rows, dtype=dtype)


def _gibbs_mean_cov(w, k):
    atoms = _subsets(w.shape[-1], k, w.dtype)
    p = torch.softmax(w @ atoms.T, -1)
    mean = p @ atoms
    second = torch.einsum("...s,si,sj->...ij", p, atoms, atoms)
    return mean, second - mean.unsqueeze(-1) * mean.unsqueeze(-2)


def _check_hard(out, u, k):
    top = u.topk(k, -1).indices
    expected = torch.zeros_like(u).scatter_(-1, top, 1.0)
    assert torch.equal(out.detach(), expected)  # forward = top-k of θ + G


def _ref_entropy(theta, out, v, generator, tau=1.0, k=K, hard=True):
    u = theta + _replay_gumbel(theta.shape, theta.dtype, generator)
    mean, cov = _gibbs_mean_cov(u / tau, k)
    if hard:
        _check_hard(out, u, k)
    else:
        torch.testing.assert_close(out.detach(), mean)
    return (cov @ v.unsqueeze(-1)).squeeze(-1) / tau


def _lml_bisect(w, k):
    lo, hi = -w.amax(-1, keepdim=True) - 50, -w.amin(-1, keepdim=True) + 50
    for _ in range(200):
        mid = (lo + hi) / 2
        big = torch.sigmoid(w + mid).sum(-1, keepdim=True) > k
        lo, hi = torch.where(big, lo, mid), torch.where(big, mid, hi)
    return torch.sigmoid(w + (lo + hi) / 2)


def _ref_binary_entropy(theta, out, v, generator, tau=1.0, k=K, hard=True):
    u = theta + _replay_gumbel(theta.shape, theta.dtype, generator)
    y = _lml_bisect(u / tau, k)
    if hard:
        _check_hard(out, u, k)
    else:
        torch.testing.assert_close(out.detach(), y)
    h = y * (1 - y)  # ∂y/∂w = diag(h) - h hᵀ / Σh (implicit function theorem on Σ σ(w + ν) = k)
    return h * (v - (h * v).sum(-1, keepdim=True) / h.sum(-1, keepdim=True)) / tau


def _ref_l2x(theta, out, v, generator, tau=1.0, k=K):
    g = _replay_gumbel((k, *theta.shape), theta.dtype, generator)
    y = torch.softmax((theta + g) / tau, -1)  # [k, ..., n]
    top = y.argmax(0)
    torch.testing.assert_close(out.detach(), y.amax(0))
    grad = torch.zeros_like(theta)
    for r in range(k):  # coordinate i takes its gradient from the draw that attains the max
        vr = v * (top == r)
        grad = grad + (y[r] * vr - y[r] * (y[r] * vr).sum(-1, keepdim=True)) / tau
    return grad


def _ref_imle(theta, out, v, generator, k=K, lam=10.0, noise="sum_of_gamma", noise_terms=10):
    # Niepert et al. 2021, Alg. 1-2: z = MAP(θ + ε), gradient z - MAP(θ - λ v + ε) with the same ε.
    # The noise is replayed with the library's primitive (its law: test_subsets_map); MAP = top-k.
    if noise == "gumbel":
        eps = _replay_gumbel(theta.shape, theta.dtype, generator)
    else:
        eps = dg.noise.sum_of_gamma(k, theta.shape, terms=noise_terms, dtype=theta.dtype, generator=generator)

    def top(u):
        return torch.zeros_like(u).scatter_(-1, u.topk(k, -1).indices, 1.0)

    z = top(theta + eps)
    assert torch.equal(out.detach(), z)
    return z - top(theta - lam * v + eps)


def _ref_simple(theta, out, v, generator, k=K):
    # Ahmed et al. 2023: backward through the exact marginals of p(S) ∝ exp(Σ_{i∈S} θ_i), |S| = k, whose
    # Jacobian is the covariance of the indicators (brute-force enumeration here); forward top-k of θ + G
    _check_hard(out, theta + _replay_gumbel(theta.shape, theta.dtype, generator), k)
    _, cov = _gibbs_mean_cov(theta, k)
    return (cov @ v.unsqueeze(-1)).squeeze(-1)


CASE = dataclasses.replace(
    CASE,
    references={
        "imle": _ref_imle,
        "simple": _ref_simple,
        "entropy": _ref_entropy,
        "entropy_relaxed": lambda *a, **kw: _ref_entropy(*a, **kw, hard=False),
        "binary_entropy": _ref_binary_entropy,
        "binary_entropy_relaxed": lambda *a, **kw: _ref_binary_entropy(*a, **kw, hard=False),
        "l2x": _ref_l2x,
    },
    covered_by={"softsub": "test_subsets::test_softsub_recursion_and_gradcheck"},
    reference_params=lambda g: torch.randn(6, 4, 5, generator=g, dtype=torch.float64) * 2,
    reference_grid={"tau": [0.3, 1.0, 2.5], "lam": [0.5, 10.0], "noise": ["sum_of_gamma", "gumbel"],
                    "noise_terms": [10, 3]},
)
