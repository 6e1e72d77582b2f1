"""k-subsets: stochastic argmax and softmax tricks for k-hot vectors (Paulus et al. 2020).

Notation: ``θ`` = logits ``[..., n]``, ``G`` i.i.d. standard Gumbel, ``U = θ + G`` (perturbed
utilities), ``t`` = ``tau``. The *stochastic argmax trick* (SMT) sample is the k-hot vector
``X = argmax_{|S| = k} Σ_{i∈S} U_i`` = top-k of ``U``; its law is *Gumbel-top-k*, i.e. sampling
``k`` items without replacement from ``softmax(θ)`` (Plackett-Luce set probabilities), not the
Gibbs distribution over subsets. A *stochastic softmax trick* (SST) relaxes it to
``X_t = argmax_{x ∈ conv 𝒳} <U, x> - t f(x)`` for a strongly convex ``f``:

* ``relaxation="entropy"``: ``f`` = the exponential-family entropy, for which ``X_t`` is the
  vector of marginals ``P(i ∈ S)`` of the Gibbs distribution ``p(S) ∝ exp(Σ_{i∈S} U_i / t)`` over
  ``|S| = k``, computed by a log-space forward-backward dynamic program over (item, count)
  and differentiated exactly by autograd (the SST authors used finite differences);
* ``relaxation="binary_entropy"``: ``f(x) = -Σ H_b(x_i)``, for which ``X_t = σ(U/t + ν)`` with the
  scalar ``ν`` that makes ``Σ X_t = k`` (the limited-multilabel projection of Amos et al. 2019):
  bisection for ``ν``, closed-form backward;
* ``relaxation="corr"``: *correlated top-k*, see :func:`topk`.

In ``hard=True`` mode the forward value is the exact SMT sample and the backward pass is the
SST's (straight-through: ``X + X_t - sg(X_t)``); ``hard=False`` returns ``X_t``. Both are
biased for ``∇ E[f(X)]``; smaller ``t`` lowers the bias of the relaxed objective and raises
the variance. ``l2x`` and ``softsub`` are the relaxed baselines of the SST paper's L2X table.

Graph baseline "|V|-1 edges" (SST paper, NRI): top-k over the ``n(n-1)/2`` undirected edge
logits with ``k = n - 1``, then mirrored into a symmetric adjacency::

    i, j = torch.triu_indices(n, n, 1)
    x = dg.subsets.topk(edge_logits[..., i, j], n - 1, tau=tau)  # [..., n(n-1)/2], n-1 ones
    adj = torch.zeros_like(edge_logits)
    adj[..., i, j] = x  # differentiable index assignment
    adj = adj + adj.transpose(-1, -2)
"""

from __future__ import annotations

import math

import torch

from torch.distributions import constraints

from discretegrad import structures as S
from discretegrad import _validation as V
from discretegrad import score_function
from discretegrad._autograd import compute_dtype, straight_through
from discretegrad.family import Example, Family, Option, Param
from discretegrad.noise import gumbel, gumbel_like
from discretegrad.registry import register, register_family
from discretegrad.structures import plackett_luce
from discretegrad.structures.topk import k_hot

__all__ = ["topk", "l2x", "softsub", "gumbel_topk_log_prob", "MAX_LAW_ORDERINGS", "MAX_SUBSETS", "check_k", "check_logits"]

_SST = "Paulus et al. 2020, Gradient estimation with stochastic softmax tricks"
RELAXATIONS = ("entropy", "binary_entropy", "corr")

MAX_SUBSETS = 1 << 16
"""Largest number ``C(n, k)`` of k-subsets :func:`discretegrad.exact.marginals` enumerates."""

MAX_LAW_ORDERINGS = 5040
"""Largest ``k!`` for which :func:`gumbel_topk_log_prob` sums over the orderings of a set (k <= 7)."""


# ----------------------------------------------------------------------------- checks

