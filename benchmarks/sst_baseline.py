"""The SST authors' way of computing the structured relaxations, written from its description
(``/work/shared/reference/FACTS.md`` §3.2-3.3), as the baseline of ``bench_structured.py``.

* top-k (exponential-family entropy) and correlated top-k: marginals by a NumPy float64 log-space
  forward-backward DP over (item, count[, state]) with a Python loop over the items (vectorised over
  the batch and the counts), and the backward by central finite differences,
  ``J g ≈ [μ(w + εg) - μ(w - εg)] / (2ε)`` with ``ε = 1e-2`` (the Jacobian is symmetric); the
  correlated version is the same DP with the state ``x_i`` (no released code; FACTS §3.3);
* spanning trees: ``w`` clipped from below at ``max(w) - 15``, ``W = exp(w - max w)``, the Laplacian
  with the first row and column deleted, ``log Z = logdet + (n - 1) max w`` (``torch.slogdet``), and
  the marginals ``∂ log Z / ∂ w`` by autograd with ``create_graph`` (FACTS §3.2, ``--max_range 15``).

Only for timing: no input checks, float64 NumPy in the DPs whatever the input dtype.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-2


def numpy_topk_marginals(w: np.ndarray, k: int) -> np.ndarray:
    """μ [B, n] of p(S) ∝ exp(Σ_{i∈S} w_i), |S| = k, for w [B, n] (float64)."""
    b, n = w.shape
    neg = -np.inf
    alpha = np.full((n + 1, b, k + 1), neg)  # alpha[i + 1] = α_i; alpha[0] = α_{-1} = (0, -inf, ...)
    alpha[0, :, 0] = 0.0
    for i in range(n):
        prev = alpha[i]
        alpha[i + 1, :, 0] = prev[:, 0]
        alpha[i + 1, :, 1:] = np.logaddexp(prev[:, 1:], prev[:, :-1] + w[:, i:i + 1])
    beta = np.full((n, b, k + 2), neg)  # beta[i][:, j] = β_i(j); column k + 1 stays -inf
    beta[n - 1, :, k] = 0.0
    for i in range(n - 2, -1, -1):
        nxt = beta[i + 1]
        beta[i, :, :k + 1] = np.logaddexp(nxt[:, :k + 1], nxt[:, 1:k + 2] + w[:, i + 1:i + 2])
    with np.errstate(invalid="ignore"):
        l0 = np.logaddexp.reduce(alpha[:n] + beta[:, :, :k + 1], axis=-1)  # [n, B]
        l1 = w.T + np.logaddexp.reduce(alpha[:n] + beta[:, :, 1:], axis=-1)
    return np.exp(l1 - np.logaddexp(l0, l1)).T


def numpy_corr_marginals(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """Item marginals of p(x) ∝ exp(Σ u_i x_i + Σ v_i x_i x_{i+1}) over Σx = k; u [B, n], v [B, n-1]."""
    b, n = u.shape
    neg = -np.inf
    alpha = np.full((n, b, k + 1, 2), neg)  # α_i[j, s]: prefixes 0..i, j ones, x_i = s
    alpha[0, :, 0, 0] = 0.0
    alpha[0, :, 1, 1] = u[:, 0] if k >= 1 else neg
    for i in range(1, n):
        prev = alpha[i - 1]
        alpha[i, :, :, 0] = np.logaddexp(prev[:, :, 0], prev[:, :, 1])
        alpha[i, :, 1:, 1] = u[:, i:i + 1] + np.logaddexp(prev[:, :-1, 0], prev[:, :-1, 1] + v[:, i - 1:i])
    beta = np.full((n, b, k + 2, 2), neg)  # β_i[j, s]: completions of items i+1.. from j ones with x_i = s
    beta[n - 1, :, k, :] = 0.0
    for i in range(n - 2, -1, -1):
        nxt = beta[i + 1]
        take = u[:, i + 1:i + 2] + nxt[:, 1:, 1]  # [B, k + 1]
        beta[i, :, :k + 1, 0] = np.logaddexp(nxt[:, :k + 1, 0], take)
        beta[i, :, :k + 1, 1] = np.logaddexp(nxt[:, :k + 1, 0], take + v[:, i:i + 1])
    with np.errstate(invalid="ignore"):
        log_z = np.logaddexp(alpha[n - 1, :, k, 0], alpha[n - 1, :, k, 1])
        l1 = np.logaddexp.reduce(alpha[:, :, :, 1] + beta[:, :, :k + 1, 1], axis=-1)  # [n, B]
    return np.exp(l1 - log_z).T


class FiniteDifference(torch.autograd.Function):
    """``fn(w)`` (NumPy float64) forward; backward ``[fn(w + εg) - fn(w - εg)] / (2ε)``."""

    @staticmethod
    def forward(ctx, w, fn, eps):  # type: ignore[override]
        ctx.fn, ctx.eps = fn, eps
        ctx.w = w.detach().double().cpu().numpy()
        return torch.from_numpy(fn(ctx.w)).to(w)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        step = ctx.eps * g.detach().double().cpu().numpy()
        jg = (ctx.fn(ctx.w + step) - ctx.fn(ctx.w - step)) / (2 * ctx.eps)
        return torch.from_numpy(jg).to(g), None, None


def topk_marginals(w: torch.Tensor, k: int) -> torch.Tensor:
    return FiniteDifference.apply(w, lambda a: numpy_topk_marginals(a, k), EPS)


def corr_marginals(u: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
    """Finite differences in ``u`` only (``v`` is a constant of the benchmark)."""
    vv = v.detach().double().cpu().numpy()
    return FiniteDifference.apply(u, lambda a: numpy_corr_marginals(a, vv, k), EPS)


def tree_marginals(w: torch.Tensor, max_range: float = 15.0) -> torch.Tensor:
    """Undirected edge marginals of symmetric ``w [B, n, n]`` the SST way (clip, exp, slogdet, autograd)."""
    def log_partition(x):
        n = x.shape[-1]
        off = ~torch.eye(n, dtype=torch.bool, device=x.device)
        top = x.masked_fill(~off, -torch.inf).amax((-1, -2), keepdim=True).detach()
        x = torch.maximum(x, top - max_range)
        a = torch.exp(x - top) * off
        lap = torch.diag_embed(a.sum(-1)) - a
        return torch.linalg.slogdet(lap[..., 1:, 1:])[1] + (n - 1) * top.squeeze((-1, -2))

    leaf = w if w.requires_grad else w.detach().requires_grad_(True)
    with torch.enable_grad():
        (mu,) = torch.autograd.grad(log_partition(leaf).sum(), leaf, create_graph=w.requires_grad)
    return mu
