"""Unbiased score-function estimators for categorical variables beyond REINFORCE/RLOO/MuProp:
IndeCateR (per-variable exact sums) and the unordered set estimator (samples without replacement).

Both are ``kind="surrogate"`` estimators (they need ``f``): use them through
:func:`discretegrad.surrogate` (``estimator="indecater"`` / ``"unordered_set"``). ``logits``
``[*batch, *variables, N]``; the *variables of one batch element* are the dims of the variable
shape after the batch dims (``f`` returns ``[n, *batch]``). Their gradient with respect to
anything ``f`` depends on is pathwise, as in :mod:`discretegrad.score_function`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from discretegrad import _validation as V
from discretegrad.noise import gumbel, gumbel_with_max
from discretegrad.registry import register
from discretegrad.score_function import CostFn, finish, param_term, per_variable_costs, setup

__all__ = ["MAX_SET_SIZE", "indecater", "unordered_set", "beam_sample", "set_weights"]

MAX_SET_SIZE = 12
"""Largest sample set of :func:`unordered_set` (its weights are a dynamic program over the ``2^k`` subsets)."""


# ----------------------------------------------------------------------------- IndeCateR

@register("indecater", distribution="categorical", kind="surrogate", unbiased=True,
          reference="De Smet, Sansone and Zuidberg Dos Martires 2023, Differentiable sampling of categorical "
                    "distributions using the CatLog-derivative trick (IndeCateR), NeurIPS")
def indecater(f: CostFn, params: torch.Tensor, *, distribution: str = "categorical", n_samples: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """IndeCateR: for every variable, the exact sum over its categories with the others sampled.

    For independent variables ``z_1..z_V`` (of one batch element) with ``π_v = softmax(θ_v)``, the
    CatLog-derivative trick gives ``∇_{θ_v} E[f] = E_{z_{-v}}[Σ_k ∇π_{v,k} f(k, z_{-v})]``; with
    ``n`` samples ``z^{(i)}`` (shared by all variables)::

        ĝ_{v,j} = (1/n) Σ_i π_{v,j} (F_{v,j}^{(i)} - Σ_k π_{v,k} F_{v,k}^{(i)}),   F_{v,k}^{(i)} = f(k, z_{-v}^{(i)}).

    Unbiased; the sum over ``z_v`` is Rao-Blackwellised (exact) and ``Σ_k ∇π_{v,k} = 0`` acts as a
    built-in baseline, so the variance is that of the remaining ``z_{-v}`` only (zero for one
    variable). Cost: ``V·N`` evaluations of ``f`` per sample (plus the ``n`` evaluations of the
    value, the Monte Carlo mean of ``f``), batched over batch elements, done without gradient in
    chunks of bounded memory (:func:`discretegrad.score_function.per_variable_costs`).
    """
    V.choice("distribution", distribution, ("categorical",))
    d = setup(f, params, "categorical", n_samples, generator, {})
    z = d.sample()
    costs = d.costs(f, z)
    batch_ndim = costs.dim() - 1
    n_cat = z.shape[-1]
    atoms = torch.eye(n_cat, dtype=z.dtype, device=z.device)
    nb = batch_ndim

    def replace(inner: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        point = atoms.reshape(1, n_cat, 1, *([1] * nb), 1, n_cat)  # [1, N(m), 1(n), *batch, 1(V), N]
        return torch.where(mask, point, inner.unsqueeze(0).unsqueeze(0))

    table = per_variable_costs(f, d, z, batch_ndim, replace, n_cat).to(d.x.dtype)  # [V, N, n, *batch]
    table = table.permute(2, *range(3, 3 + nb), 0, 1)  # [n, *batch, V, N]
    probs = torch.softmax(d.x.detach(), -1).reshape(*table.shape[1:])
    coef = (probs * (table - (probs * table).sum(-1, keepdim=True))).mean(0)
    return finish(costs.mean(0), param_term(coef.reshape(d.x.shape), d.x, batch_ndim))


# ----------------------------------------------------------------------------- the unordered set estimator

def beam_sample(log_probs: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(k, N^V)`` distinct configurations drawn without replacement from independent categoricals.

    ``log_probs [B, V, N]`` (normalised per variable). Stochastic beam search (Kool, van Hoof and
    Welling 2019): the perturbed log-probability of a partial configuration is the maximum of its
    completions' Gumbel-perturbed log-probabilities; children are drawn conditionally on that
    maximum (:func:`discretegrad.noise.gumbel_with_max`) and the ``k`` largest kept at every
    variable, which gives exactly the Gumbel-top-k sample of the joint (product) distribution.
    Returns the category indices ``[B, k', V]``, in decreasing order of perturbed value. No gradient.
    """
    lp = log_probs.detach()
    b, v, n = lp.shape
    idx = torch.zeros(b, 1, 0, dtype=torch.long, device=lp.device)
    phi = torch.zeros(b, 1, dtype=lp.dtype, device=lp.device)
    top = gumbel((b, 1), dtype=lp.dtype, device=lp.device, generator=generator)
    for j in range(v):
        child = phi.unsqueeze(-1) + lp[:, j].unsqueeze(1)  # [B, m, N]
        perturbed = gumbel_with_max(child, top, generator=generator).flatten(1)
        best = perturbed.topk(min(k, perturbed.shape[1]), -1)
        parent, cat = best.indices // n, best.indices % n
        idx = torch.cat([idx.gather(1, parent.unsqueeze(-1).expand(-1, -1, j)), cat.unsqueeze(-1)], -1)
        phi, top = child.flatten(1).gather(1, best.indices), best.values
    return idx


