"""Correlated top-k marginals with a closed-form SST backward: the fast path of
:func:`.topk.corr_topk_marginals`.

The law is ``p(x) ∝ exp(Σ u_i x_i + Σ v_i x_i x_{i+1})`` over ``Σ x = k``. The forward pass is the chain DP
of :mod:`.semiring` on the centred problem (:func:`~.semiring.centre`; ``α_i[j, s]``: prefixes
``x_0..x_i`` with ``j`` ones and ``x_i = s``, in log space), then one pass from the last item down that
moves the posterior probability of each state to its two predecessors in proportions ``σ`` of a
difference of their log-weights (what autograd's backward through the DP computes):
``μ_i = Σ_j P(state (i, j, 1))``. Probabilities, not ``exp(α + β - log Z)``, whose rounding grows
with the size of the log-weights.

The SST backward is the covariance with the cost vector ``g``: ``∂μ/∂u^T g = Cov(X, <g, X>)`` and
``∂μ/∂v^T g = Cov(Y, <g, X>)`` with ``Y_i = x_i x_{i+1}``, from two more passes of the same shape that
carry, for every state, the conditional mean of ``<g, X>`` over the prefix (or the completion): a
weighted average of the predecessors' means in the same posterior proportions (in linear space:
the means are bounded by ``k max |g|``), and the posterior mass times the mean over the completion,
moved down like the probabilities. No autograd graph is built or differentiated (the log-space DP's backward was
autograd's double backward through ``n`` steps); a derivative taken with ``create_graph`` goes
through autograd of the log-space DP instead, which is differentiable again. Tested against it
(``tests/test_structures.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from discretegrad._autograd import compute_dtype
from discretegrad.structures.semiring import _chain, centre

__all__ = ["corr_marginals"]


def corr_marginals(u: torch.Tensor, v: torch.Tensor, k: int,
                   reference: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Item marginals of ``p(x) ∝ exp(<u, x> + Σ v_i x_i x_{i+1})``, ``Σ x = k``, for ``u [..., n]``,
    ``v [..., n - 1]`` (``n >= 2``), in ``u``'s dtype. ``reference(u, v, k)``: the same marginals by autograd,
    used for derivatives taken with ``create_graph``."""
    batch, n = u.shape[:-1], u.shape[-1]
    out = _CorrMarginals.apply(u.reshape(-1, n), v.reshape(-1, n - 1), k, reference)
    return out.reshape(*batch, n)


def _forward(u: torch.Tensor, v: torch.Tensor, k: int):
    """``(μ [B, n], γ, stay, take, pair, new_run)`` of the centred problem: ``γ [n, 2, B, k+1]`` the posterior
    probability of every state ``(i, s, j)``, ``stay[i - 1]`` / ``take[i - 1]`` ``[n-1, B, k+1]`` the posterior
    probability that the predecessor of ``(i, j, 0)`` / of ``(i, j + 1, 1)`` has ``x_{i-1} = 1``."""
    unary, pair, run_cost, _ = centre(u, v, k)
    states: list[torch.Tensor] = []
    _chain(unary, k, pair, run_cost, "sum", states)
    alpha = torch.stack(states, 0)
    b, n = unary.shape
    # the cost of x_i = 1 after x_{i-1} = 0 with j ones before: a new run (j >= 1) or the first (j = 0)
    new_run = torch.cat([unary.new_zeros(b, 1), run_cost.unsqueeze(-1).expand(b, k)], -1)
    p0, p1 = alpha[:-1].unbind(1)  # predecessors, indexed by their own count
    stay = torch.sigmoid(p1 - p0)
    take = torch.sigmoid((p1 + pair.t().unsqueeze(-1)) - (p0 + new_run))
    last = torch.sigmoid(alpha[-1, 1, :, k] - alpha[-1, 0, :, k])  # x_{n-1} given k ones in all
    top = torch.zeros_like(alpha[-1])
    top[0, :, k], top[1, :, k] = 1 - last, last
    gamma = _down(top, stay, take)
    return gamma[:, 1].sum(-1).t(), gamma, stay, take, pair, new_run


