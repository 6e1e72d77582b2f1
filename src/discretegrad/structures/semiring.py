"""The chain dynamic program over (item, count, state) in a log-space semiring.

One routine, :func:`chain_score`, serves every chain-structured k-subset relaxation in
:mod:`.topk`: the score of a binary vector ``x`` with ``Σ x = k`` is
``Σ_i u_i x_i + Σ_i v_i x_i x_{i+1}`` (unary ``u [..., n]``, optional pair terms ``v [..., n-1]``), and
the DP returns its semiring sum over all such ``x``:

* ``semiring="sum"`` (``a ⊕ b = log(e^a + e^b)``): the log-partition ``log Z = log Σ_x exp(score(x))``;
* ``semiring="max"`` (``a ⊕ b = max(a, b)``): the best score ``max_x score(x)``.

Everything else is read off this one DP ("inference is just backprop", as in pytorch-struct): the
marginals ``P(x_i = 1) = ∂ log Z / ∂ u_i`` by autograd (and their Jacobian, the covariance, by
double backward; :func:`discretegrad.structures.logspace.gradient`), and the maximiser
``x* = ∂ max / ∂ u``: the max passes its whole gradient to one argument (ties to the first), so the
gradient of the best score is the 0/1 indicator of one maximising ``x``; :func:`chain_argmax`
computes the same ``x*`` by a traceback over the max DP's decisions, which is faster (see Cost).

The state ``α_i[j, s]`` after item ``i`` is the semiring sum over prefixes ``x_0..x_i`` with ``j``
ones and ``x_i = s``; without pair terms the last state is not needed and is summed out at every
step (``α_i[j]``), which halves the work of the plain top-k DP. Impossible states hold the finite
:func:`~discretegrad.structures.logspace.neg_inf` stand-in. ``O(n k)`` work in ``n`` vectorised
steps, batched over leading dims.

Cost. Measured against the hand-written forward-backward and back-pointer passes this replaced
(``results/benchmarks/structured_dp.md``: float32 ``[1000, 100]``, k = 10, one CPU thread, median
of 30 interleaved repeats), forward + backward of the hard top-k op with the entropy relaxation
takes 34.6 ms here vs 87.1 ms hand-written (minima 30.7 vs 61.8 ms), and of the hard correlated
top-k op 127.7 ms vs 176.0 ms (121.6 vs 169.6 ms). That
needs the ``⊕`` of the sum semiring to be one fused kernel,
:func:`~discretegrad.structures.logspace.logaddexp` (``torch.logaddexp``'s forward, a backward that
differentiates again): with the composite ``torch.logsumexp`` over a stacked pair, in a preliminary
non-interleaved run not in the report, the top-k op was 1.4-1.7x slower than hand-written. The
maximiser is the exception: autograd through the max DP was 1.5x slower than the back-pointer pass,
so :func:`chain_argmax` reads it off the DP instead (its current cost: ``results/benchmarks/corr_floor.md``).
"""

from __future__ import annotations

import torch

from discretegrad._autograd import compute_dtype
from discretegrad.structures.logspace import logaddexp, neg_inf

__all__ = ["SEMIRINGS", "centre", "chain_score", "chain_argmax"]


def _max_plus(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > a, b, a)  # the gradient goes to one argument (``a`` on ties), unlike torch.maximum's split


SEMIRINGS = {"sum": logaddexp, "max": _max_plus}
"""The semiring sum ``⊕`` of two same-shape tensors, by name; ``⊗`` is ``+`` in both."""


def centre(unary: torch.Tensor, pair: torch.Tensor | None, k: int):
    """``(unary', pair', run_cost, offset)``: the centred chain problem, exactly equivalent.

    ``score(x) = score'(x) + offset`` for every ``x`` with ``Σ x = k``, where ``score'`` is the chain
    score of ``unary' = unary - a`` and ``pair' = pair - b`` plus ``run_cost = -b`` for every run of
    ones after the first, with ``a = max(unary)``, ``b = max(max(pair), 0)`` (detached) and
    ``offset = k a + (k - 1) b``. Exact because ``Σ x = k`` and ``#pairs = k - #runs``. The best
    configuration then scores about 0 instead of ``k a + (k - 1) b``, so a large common offset of the
    unaries (or large positive pair terms) costs no precision. Half inputs come back in float32.
    """
    work = compute_dtype(unary.dtype)
    unary = unary.to(work)
    a = unary.detach().amax(-1)
    unary = unary - a.unsqueeze(-1)
    if pair is None:
        return unary, None, None, k * a
    pair = pair.to(work)
    b = pair.detach().amax(-1).clamp_min(0) if pair.shape[-1] else torch.zeros_like(a)
    return unary, pair - b.unsqueeze(-1), -b, k * a + (k - 1) * b