@functools.lru_cache(maxsize=MAX_SET_SIZE + 1)
def _levels(k: int) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]:
    """For each popcount ``c = k-1..0``: the masks with ``c`` bits, their missing items, and the masks with one of them added."""
    out = []
    for c in range(k - 1, -1, -1):
        masks = [m for m in range(1 << k) if bin(m).count("1") == c]
        items = [[t for t in range(k) if not m >> t & 1] for m in masks]
        succ = [[m | 1 << t for t in row] for m, row in zip(masks, items)]
        out.append((torch.tensor(masks), torch.tensor(items), torch.tensor(succ)))
    return tuple(out)


def set_weights(log_p: torch.Tensor, exhausted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered-set weights of a sample ``S`` without replacement, from its items' log-probabilities.

    ``log_p [B, k]`` (float64). With ``R(C) = log p^{D∖C}(S∖C)``, the probability of drawing the
    rest of ``S`` once ``C ⊆ S`` is drawn (Plackett-Luce from the domain without ``C``), computed for
    every ``C`` by one dynamic program over the ``2^k`` subsets,
    ``R(C) = logsumexp_{t ∈ S∖C} [log p(t) - log(1 - p(C)) + R(C ∪ {t})]``, ``R(S) = 0``, where
    ``1 - p(C)`` is the mass of ``S∖C`` plus that of the unsampled rest ``1 - p(S)`` (zero when
    ``exhausted``), summed in log space (no subtraction but the one for the rest). Returns

    * ``w [B, k]``: ``w_s = p(s) R(S, s) = P(B_1 = s | S)``, ``R(S, s) = p^{D∖s}(S∖s) / p(S)``;
      ``Σ_s w_s = 1``;
    * ``base [B, k, k]``: ``base[s, s] = p(s)`` and ``base[s, s'] = p(s') p^{D∖{s,s'}}(S∖{s,s'}) / p^{D∖s}(S∖s)``,
      so that ``b_s = Σ_{s'} base[s, s'] f(s')`` is the built-in baseline of Kool et al. 2020, Thm. 4.
    """
    b, k = log_p.shape
    dev = log_p.device
    bits = (torch.arange(1 << k, device=dev).unsqueeze(-1) >> torch.arange(k, device=dev)) & 1  # [2^k, k]
    total = torch.logsumexp(log_p, -1).clamp_max(0.0)
    if exhausted:
        rest = torch.full_like(total, -math.inf)
    else:
        rest = torch.where(total > -0.6931, torch.log(-torch.expm1(total)), torch.log1p(-torch.exp(total)))
    outside = torch.where(bits.bool(), -math.inf, log_p.unsqueeze(-2))  # [B, 2^k, k]
    log_left = torch.logsumexp(torch.cat([outside, rest.reshape(b, 1, 1).expand(b, 1 << k, 1)], -1), -1)
    r = torch.zeros(b, 1 << k, dtype=log_p.dtype, device=dev)
    for masks, items, succ in _levels(k):
        masks, items, succ = masks.to(dev), items.to(dev), succ.to(dev)
        step = log_p[:, items] - log_left[:, masks].unsqueeze(-1) + r[:, succ]
        r[:, masks] = torch.logsumexp(step, -1)
    single = 1 << torch.arange(k, device=dev)
    r1 = r[:, single]  # [B, k]: R({s})
    w = torch.softmax(log_p + r1, -1)
    pair = r[:, single.unsqueeze(-1) | single]  # [B, k, k]: R({s, s'})
    base = torch.exp(log_p.unsqueeze(-2) + pair - r1.unsqueeze(-1))
    eye = torch.eye(k, dtype=torch.bool, device=dev)
    base = torch.where(eye, log_p.exp().unsqueeze(-2).expand(b, k, k), base)
    return w, base


@register("unordered_set", distribution="categorical", kind="surrogate", unbiased=True, min_samples=2,
          reference="Kool, van Hoof and Welling 2020, Estimating gradients for discrete random variables by "
                    "sampling without replacement, ICLR (Thm. 4)")
def unordered_set(f: CostFn, params: torch.Tensor, *, distribution: str = "categorical", n_samples: int = 2,
                  generator: torch.Generator | None = None, builtin_baseline: bool = True) -> torch.Tensor:
    """Unordered set estimator: ``k = n_samples`` distinct configurations sampled without replacement.

    Per batch element, ``S`` = a Gumbel-top-k sample of the *joint* distribution of its variables
    (independent categoricals, sampled by stochastic beam search, :func:`beam_sample`, as the
    paper does for multivariate ``z``). With ``w_s = p(s) R(S, s)`` and ``b_s`` from
    :func:`set_weights`::

        value  = Σ_{s∈S} w_s f(s)                    (unbiased for E[f], Thm. 1)
        ĝ      = Σ_{s∈S} w_s (f(s) - b_s) ∇ log p(s)  (Thm. 4; b_s = 0 without builtin_baseline)

    ``b_s = p(s) f(s) + Σ_{s'≠s} p(s') R^{D∖s}(S, s') f(s')``: an estimate of ``E[f]`` whose
    expectation given ``B_1 = s`` is ``E[f]``, so it costs no bias. Unbiased for any ``k >= 2``
    (with or without the baseline); when ``k`` reaches the number ``N^V`` of
    configurations the estimate is exact (``S`` is the whole domain). Variance: lower than RLOO
    with the same ``k`` evaluations when the distribution is peaked (no duplicate samples). Cost:
    ``k`` evaluations of ``f``, one more (without gradient) on the mode to learn the batch shape,
    and a ``2^k k`` dynamic program per batch element (``k <= MAX_SET_SIZE``).
    """
    V.choice("distribution", distribution, ("categorical",))
    if not isinstance(builtin_baseline, bool):
        raise TypeError(f"Expected builtin_baseline to be a bool, but got {builtin_baseline!r}")
    d = setup(f, params, "categorical", n_samples, generator, {}, min_samples=2)
    x = d.x
    n_cat = x.shape[-1]
    with torch.no_grad():
        mode = F.one_hot(x.detach().argmax(-1), n_cat).to(x.dtype).unsqueeze(0)
        batch_ndim = d.family.check_costs(f(mode.to(d.dtype)), 1, d.params).dim() - 1
    var_shape = tuple(d.family.var_shape(d.params))
    batch = var_shape[:batch_ndim]
    n_vars, n_batch = math.prod(var_shape[batch_ndim:]), math.prod(batch)
    domain = n_cat ** n_vars if n_vars * math.log(max(n_cat, 1)) < 60 else math.inf
    k = int(min(d.n, domain))
    if k > MAX_SET_SIZE:
        raise ValueError(f"Expected n_samples <= MAX_SET_SIZE={MAX_SET_SIZE} for the unordered set estimator, "
                         f"but got {d.n}")
    log_probs = torch.log_softmax(x.detach(), -1).reshape(n_batch, n_vars, n_cat)
    idx = beam_sample(log_probs, k, d.generator)  # [B, k, V]
    # Masked (-inf) categories: a batch element with fewer than k configurations of positive
    # probability draws all of them first and then zero-probability ones; those are replaced by its
    # first draw (always positive) and get weight 0, and its (exhausted) set gives the exact sum.
    drawn = log_probs.unsqueeze(1).expand(-1, k, -1, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1).sum(-1)
    positive = torch.isfinite(drawn)  # [B, k]
    idx = torch.where(positive.unsqueeze(-1), idx, idx[:, :1].expand_as(idx))
    z = F.one_hot(idx, n_cat).to(x.dtype).transpose(0, 1).reshape(k, *x.shape)
    costs = d.family.check_costs(f(z.to(d.dtype)), k, d.params)
    logp = d.log_prob(z, batch_ndim, x=d.family.expand(x, k))  # [k, *batch], differentiable
    w, base = set_weights(logp.detach().double().reshape(k, n_batch).T, exhausted=k == domain)
    short = ~positive.all(-1)  # elements with fewer positive configurations than k
    if bool(short.any()):
        p = torch.where(positive, logp.detach().double().reshape(k, n_batch).T.exp(), 0.0)
        w = torch.where(short.unsqueeze(-1), p, w)
        base = torch.where(short[:, None, None], p.unsqueeze(1).expand(-1, k, -1), base)  # b_s = E[f]
    fc = costs.detach().double().reshape(k, n_batch).T
    b = (base @ fc.unsqueeze(-1)).squeeze(-1) if builtin_baseline else torch.zeros_like(fc)
    coef = (w * (fc - b)).T.reshape(k, *batch).to(logp.dtype)
    value = (w.T.reshape(k, *batch).to(costs.dtype) * costs).sum(0)
    return finish(value, (coef * (logp - logp.detach())).sum(0))
