"""The correlated top-k fast path (``structures/corr_marginals.py``: posterior pass and closed-form
SST backward) against the log-space chain DP with autograd it replaced (``corr_topk_marginals_reference``).

Deterministic comparisons to float64 rounding; float32 against the float64 reference.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from discretegrad import structures as S
from discretegrad.structures.topk import corr_topk_marginals_reference


def _inputs(pattern: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.randn(5, n, generator=gen, dtype=torch.float64)
    v = torch.randn(5, n - 1, generator=gen, dtype=torch.float64)
    if pattern == "spread":
        return 30 * u, 30 * v
    if pattern == "offset":
        return 1e6 + u, 5e5 + v
    if pattern == "ties":
        return torch.randint(-2, 3, u.shape, generator=gen).double(), torch.randint(-2, 3, v.shape, generator=gen).double()
    if pattern == "negative_pairs":
        return u, v - 20
    return u, v


PATTERNS = ["normal", "spread", "offset", "ties", "negative_pairs"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("n,k", [(2, 1), (2, 2), (6, 3), (9, 1), (10, 10), (40, 10)])
def test_fast_path_equals_the_reference_values_and_sst_gradients(n, k, pattern):
    gen = torch.Generator().manual_seed(7 * n + k)
    u, v = _inputs(pattern, n, gen)
    u, v = u.requires_grad_(True), v.requires_grad_(True)
    w = torch.randn(5, n, generator=gen, dtype=torch.float64)
    out = []
    for fn in (S.corr_topk_marginals, corr_topk_marginals_reference):
        mu = fn(u, v, k)
        out.append((mu.detach(), *torch.autograd.grad((mu * w).sum(), (u, v))))
    for got, ref in zip(out[0], out[1]):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(out[0][0].sum(-1), torch.full((5,), float(k), dtype=torch.float64), rtol=1e-12, atol=0)


def test_second_derivative_and_unused_pair_gradient():
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (S.corr_topk_marginals, corr_topk_marginals_reference):
        (g,) = torch.autograd.grad((fn(u, v, 3) * w).sum(), u, create_graph=True)
        (gg,) = torch.autograd.grad((g * w).sum(), u)
        grads.append((g.detach(), gg))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a, b: S.corr_topk_marginals(a, b, 3),
                                    (u.detach().requires_grad_(True), v.requires_grad_(True)))


def test_masked_items_against_enumeration():
    """Items at ``-inf`` (never chosen): zero marginal and gradient there, the enumerated marginals, the
    enumerated covariance as the SST gradient (float64) and the enumerated maximiser elsewhere."""
    gen = torch.Generator().manual_seed(11)
    n, k = 8, 3
    u = torch.randn(4, n, generator=gen, dtype=torch.float64)
    v = torch.randn(4, n - 1, generator=gen, dtype=torch.float64)
    u[:, [0, 3]] = -math.inf
    u[1, 7] = -math.inf
    atoms = torch.tensor([[float(i in c) for i in range(n)] for c in itertools.combinations(range(n), k)],
                         dtype=torch.float64)
    masked = torch.isinf(u).double() @ atoms.T > 0
    score = (u.masked_fill(torch.isinf(u), 0) @ atoms.T + v @ (atoms[:, :-1] * atoms[:, 1:]).T).masked_fill(masked, -math.inf)
    p = torch.softmax(score, -1)
    mean = p @ atoms
    cov = torch.einsum("ba,ai,aj->bij", p, atoms, atoms) - mean[:, :, None] * mean[:, None, :]
    w = torch.randn(4, n, generator=gen, dtype=torch.float64)
    leaf = u.clone().requires_grad_(True)
    mu = S.corr_topk_marginals(leaf, v, k)
    (grad,) = torch.autograd.grad((mu * w).sum(), leaf)
    torch.testing.assert_close(mu.detach(), mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, torch.einsum("bij,bj->bi", cov, w), rtol=0, atol=1e-10)
    assert (mu[torch.isinf(u)] == 0).all() and (grad[torch.isinf(u)] == 0).all()
    assert torch.equal(S.corr_topk_hard(u, v, k), atoms[score.argmax(-1)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_float32_and_half_against_the_float64_reference(dtype):
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(6, 30, generator=gen, dtype=torch.float64) * 3
    v = torch.randn(6, 29, generator=gen, dtype=torch.float64)
    u, v = u.to(dtype).double(), v.to(dtype).double()  # the rounded inputs
    w = torch.randn(6, 30, generator=gen, dtype=torch.float64)
    leaf = u.clone().requires_grad_(True)
    ref = corr_topk_marginals_reference(leaf, v, 8)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), leaf)
    low = u.to(dtype).requires_grad_(True)
    mu = S.corr_topk_marginals(low, v.to(dtype), 8)
    (grad,) = torch.autograd.grad((mu * w.to(dtype)).sum(), low)
    assert mu.dtype == dtype and grad.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # half: the output's own rounding
    torch.testing.assert_close(mu.double(), ref.detach(), rtol=0, atol=tol)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol * float(ref_grad.abs().max()))


def test_under_vmap_and_inference_mode_the_reference_and_the_fast_path_agree():
    gen = torch.Generator().manual_seed(9)
    u = torch.randn(4, 2, 7, generator=gen)
    v = torch.randn(4, 2, 6, generator=gen)
    ref = S.corr_topk_marginals(u, v, 3)
    torch.testing.assert_close(torch.func.vmap(lambda a, b: S.corr_topk_marginals(a, b, 3))(u, v), ref)
    with torch.inference_mode():
        torch.testing.assert_close(S.corr_topk_marginals(u, v, 3), ref)
