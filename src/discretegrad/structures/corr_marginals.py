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
(``tests/test_corr_marginals.py``).

Layout: the batch last, so that each kernel runs along rows of ``B`` (with the counts last, rows of
``k + 1`` kept the kernels from vectorising); an extra count row makes the shift of a taken item a view.
Each pass keeps only what a later pass reads: the DP its posterior weights ``[n - 1, 2, k + 1, B]``, the
posterior pass the states with ``x_i = 1`` (``[n, k + 2, B]``), the prefix pass its means ``[n, k + 1, B]``;
the other states live in two buffers used in turn, and the covariances are summed inside the last pass.

Cost (float32 ``[1000, 100]``, k = 10, one thread): a step of each pass is a few kernels on
``[2, k + 1, B]`` or ``[k + 1, B]``, 1-8 us each from Python, and the five passes (with the hard
sample's max DP and traceback) run ``n - 1`` such steps: about 27 kernels a step, 2,700 in all.
``benchmarks/bench_corr_floor.py`` times each pass and kernel (``results/benchmarks/corr_floor.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from discretegrad._autograd import compute_dtype
from discretegrad.structures.logspace import neg_inf
from discretegrad.structures.semiring import centre

__all__ = ["corr_marginals"]


def corr_marginals(u: torch.Tensor, v: torch.Tensor, k: int,
                   reference: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Item marginals of ``p(x) ∝ exp(<u, x> + Σ v_i x_i x_{i+1})``, ``Σ x = k``, for ``u [..., n]``,
    ``v [..., n - 1]`` (``n >= 2``), in ``u``'s dtype. ``reference(u, v, k)``: the same marginals by autograd,
    used for derivatives taken with ``create_graph``."""
    batch, n = u.shape[:-1], u.shape[-1]
    out = _CorrMarginals.apply(u.reshape(-1, n), v.reshape(-1, n - 1), k, reference)
    return out.reshape(*batch, n)


def _log_weights(unary: torch.Tensor, pair: torch.Tensor, run_cost: torch.Tensor, k: int):
    """The sum-semiring chain DP of :func:`~.semiring.chain_score` on the centred problem, the batch last
    (every kernel runs along rows of ``B``): ``(weights [n - 1, 2, k + 1, B], last [2, k + 2, B])``.

    ``weights[i - 1, s, j]``: for the state ``(item i, x_i = s)`` whose predecessor has ``j`` ones, the
    posterior probability that the predecessor has ``x_{i-1} = 1``, ``σ`` of the difference ``d`` of the two
    predecessors' log-weights. ``last``: the states of item ``n - 1``, ``α[j, 0]`` at ``[0, j + 1]`` and
    ``α[j, 1] - u_{n-1}`` at ``[1, j]`` (row ``0`` of that half holds the impossible count, so the shift
    "``x_i = 1``: count ``j - 1 -> j``" is a view, and ``u_i`` is added in the next step's offsets). Two state
    buffers in turn; only the weights are kept.

    The semiring sum is ``log(e^a + e^b) = max(a, b) - log max(w, 1 - w)`` with the weight ``w = σ(b - a)``
    the pass keeps anyway (``max(w, 1 - w) = σ(|b - a|)``, in ``[1/2, 1]``: its logarithm has an absolute
    error of a few ulps, as ``log1p``'s would; exact for ``b = -inf``). Its six kernels cost less than one
    ``torch.logaddexp`` on one thread (``results/benchmarks/corr_floor.md``: a ``torch.logaddexp`` on a
    step's ``[2, k + 1, B]`` costs as much as eleven additions)."""
    b, n = unary.shape
    neg = neg_inf(unary.dtype)
    states = unary.new_empty(2, 2, k + 2, b)  # item i in states[i % 2]
    states[:, :, 0] = neg
    states[0, :, 1] = 0.0  # before item 0 nothing is chosen; item 0 taken: count 0 -> 1
    states[0, :, 2:] = neg
    runs = unary.new_zeros(2, k + 1, b)
    runs[1, 1:] = run_cost
    # the offsets of the step into item i from x_{i-1} = 1: u_{i-1} (x_i = 0) and u_{i-1} + pair_{i-1} (x_i = 1)
    offsets = torch.stack([unary[:, :-1], unary[:, :-1] + pair]).permute(2, 0, 1).unsqueeze(2).contiguous()  # [n-1, 2, 1, B]
    weights = unary.new_empty(n - 1, 2, k + 1, b)
    from_zero, from_one, top = torch.empty_like(runs), torch.empty_like(runs), torch.empty_like(runs)
    # the views of every step made once (indexing in the loop costs about as much as the kernels)
    zeros, ones, outs = states[:, 0, 1:].unbind(0), states[:, 1, :-1].unbind(0), states[:, :, 1:].unbind(0)
    for i, (offset, w) in enumerate(zip(offsets.unbind(0), weights.unbind(0))):
        torch.add(zeros[i % 2], runs, out=from_zero)
        torch.add(ones[i % 2], offset, out=from_one)
        torch.sub(from_one, from_zero, out=w).sigmoid_()
        torch.maximum(w, torch.neg(w, out=top).add_(1), out=top)  # σ(|d|)
        torch.maximum(from_zero, from_one, out=outs[(i + 1) % 2]).sub_(top.log_())
    return weights, states[(n - 1) % 2]


def _forward(u: torch.Tensor, v: torch.Tensor, k: int):
    """``(μ [B, n], γ, w)`` of the centred problem: ``γ [n, k+2, B]`` the posterior probability of the states
    ``(i, j, 1)`` at ``[i, j]`` (row ``k + 1`` is zero), ``w [n-1, 2, k+1, B]`` the posterior probability that
    the predecessor of the state ``(i, j, 0)`` (at ``w[i - 1, 0, j]``) or of ``(i, j + 1, 1)`` (at
    ``w[i - 1, 1, j]``) has ``x_{i-1} = 1``. The states with ``x_i = 0`` are moved through two buffers in turn."""
    unary, pair, run_cost, _ = centre(u, v, k)
    weights, last = _log_weights(unary, pair, run_cost, k)
    x_last = torch.sigmoid(last[1, k] + unary[:, -1] - last[0, k + 1])  # x_{n-1} given k ones
    n, b = unary.shape[1], unary.shape[0]
    gamma, zeros = unary.new_empty(n, k + 2, b), unary.new_zeros(2, k + 1, b)
    gamma[:, -1] = 0.0
    gamma[-1] = 0.0
    gamma[-1, k], zeros[(n - 1) % 2, k] = x_last, 1 - x_last
    zeros, ones, to_ones = zeros.unbind(0), gamma[:, 1:].unbind(0), gamma[:, :-1].unbind(0)
    for i, (stay, take) in reversed(list(enumerate(zip(weights[:, 0].unbind(0), weights[:, 1].unbind(0)), 1))):
        _move(zeros[i % 2], ones[i], stay, take, zeros[(i - 1) % 2], to_ones[i - 1])
    return gamma[:, :-1].sum(1).t().contiguous(), gamma, weights


def _move(zero: torch.Tensor, one: torch.Tensor, stay: torch.Tensor, take: torch.Tensor, to_zero: torch.Tensor,
          to_one: torch.Tensor) -> None:
    """One step down the chain: the mass on the states ``(i, j, 0)`` (``zero [k+1, B]``) and ``(i, j + 1, 1)``
    (``one``) goes to their predecessors ``(i - 1, j, 0)`` and ``(i - 1, j, 1)`` in the posterior proportions
    ``1 - stay``, ``stay`` and ``1 - take``, ``take`` (written to ``to_zero``, ``to_one``)."""
    torch.mul(zero, stay, out=to_one).addcmul_(one, take)
    torch.add(zero, one, out=to_zero).sub_(to_one)


def _prefix_means(g: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``E[Σ_{t<=i} g_t x_t | state (i, j, 1)]`` under the posterior, ``[n, k+1, B]``, for ``g [n, B]``."""
    n, b = g.shape
    k1 = weights.shape[2]
    means = g.new_empty(n, k1, b)
    means[0] = g[0]
    # two buffers in turn, [2, k+2, B]: at [0, j + 1] the mean over the states (i, j, 0), at [1, j + 1] that
    # over the predecessors of (i, j + 1, 1) (row [1, 0] stays zero: count 0 has no predecessor with x = 1)
    into = g.new_zeros(2, 2, k1 + 1, b)
    zeros, outs, kept = into[:, 0, 1:].unbind(0), into[:, :, 1:].unbind(0), into[:, 1, :-1].unbind(0)
    rows, gs = means.unbind(0), g.unbind(0)
    for i, weight in enumerate(weights.unbind(0), 1):
        torch.lerp(zeros[i % 2 - 1], rows[i - 1], weight, out=outs[i % 2])  # both halves in one kernel
        torch.add(kept[i % 2], gs[i], out=rows[i])
    return means


def _covariances(gamma: torch.Tensor, weights: torch.Tensor, prefix: torch.Tensor, g: torch.Tensor,
                 mean: torch.Tensor, pairs: bool):
    """``(E[x_i <g, X>] [n, B], Cov(x_i x_{i+1}, <g, X>) [n - 1, B] or None)`` from one pass down the chain.

    ``η_i`` (in two buffers in turn): ``γ`` times ``E[Σ_{t>i} g_t x_t | state]`` on every state of item ``i``,
    moved down like ``γ`` (:func:`_move`) with the source ``γ_i g_i`` on ``x_i = 1``. Then
    ``E[x_i <g, X>] = Σ_j η_i[j, 1] + γ_i[j, 1] prefix_i[j]`` and, for ``pairs``, ``Cov(x_i x_{i+1}, <g, X>) =
    Σ_j take_i[j] (η_{i+1}[j + 1, 1] + γ_{i+1}[j + 1, 1] (prefix_i[j] + g_{i+1} - E<g, X>))``."""
    n, k2, b = gamma.shape
    eta = gamma.new_zeros(2, 2, k2, b)
    scratch, total = torch.empty_like(gamma[0]), gamma.new_empty(n, b)
    head, tail = scratch[:-1], scratch[1:]
    # the views of every step made once (indexing in the loop costs about as much as the kernels)
    zeros, ones, to_ones = eta[:, 0, :-1].unbind(0), eta[:, 1].unbind(0), eta[:, 1, :-1].unbind(0)
    stays, takes = (None, *weights[:, 0].unbind(0)), (None, *weights[:, 1].unbind(0))
    cross = gamma.new_empty(n - 1, b) if pairs else None
    offsets = (g - mean)[1:] if pairs else None  # g_{i+1} - E<g, X>, [n - 1, B]
    steps = zip(gamma.unbind(0), gamma[:, :-1].unbind(0), prefix.unbind(0), g.unbind(0), total.unbind(0))
    for i, (one_g, head_g, row, g_i, total_i) in reversed(list(enumerate(steps))):
        torch.sum(torch.addcmul(to_ones[i % 2], head_g, row, out=head), 0, out=total_i)
        if i == 0:
            break
        one = ones[i % 2]
        if pairs:
            both = torch.add(prefix[i - 1, :-1], offsets[i - 1], out=scratch[:-2])
            both = torch.addcmul(one[1:-1], one_g[1:-1], both, out=both).mul_(takes[i][:-1])
            torch.sum(both, 0, out=cross[i - 1])
        torch.addcmul(one, one_g, g_i, out=scratch)
        _move(zeros[i % 2], tail, stays[i], takes[i], zeros[(i - 1) % 2], to_ones[(i - 1) % 2])
    return total, cross


class _CorrMarginals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, v, k, reference):  # type: ignore[override]
        work = compute_dtype(u.dtype)
        mu, gamma, weights = _forward(u.to(work), v.to(work), k)
        ctx.k, ctx.reference = k, reference
        ctx.save_for_backward(u, v, mu, gamma, weights)
        return mu.to(u.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        u, v, mu, gamma, weights = ctx.saved_tensors
        k = ctx.k
        if torch.is_grad_enabled():  # create_graph: a derivative that is differentiable again
            wanted = [t for t, needed in zip((u, v), ctx.needs_input_grad[:2]) if needed]
            with torch.enable_grad():
                grads = iter(torch.autograd.grad(ctx.reference(u, v, k), wanted, g, create_graph=True, allow_unused=True))
            return *(next(grads) if needed else None for needed in ctx.needs_input_grad[:2]), None, None
        g = g.to(mu.dtype)
        g_items = g.t().contiguous()  # [n, B]
        mean = (g * mu).sum(-1)  # E[<g, X>]
        prefix = _prefix_means(g_items, weights)  # [n, k+1, B]
        grad_u, grad_v = _covariances(gamma, weights, prefix, g_items, mean, ctx.needs_input_grad[1])
        grad_u = (grad_u.t() - mu * mean.unsqueeze(-1)).to(u.dtype)
        grad_v = None if grad_v is None else grad_v.t().to(v.dtype)
        return grad_u, grad_v, None, None