def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Item logits ``[..., n]``: a float tensor with ``n >= 1``; when validating, finite or ``-inf``
    (a masked item, never selected), with a finite entry in every row (:func:`check_k` asks for ``k``)."""
    t = V.float_tensor(name, logits, min_ndim=1)
    if t.shape[-1] < 1:
        raise ValueError(f"Expected {name} to have at least one item (last dim >= 1), but got shape {tuple(t.shape)}")
    V.masked_logits(name, t)
    return t


def check_k(k: object, n: int, logits: torch.Tensor | None = None) -> int:
    """``k`` must be an integer-like value in ``[1, n]`` (returned as an int); with ``logits``, when
    validating, every row must also have at least ``k`` unmasked (not ``-inf``) items."""
    k = V.integer("k", k, 1, n, hint="the number of items")
    if logits is not None and k > 1 and V.checking() and logits.numel() and bool(logits.detach().amin() == -math.inf):
        fewest = int(torch.isfinite(logits.detach()).sum(-1).min())  # only when something is masked
        if fewest < k:
            raise ValueError(f"Expected logits to have at least k={k} unmasked (not -inf) items in every row, "
                             f"but found a row with {fewest}")
    return k


def _prepare(logits: object, k: object, tau: object, generator: object):
    t = check_logits(logits)
    k = check_k(k, t.shape[-1], t)
    tau = V.positive_float("tau", tau)
    generator = V.generator_for("generator", generator, t)
    return t.to(compute_dtype(t.dtype)), k, tau, generator


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ----------------------------------------------------------------------------- ops

def topk(
    logits: torch.Tensor,
    k: int,
    *,
    tau: float = 1.0,
    relaxation: str = "entropy",
    hard: bool = True,
    pair_logits: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """k-hot SMT sample with an SST gradient (``hard=True``) or the relaxed SST sample.

    Args:
        logits: ``θ [..., n]``; batched over leading dims.
        k: subset size, ``1 <= k <= n``.
        tau: temperature ``t > 0`` of the relaxation (not of the forward sample).
        relaxation: ``"entropy"`` (Gibbs marginals by forward-backward), ``"binary_entropy"``
            (``σ(U/t + ν)``, ``Σ = k``) or ``"corr"`` (correlated top-k).
        hard: forward the exact SMT sample (k-hot) with the SST gradient; else return ``X_t``.
        pair_logits: ``"corr"`` only: pairwise logits ``φ [..., n-1]`` of adjacent items.
        generator: ``torch.Generator`` for the Gumbel noise.

    Correlated top-k (SST paper, L2X experiment): the structure is ``(x, y)`` with ``x`` k-hot
    and ``y_i = x_i x_{i+1}`` (adjacent pairs), perturbed utilities ``U = θ + G`` for items and
    ``V = φ + G'`` for pairs. SMT: ``x = argmax_{Σx=k} <U, x> + <V, y(x)>`` (exact max-plus chain DP
    over (item, count, state)); SST with the exponential-family entropy: ``X_t`` = item
    marginals of ``p(x) ∝ exp((<U, x> + <V, y(x)>)/t)`` by the forward-backward version of the
    same DP. Positive ``φ`` favour contiguous selections. The hard sample's law is *not*
    Gumbel-top-k, which is why it is not registered under the ``"topk"`` distribution.

    Returns:
        Tensor of ``logits``' shape and dtype: k-hot (hard) or in ``[0, 1]`` summing to ``k``.

    Reference: Paulus et al. 2020 (SST), Sec. 3-4 and the L2X experiment; Amos et al. 2019 (LML).
    """
    x, k, tau, generator = _prepare(logits, k, tau, generator)
    relaxation = V.choice("relaxation", relaxation, RELAXATIONS)
    if not isinstance(hard, bool):
        raise TypeError(f"Expected hard to be a bool, but got {type(hard).__name__}")
    n = x.shape[-1]
    if relaxation == "corr":
        phi = V.float_tensor("pair_logits", pair_logits, min_ndim=1) if pair_logits is not None else None
        if phi is None or tuple(phi.shape) != (*x.shape[:-1], n - 1):
            got = None if pair_logits is None else tuple(pair_logits.shape)
            raise ValueError(
                f"Expected pair_logits of shape {(*x.shape[:-1], n - 1)} for relaxation='corr', but got {got}")
        V.finite("pair_logits", phi)
        u = x + gumbel_like(x, generator=generator)
        phi = phi.to(x.dtype)
        v = phi + gumbel_like(phi, generator=generator)
        if hard and not _needs_grad(u, v):  # evaluation: the relaxation would only be discarded
            return S.corr_topk_hard(u, v, k).to(logits.dtype)
        soft = S.corr_topk_marginals(u / tau, v / tau, k)
        out = straight_through(S.corr_topk_hard(u, v, k), soft) if hard else soft
        return out.to(logits.dtype)
    if pair_logits is not None:
        raise ValueError(f"Expected pair_logits only with relaxation='corr', but got relaxation={relaxation!r}")
    u = x + gumbel_like(x, generator=generator)
    if hard and not _needs_grad(u):  # evaluation: the relaxation would only be discarded
        return S.topk_hard(u, k).to(logits.dtype)
    w = u / tau
    # one topk for the hard sample and the scan's count centres (w = u / tau has the same order)
    index = u.detach().topk(k, -1).indices if hard or relaxation == "entropy" else None
    soft = S.topk_marginals(w, k, index) if relaxation == "entropy" else S.lml(w, k)
    out = straight_through(k_hot(index, u), soft) if hard else soft
    return out.to(logits.dtype)


def l2x(logits: torch.Tensor, k: int, *, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """L2X relaxed subset: element-wise max of ``k`` independent Gumbel-softmax vectors.

    ``X_t = max_{r=1..k} softmax((θ + G_r)/t)`` (Chen et al. 2018, "Learning to explain"). Relaxed
    (not k-hot); as ``t → 0`` it tends to the union of ``k`` categorical draws *with* replacement,
    so it may select fewer than ``k`` items. At test time L2X uses the exact top-k of ``θ``.
    """
    x, k, tau, generator = _prepare(logits, k, tau, generator)
    g = gumbel((k, *x.shape), dtype=x.dtype, device=x.device, generator=generator)
    return torch.softmax((x + g) / tau, -1).amax(0).to(logits.dtype)


def softsub(logits: torch.Tensor, k: int, *, tau: float = 1.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """SoftSub relaxed top-k: ``k`` successive softmaxes of perturbed keys with soft masking.

    Xie & Ermon 2019: ``a¹ = θ + G``; for ``j = 1..k``: ``p_j = softmax(a^j / t)``,
    ``a^{j+1} = a^j + log(1 - p_j)``; ``X_t = Σ_j p_j``. Relaxed: ``X_t ≥ 0`` sums to ``k``; as
    ``t → 0`` it tends to the Gumbel-top-k sample.

    ``log(1 - p_j)`` is computed from the log-softmax, never as ``1 - p``: for the item with the
    largest key it is the log of the other items' total probability,
    ``logsumexp_{i ≠ m}(a_i/t) - logsumexp_i(a_i/t)`` (exact however close ``p`` is to 1, where
    ``1 - p`` rounds to 0), and ``log1p(-p)`` for the others (``p ≤ 1/2`` there). So a saturated
    item is masked by exactly as much as its probability says, and the next softmax picks another:
    keys ``[0, 100]`` at ``t = 0.1`` give ``[1, 1]``, not ``[0, 2]``.

    Values above 1 are a property of the method, not rounding: the soft mask removes an item only
    partly, so it can be drawn again. At moderate ``t`` an entry exceeds 1 whenever it keeps a large
    key after masking, e.g. keys ``[0, 1]``, ``k = 2``, ``t = 1``: ``p_1 = (0.269, 0.731)``, the masked
    keys are equal, ``p_2 = (0.5, 0.5)``, so ``X_t = (0.769, 1.231)``. Each entry is at most ``k``;
    the output is in the convex hull of the k-subsets only in the limit ``t → 0``.
    """
    x, k, tau, generator = _prepare(logits, k, tau, generator)
    a = x + gumbel_like(x, generator=generator)
    out = torch.zeros_like(a)
    for _ in range(k):
        log_p = torch.log_softmax(a / tau, -1)
        out = out + log_p.exp()
        a = a + _log1m_softmax(log_p)
    return out.to(logits.dtype)


def _log1m_softmax(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - p)`` for ``p = exp(log_p)`` a softmax over the last dim, accurate for every entry.

    The largest entry (the only one that can exceed 1/2) gets ``log Σ_{i ≠ m} p_i`` by a logsumexp over
    the others; the rest ``log1p(-p)``. A single item (``p = 1``) gets the finite ``log`` of the
    smallest normal number.
    """
    n = log_p.shape[-1]
    top = torch.arange(n, device=log_p.device) == log_p.detach().argmax(-1, keepdim=True)  # one entry (vmap-safe)
    if n == 1:
        return torch.full_like(log_p, math.log(torch.finfo(log_p.dtype).tiny)) + 0.0 * log_p
    rest = torch.logsumexp(log_p.masked_fill(top, -math.inf), -1, keepdim=True)
    # the other branch's input is masked too, so neither branch yields inf (or a NaN gradient)
    small = torch.log1p(-log_p.masked_fill(top, -math.inf).exp())
    return torch.where(top, rest, small)