def chain_score(unary: torch.Tensor, k: int, pair: torch.Tensor | None = None, *,
                semiring: str = "sum", states: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Semiring sum over binary ``x [..., n]`` with ``Σ x = k`` of ``<unary, x> + Σ_i pair_i x_i x_{i+1}``.

    ``semiring="sum"``: ``log Z``; ``"max"``: the best score. ``unary [..., n]``, ``pair [..., n-1]``
    or ``None`` (plain top-k), ``1 <= k <= n``. Returns the batch shape ``unary.shape[:-1]`` (in float32
    for half inputs, which are computed in float32). A list passed as ``states`` receives
    ``α_0 .. α_{n-1}`` of the centred problem (for :func:`chain_argmax`).

    Centring (:func:`centre`): the DP runs on ``unary - max(unary)`` and, with pair terms, on
    ``pair - max(pair, 0)`` with a cost for every run of ones after the first, and adds the exact
    offset back. The states then hold scores relative to the best configuration, so rounding is
    relative to the spread of the inputs, not to their magnitude: ``1e7 + O(1)`` scores in float32
    give the marginals of the ``O(1)`` differences.
    """
    unary, pair, run_cost, offset = centre(unary, pair, k)
    return _chain(unary, k, pair, run_cost, semiring, states) + offset


def _chain(unary: torch.Tensor, k: int, pair: torch.Tensor | None, run_cost: torch.Tensor | None,
           semiring: str, states: list[torch.Tensor] | None) -> torch.Tensor:
    """The DP of :func:`chain_score` on a centred problem (:func:`centre`), without the offset."""
    plus = SEMIRINGS[semiring]
    batch, n = unary.shape[:-1], unary.shape[-1]
    neg = neg_inf(unary.dtype)
    # per-item columns: one autograd node each tensor, not a slice (with a full-size backward) per step
    unary_at = unary.unsqueeze(-1).unbind(-2)  # n tensors [..., 1]
    pair_at = () if pair is None else pair.unsqueeze(-1).unbind(-2)  # pair_at[i - 1] couples items i - 1, i
    # α_{-1}: before item 0 nothing is chosen (and "x_{-1} = 0"); states [..., k+1] or [2, ..., k+1]
    # (the state x_i first: stacking two tensors in front is two block copies, in the last dim one
    # element at a time)
    start = torch.cat([unary.new_zeros((*batch, 1)), unary.new_full((*batch, k), neg)], -1)
    alpha = start if pair is None else torch.stack([start, torch.full_like(start, neg)], 0)
    if pair is not None:  # x_i = 1 after x_{i-1} = 0 with j >= 1 ones before: a run after the first
        new_run = torch.cat([unary.new_zeros((*batch, 1)), run_cost.unsqueeze(-1).expand(*batch, k)], -1)
    for i in range(n):
        # into_s[j]: ⊕ over prefixes x_0..x_{i-1} with j ones, times the pair term of choosing x_i = s
        if pair is None:
            into0 = into1 = alpha
        else:
            last0, last1 = alpha.unbind(0)
            into0 = plus(last0, last1)
            into1 = last0 if i == 0 else plus(last0 + new_run, last1 + pair_at[i - 1])
        # x_i = 1: count j - 1 -> j (shift right by one; count 0 becomes impossible)
        take = torch.nn.functional.pad(into1, (1, -1), value=neg) + unary_at[i]
        alpha = plus(into0, take) if pair is None else torch.stack([into0, take], 0)
        if states is not None:
            states.append(alpha)
    return alpha[..., k] if pair is None else plus(alpha[0, ..., k], alpha[1, ..., k])


def chain_argmax(unary: torch.Tensor, k: int, pair: torch.Tensor | None = None) -> torch.Tensor:
    """A maximiser ``x [..., n]`` (0/1, ``Σ x = k``) of the :func:`chain_score` objective; no gradient.

    Equal to ``∂ chain_score(unary, k, pair, semiring="max") / ∂ unary`` (same tie-breaking; tested),
    but read off the max DP by a traceback: from ``(count k, best last state)``, the state of item
    ``i - 1`` is the maximising ``s'`` of ``α_{i-1}[j - x_i, s'] + pair_{i-1} x_i s'``, recorded by the DP
    as the sign of the difference of the two candidates (:func:`_max_gaps`; ``> 0`` exactly when the
    candidate from ``s' = 1`` is larger, as IEEE subtraction of distinct values is nonzero unless
    denormals are flushed, so ties go to ``s' = 0`` as in ``⊕ = max``). The traceback is used because
    it is faster than autograd through the max DP (``results/benchmarks/corr_floor.md``: the max DP and
    the traceback at ``[1000, 100]``, k = 10). ``pair=None`` is plain top-k (pair terms zero).
    """
    with torch.no_grad():
        batch, n = unary.shape[:-1], unary.shape[-1]
        unary = unary.detach().reshape(-1, n)
        pair = unary.new_zeros((unary.shape[0], n - 1)) if pair is None else pair.detach().reshape(unary.shape[0], n - 1)
        unary, pair, run_cost, _ = centre(unary, pair, k)  # the centred problem: same maximiser
        gaps, last = _max_gaps(unary, pair, run_cost, k)
        b = unary.shape[0]
        x = unary.new_empty(n, b, dtype=torch.bool)
        torch.gt(last[1, k], last[0, k + 1], out=x[-1])  # x_{n-1}; ties to 0 as in ⊕ = max
        # the traceback's state at item i in two buffers in turn: [row s (k + 1) + j of the flat gaps, j], j the
        # ones before item i; from x_{i-1} = d the next is [j + k d, j - d] (one addcmul)
        step = torch.tensor([[k], [-1]], device=unary.device)
        rows = torch.empty(2, 2, b, dtype=torch.long, device=unary.device)
        torch.addcmul(torch.full_like(rows[0, :1], k), x[-1], step, out=rows[(n - 1) % 2])
        flat = gaps.flatten(1, 2)  # [n - 1, 2 (k + 1), B]: state s, predecessor count j at s (k + 1) + j
        found, xs, flats = unary.new_empty(1, b), x.unbind(0), flat.unbind(0)
        at, before = rows[:, :1].unbind(0), rows[:, 1:].unbind(0)
        for i in range(n - 1, 0, -1):
            torch.gt(torch.gather(flats[i - 1], 0, at[i % 2], out=found)[0], 0, out=xs[i - 1])
            torch.addcmul(before[i % 2], xs[i - 1], step, out=rows[(i - 1) % 2])
    return x.t().to(unary.dtype).reshape(*batch, n)


def _max_gaps(unary: torch.Tensor, pair: torch.Tensor, run_cost: torch.Tensor, k: int):
    """The max DP of :func:`_chain` (with pair terms) for ``unary [B, n]``, the batch last: ``(gaps, last)``.

    ``gaps [n - 1, 2, k + 1, B]``: at ``[i - 1, s, j]``, for the state ``(item i, x_i = s)`` whose
    predecessor has ``j`` ones, the candidate from ``x_{i-1} = 1`` minus the candidate from ``x_{i-1} = 0``
    (the same additions as :func:`_chain`, so the same values and ties). ``last [2, k + 2, B]``: the states of
    item ``n - 1``, ``α[j, 0]`` at ``[0, j + 1]`` and ``α[j, 1]`` at ``[1, j]``. Only the gaps are kept; the
    states live in two buffers in turn of four slots of ``k + 2`` rows: ``α[j, 0]`` at ``[0, j + 1]``,
    ``α[j, 1]`` at ``[1, j]`` (row 0: the impossible count, so the shift of a taken item is a view), and the
    two candidates that need an addition, ``α[j, 0] + run cost`` at ``[2, j + 1]`` and ``α[j, 1] + pair`` at
    ``[3, j]``, so that each pair of candidates is one strided view (five kernels a step)."""
    b, n = unary.shape
    neg = neg_inf(unary.dtype)
    states = unary.new_empty(2, 4, k + 2, b)
    states[:, 1, 0] = neg
    states[0, :2, 1:] = neg
    states[0, 0, 1] = 0.0  # x_0 = 0: nothing chosen
    states[0, 1, 1] = unary[:, 0]  # x_0 = 1: count 1
    runs = unary.new_zeros(k + 1, b)  # a new run after the first (count j >= 1 before)
    runs[1:] = run_cost
    items, pairs = unary.t().contiguous(), pair.t().contiguous()  # [n, B], [n - 1, B]: rows of B
    gaps = unary.new_empty(n - 1, 2, k + 1, b)
    # the views of every step made once (indexing in the loop costs about as much as the kernels)
    zeros, ones = states[:, 0, 1:].unbind(0), states[:, 1, :-1].unbind(0)
    zero_runs, one_pairs = states[:, 2, 1:].unbind(0), states[:, 3, :-1].unbind(0)
    from_zero, from_one = states[:, 0::2, 1:].unbind(0), states[:, 1::2, :-1].unbind(0)
    outs, taken = states[:, :2, 1:].unbind(0), states[:, 1, 1:].unbind(0)
    for i, (item, pair_i, gap) in enumerate(zip(items[1:].unbind(0), pairs.unbind(0), gaps.unbind(0))):
        t = i % 2
        torch.add(zeros[t], runs, out=zero_runs[t])
        torch.add(ones[t], pair_i, out=one_pairs[t])
        torch.sub(from_one[t], from_zero[t], out=gap)
        torch.maximum(from_zero[t], from_one[t], out=outs[1 - t])
        taken[1 - t].add_(item)  # x_i = 1: α[j, 1] includes u_i
    return gaps, states[(n - 1) % 2, :2]