def _down(top: torch.Tensor, stay: torch.Tensor, take: torch.Tensor,
          source: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mass on the states ``[n, 2, B, k+1]`` moved from the last item to the first: each state passes its
    mass (plus ``source(i, mass)``) to its two predecessors in the posterior proportions ``stay``/``take``."""
    out = [top]
    for i in range(stay.shape[0], 0, -1):
        mass = out[-1] if source is None else out[-1] + source(i, out[-1])
        zero, one = mass.unbind(0)
        one = torch.nn.functional.pad(one[:, 1:], (0, 1))  # x_i = 1 came from count j - 1
        w_stay, w_take = stay[i - 1], take[i - 1]
        to_one = zero * w_stay + one * w_take
        out.append(torch.stack([zero + one - to_one, to_one], 0))
    return torch.stack(out[::-1], 0)


def _prefix_means(g: torch.Tensor, stay: torch.Tensor, take: torch.Tensor, k: int) -> torch.Tensor:
    """``E[Σ_{t<=i} g_t x_t | state (i, j, 1)]`` under the posterior, ``[n, B, k+1]``."""
    b, n = g.shape
    m0, m1 = g.new_zeros(b, k + 1), g[:, :1].expand(b, k + 1)
    means = [m1]
    for i in range(1, n):
        into = torch.lerp(m0, m1, take[i - 1])
        m0, m1 = torch.lerp(m0, m1, stay[i - 1]), g[:, i:i + 1] + torch.nn.functional.pad(into[:, :-1], (1, 0))
        means.append(m1)
    return torch.stack(means, 0)


class _CorrMarginals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, v, k, reference):  # type: ignore[override]
        work = compute_dtype(u.dtype)
        mu, gamma, stay, take, pair, new_run = _forward(u.to(work), v.to(work), k)
        ctx.k, ctx.reference = k, reference
        ctx.save_for_backward(u, v, mu, gamma, stay, take)
        return mu.to(u.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        u, v, mu, gamma, stay, take = ctx.saved_tensors
        k = ctx.k
        if torch.is_grad_enabled():  # create_graph: a derivative that is differentiable again
            wanted = [t for t, needed in zip((u, v), ctx.needs_input_grad[:2]) if needed]
            with torch.enable_grad():
                grads = iter(torch.autograd.grad(ctx.reference(u, v, k), wanted, g, create_graph=True, allow_unused=True))
            return *(next(grads) if needed else None for needed in ctx.needs_input_grad[:2]), None, None
        g = g.to(mu.dtype)
        prefix = _prefix_means(g, stay, take, k)  # [n, B, k+1]
        # eta[i]: γ_i times E[Σ_{t>i} g_t x_t | state], moved down like γ with the source γ_i g_i x_i
        step = g.t()
        eta = _down(torch.zeros_like(gamma[-1]), stay, take,
                    lambda i, mass: torch.stack([torch.zeros_like(gamma[i, 0]),
                                                 gamma[i, 1] * step[i].unsqueeze(-1)], 0))[:, 1]
        mean = (g * mu).sum(-1, keepdim=True)  # E[<g, X>]
        grad_u = (gamma[:, 1] * prefix + eta).sum(-1).t() - mu * mean
        grad_v = None
        if ctx.needs_input_grad[1]:
            # P(x_i = x_{i+1} = 1, j ones through i), for j = 0 .. k - 1
            w = take[:, :, :-1]
            pairs = gamma[1:, 1, :, 1:] * w
            both = pairs * (prefix[:-1, :, :-1] + step[1:].unsqueeze(-1)) + eta[1:, :, 1:] * w
            grad_v = (both.sum(-1) - pairs.sum(-1) * mean.t()).t().to(v.dtype)
        return grad_u.to(u.dtype), grad_v, None, None