# ----------------------------------------------------------------------------- the Gumbel-top-k law

def gumbel_topk_log_prob(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``log P(top-k of θ + G = S)`` for k-hot ``z`` (Gumbel-top-k = sampling without replacement).

    ``P(S) = Σ_{orderings σ of S} Π_j exp(θ_{σ_j}) / Σ_{i ∉ {σ_1..σ_{j-1}}} exp(θ_i)`` (Plackett-Luce),
    summed in log space over the ``k!`` orderings (``k! <= MAX_LAW_ORDERINGS``). Broadcasts
    ``logits [..., n]`` against ``z [..., n]``; returns ``z``'s shape without the last dim.
    """
    return plackett_luce.subset_log_prob(logits, z, max_orderings=MAX_LAW_ORDERINGS)


def _support(logits: torch.Tensor, *, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.shape[-1]
    k = check_k(k, n)
    atoms = S.all_ksubsets(n, k, dtype=logits.dtype, device=logits.device)
    return atoms, gumbel_topk_log_prob(logits.unsqueeze(-2), atoms)


def _sample(logits: torch.Tensor, generator: torch.Generator | None, *, k: int) -> torch.Tensor:
    k = check_k(k, logits.shape[-1])
    x = logits.detach().to(compute_dtype(logits.dtype))
    return S.topk_hard(x + gumbel_like(x, generator=generator), k).to(logits.dtype)


def _log_prob(logits: torch.Tensor, z: torch.Tensor, *, k: int) -> torch.Tensor:
    check_k(k, logits.shape[-1])
    return gumbel_topk_log_prob(logits, z)


def _mean(logits: torch.Tensor, *, k: int) -> torch.Tensor:
    atoms, log_table = _support(logits, k=k)
    return log_table.exp() @ atoms


def _gibbs(weights: torch.Tensor, *, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every k-subset and its score ``<weights, x>`` (for :func:`discretegrad.exact.marginals`)."""
    n = weights.shape[-1]
    if math.comb(n, k) > MAX_SUBSETS:
        raise ValueError(f"Expected at most MAX_SUBSETS={MAX_SUBSETS} k-subsets, but got C({n}, {k}) = {math.comb(n, k)}")
    atoms = S.all_ksubsets(n, k, dtype=weights.dtype, device=weights.device)
    masked = torch.isneginf(weights)  # a subset with a masked item scores -inf (never -inf * 0 = NaN)
    score = torch.where(masked, torch.zeros_like(weights), weights) @ atoms.T
    return atoms, score.masked_fill((masked.to(atoms.dtype) @ atoms.T) > 0, -math.inf)


def _example() -> Example:
    g = torch.Generator().manual_seed(3)
    n, k = 6, 3
    theta = torch.randn(1, n, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return (z @ c - 1.0) ** 2 + torch.sin(2 * z[..., 0] * z[..., 1])

    return Example(f"k-subsets, n = {n}, k = {k} (Gumbel-top-k law), f(z) = (c . z - 1)^2 + sin(2 z_0 z_1)",
                   theta, f, {"k": k})


topk_family = register_family(
    Family(
        name="topk",
        params=(Param("logits", constraints.real_vector, check_logits, event_ndim=1),),
        event_ndim=1,
        sample_fn=_sample,
        log_prob_fn=_log_prob,
        support_fn=_support,
        mean_fn=_mean,
        options=(Option("k", lambda k, logits: check_k(k, logits.shape[-1], logits)),),
        gibbs=_gibbs,
        example=_example,
        support_size_fn=lambda logits, *, k: math.comb(logits.shape[-1], k),
    )
)
# The Gumbel-top-k law is Plackett-Luce, so the score-function estimators apply (MuProp is left
# out: its linearisation point, the mean, is computed by enumerating every k-subset).
score_function.register_for("topk", "reinforce", "rloo")


# ----------------------------------------------------------------------------- registry entries

@register("entropy", distribution="topk", reference=_SST + ", Sec. 4 (exponential-family entropy)")
def _entropy(logits: torch.Tensor, *, k: int, tau: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """SMT top-k of θ+G forward, SST gradient through the Gibbs marginals of exp(<U, x>/t).

    ``topk(logits, k, tau=tau, relaxation="entropy", hard=True)``. Biased; exact Jacobian of
    the relaxation (covariance of the subset indicators / t) by autograd through the DP.
    """
    return topk(logits, k, tau=tau, relaxation="entropy", hard=True, generator=generator)


@register("entropy_relaxed", distribution="topk", relaxed=True, reference=_SST + ", Sec. 4")
def _entropy_relaxed(logits: torch.Tensor, *, k: int, tau: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed SST sample: Gibbs marginals of exp(<θ+G, x>/t) over k-subsets (not k-hot).

    ``topk(logits, k, tau=tau, relaxation="entropy", hard=False)``; tends to the SMT sample as t → 0.
    """
    return topk(logits, k, tau=tau, relaxation="entropy", hard=False, generator=generator)


@register("binary_entropy", distribution="topk", reference=_SST + "; Amos et al. 2019 (LML)")
def _binary_entropy(logits: torch.Tensor, *, k: int, tau: float = 1.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """SMT top-k forward, SST gradient through σ((θ+G)/t + ν) with Σ = k (LML projection).

    ``topk(logits, k, tau=tau, relaxation="binary_entropy", hard=True)``. Biased.
    """
    return topk(logits, k, tau=tau, relaxation="binary_entropy", hard=True, generator=generator)


@register("binary_entropy_relaxed", distribution="topk", relaxed=True,
          reference=_SST + "; Amos et al. 2019 (LML)")
def _binary_entropy_relaxed(logits: torch.Tensor, *, k: int, tau: float = 1.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed SST sample σ((θ+G)/t + ν) with Σ = k (not k-hot).

    ``topk(logits, k, tau=tau, relaxation="binary_entropy", hard=False)``.
    """
    return topk(logits, k, tau=tau, relaxation="binary_entropy", hard=False, generator=generator)


@register("l2x", distribution="topk", relaxed=True,
          reference="Chen et al. 2018, Learning to explain; SST Table (L2X)")
def _l2x(logits: torch.Tensor, *, k: int, tau: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """L2X relaxation: element-wise max of k Gumbel-softmax draws (not k-hot).

    ``l2x(logits, k, tau=tau)``. Its t → 0 limit is a union of k draws *with* replacement, so
    even the limit is not the Gumbel-top-k law.
    """
    return l2x(logits, k, tau=tau, generator=generator)


@register("softsub", distribution="topk", relaxed=True,
          reference="Xie & Ermon 2019, Reparameterizable subset sampling")
def _softsub(logits: torch.Tensor, *, k: int, tau: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """SoftSub relaxation: k successive relaxed draws with soft masking (not k-hot).

    ``softsub(logits, k, tau=tau)``; its t → 0 limit is the Gumbel-top-k sample.
    """
    return softsub(logits, k, tau=tau, generator=generator)
