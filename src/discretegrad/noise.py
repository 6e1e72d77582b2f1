"""Noise primitives: exponential, Gumbel, logistic, their conditional (truncated) versions, Gamma and
the sum-of-Gamma noise of I-MLE.

All noise is drawn with an explicit ``generator`` (``None`` uses torch's default), created
directly on the requested device and dtype, and computed in log space: no ``log(0)``
(exponential draws are clamped at the dtype's smallest normal number), so Gumbel noise is
always finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from discretegrad._autograd import softmax
from discretegrad._validation import positive_float, positive_int

__all__ = ["exponential", "gumbel", "gumbel_like", "gumbel_perturb", "categorical_inverse_cdf", "inverse_cdf_parts",
           "conditional_gumbel_offweights", "log_uniform_into", "symmetric_gumbel_like", "gumbel_max", "conditional_gumbel", "logistic",
           "conditional_logistic", "gumbel_with_max", "gamma", "sum_of_gamma"]


def exponential(
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Exp(1) draws ``-log1p(-U)``, ``U ~ U[0, 1)``, strictly positive (clamped at ``finfo.tiny``).

    Inversion of uniform draws (several times faster than ``Tensor.exponential_`` on CPU);
    ``1 - U`` is in ``(0, 1]``, so the log is finite.
    """
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return torch.log1p(u.neg_()).neg_().clamp_min_(torch.finfo(dtype).tiny)


def gumbel(
    shape: torch.Size | tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel draws ``-log E`` with ``E ~ Exp(1)``; always finite."""
    return exponential(shape, dtype=dtype, device=device, generator=generator).log_().neg_()


def gumbel_like(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel draws of ``x``'s shape, dtype and device (no gradient)."""
    return gumbel(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def symmetric_gumbel_like(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Gumbel per unordered pair ``{i, j}`` of the last two (square) dims, mirrored; zero diagonal.

    Draws a full ``x``-shaped block and keeps its strict upper triangle (so the draw consumes the
    generator exactly as :func:`gumbel_like` does).
    """
    g = torch.triu(gumbel_like(x, generator=generator), 1)
    return g + g.transpose(-1, -2)


def gumbel_max(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbed logits ``logits + G`` and the exact categorical sample ``argmax(logits + G)``.

    ``argmax`` of Gumbel-perturbed logits has law ``Categorical(softmax(logits))`` (the
    Gumbel-max trick). Returns ``(perturbed, index)``; ``perturbed`` is differentiable in
    ``logits``, ``index`` has the batch shape (last dim removed).
    """
    g = gumbel(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    perturbed = logits + g
    return perturbed, perturbed.detach().argmax(-1)


def conditional_gumbel(
    logits: torch.Tensor,
    index: torch.Tensor,
    mc_samples: int,
    *,
    generator: torch.Generator | None = None,
    reparameterized: bool = False,
) -> torch.Tensor:
    """Perturbed logits ``logits + G`` drawn conditionally on ``argmax(logits + G) == index``.

    Returns ``mc_samples`` draws of shape ``[mc_samples, *logits.shape]``: no gradient, or, with
    ``reparameterized=True``, differentiable in ``logits`` for fixed noise (REBAR/RELAX).
    Log-space construction (Maddison et al. 2014, "A* sampling"): the maximum is
    ``T = logsumexp(logits) - log E_0`` and every other coordinate is a Gumbel with location
    ``logits_k`` truncated below ``T``: ``-logaddexp(-T, log E_k - logits_k)``.
    Stable for ``|logits|`` up to ``1e4`` in float32.
    """
    mc_samples = positive_int("mc_samples", mc_samples)
    if not reparameterized:
        logits = logits.detach()
    shape = (mc_samples, *logits.shape)
    log_e_top = exponential((*shape[:-1], 1), dtype=logits.dtype, device=logits.device, generator=generator).log_()
    log_e = exponential(shape, dtype=logits.dtype, device=logits.device, generator=generator).log_()
    top = torch.logsumexp(logits, -1, keepdim=True) - log_e_top  # [K, ..., 1]
    others = -torch.logaddexp(-top, log_e - logits)
    is_top = index.unsqueeze(-1) == torch.arange(logits.shape[-1], device=logits.device)  # one-hot, vmap-safe
    return torch.where(is_top, top, others)


def logistic(shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard logistic draws ``log E₁ - log E₂`` (difference of two Gumbels), always finite."""
    log_e = exponential((2, *shape), dtype=dtype, device=device, generator=generator).log_()
    return log_e[0] - log_e[1]


def conditional_logistic(logits: torch.Tensor, hard: torch.Tensor, *,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``θ + L`` drawn conditionally on ``1[θ + L > 0] = hard``, differentiable in ``θ`` (REBAR).

    With ``θ + L = logit(u) + θ`` and ``v ~ U(0, 1)``: ``u = 1 - p + v p`` when ``hard = 1`` and
    ``u = v (1 - p)`` when ``hard = 0`` (``p = σ(θ)``). In log space, with
    ``log p = -softplus(-θ)`` and ``log(1-p) = -softplus(θ)``::

        hard = 1:  softplus(θ) - log(1-v) + logaddexp(log(1-p), log p + log v)   (> 0)
        hard = 0:  log v - softplus(-θ) - logaddexp(log p, log(1-p) + log(1-v))  (< 0)

    ``v = E₁/(E₁+E₂)`` from exponential draws, so no ``log 0``.
    """
    log_e = exponential((2, *logits.shape), dtype=logits.dtype, device=logits.device,
                        generator=generator).log_()
    log_norm = torch.logaddexp(log_e[0], log_e[1])
    log_v, log_1mv = log_e[0] - log_norm, log_e[1] - log_norm
    log_p, log_q = -F.softplus(-logits), -F.softplus(logits)
    one = -log_q - log_1mv + torch.logaddexp(log_q, log_p + log_v)
    zero = log_v + log_p - torch.logaddexp(log_p, log_q + log_1mv)
    return torch.where(hard.bool(), one, zero)


def gumbel_with_max(locations: torch.Tensor, top: torch.Tensor, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbels with ``locations [..., n]`` drawn conditionally on their maximum being ``top [...]``.

    Draw ``G_i = φ_i + Gumbel`` and ``Z = max G``, then shift to the maximum ``T``:
    ``G̃_i = -log(e^{-T} - e^{-Z} + e^{-G_i})``, computed as ``T - softplus(T - G_i + log(1 - e^{G_i - Z}))``
    (no cancellation; the argmax gets exactly ``T``). The construction of stochastic beam search
    (Kool, van Hoof and Welling 2019, "Stochastic beams and where to find them", App. B). No gradient.
    """
    g = locations.detach() + gumbel_like(locations.detach(), generator=generator)
    z = g.max(-1, keepdim=True).values
    d = g - z  # <= 0; 0 at the argmax
    log1mexp = torch.where(d > -0.6931, torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))
    t = top.detach().unsqueeze(-1)
    return t - F.softplus(t - g + log1mexp)


def gamma(concentration: float, shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype = torch.float32,
          device: torch.device | str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gamma(``concentration``, scale 1) draws with an explicit generator (``torch._standard_gamma`` takes none).

    Marsaglia and Tsang (2000), "A simple method for generating gamma variables": for ``a >= 1``,
    ``d = a - 1/3``, ``c = 1/sqrt(9d)``, ``x ~ N(0, 1)``, ``v = (1 + c x)^3``; accept ``d v`` when
    ``v > 0`` and ``log U < x²/2 + d - d v + d log v`` (acceptance above 95 %; rejected entries are
    redrawn, vectorised). For ``a < 1``: ``Gamma(a) = Gamma(a + 1) · U^{1/a}``, the power taken in
    log space (it may underflow to 0, a valid value). Computed in float64, returned in ``dtype``.
    Under ``torch.compile`` (where no generator can be passed) it is ``torch._standard_gamma``.
    """
    a = positive_float("concentration", concentration)
    if torch.compiler.is_compiling():  # the rejection loop is data-dependent; under compile there is no generator
        return torch._standard_gamma(torch.full(shape, a, dtype=torch.float64, device=device)).to(dtype)
    boost = a < 1
    d = (a + 1 if boost else a) - 1 / 3
    c = 1 / (9 * d) ** 0.5
    out = torch.empty(shape, dtype=torch.float64, device=device)
    todo = torch.ones(shape, dtype=torch.bool, device=device)
    while bool(todo.any()):
        m = int(todo.sum())
        x = torch.randn(m, dtype=torch.float64, device=device, generator=generator)
        u = torch.rand(m, dtype=torch.float64, device=device, generator=generator)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        idx = todo.nonzero(as_tuple=True)
        keep = tuple(i[ok] for i in idx)
        out[keep] = (d * v)[ok]
        todo[keep] = False
    if boost:
        u = torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
        out = out * torch.exp(torch.log(u) / a)
    return out.to(dtype)


def sum_of_gamma(k: int, shape: torch.Size | tuple[int, ...], *, terms: int = 10, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum-of-Gamma noise for k-subsets (Niepert, Minervini and Franceschi 2021, I-MLE, Sec. 5 / Prop. 3).

    ``ε = (1/k) (Σ_{i=1}^{s} Gamma(1/k, scale k/i) - log s)`` with ``s = terms``: the sum of ``k``
    independent copies is ``Σ_{i≤s} E_i / i - log s`` (``E_i ~ Exp(1)``), the series of a standard
    Gumbel truncated after ``s`` terms, so the score of any k-subset perturbed by this noise is
    (nearly) Gumbel-perturbed.
    """
    k = positive_int("k", k)
    terms = positive_int("terms", terms)
    draws = gamma(1.0 / k, (terms, *shape), dtype=torch.float64, device=device, generator=generator)
    scale = k / torch.arange(1, terms + 1, dtype=torch.float64, device=device)
    total = (draws * scale.reshape(terms, *([1] * len(tuple(shape))))).sum(0)
    return ((total - math.log(terms)) / k).to(dtype)


def gumbel_perturb(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``logits + G`` (no gradient) with ``G`` exactly :func:`gumbel`'s draw for the same generator state,
    computed as ``logits - log E`` on one buffer (one pass fewer than drawing ``G`` and adding)."""
    x = logits.detach()
    log_e = exponential(x.shape, dtype=x.dtype, device=x.device, generator=generator).log_()
    return torch.sub(x, log_e)


def conditional_gumbel_offweights(logits: torch.Tensor, index: torch.Tensor, mc_samples: int, *, tau: float = 1.0,
                                  generator: torch.Generator | None = None,
                                  out: torch.Tensor | None = None) -> torch.Tensor:
    """The GR-MCK weights ``exp((z - T)/τ)`` of ``mc_samples`` conditional Gumbel draws ``z`` given
    ``argmax z = index`` (``T`` = the maximum; ``softmax(z/τ)`` is their normalisation), **laid out
    last** (shape ``[..., N, mc_samples]``) and **0 at** ``index``, where the weight is 1: ``softmax(z_k/τ)``
    is ``w_k + e_D`` normalised. No gradient.

    From :func:`conditional_gumbel`'s ``z_j = -logaddexp(-T, log E_j - θ_j)``, ``T = logsumexp θ - log E_0``:
    ``z_j - T = log σ(θ_j - logsumexp θ + log E_0 - log E_j)`` for ``j ≠ D``, with the draws ``E_0``
    (``[..., 1, K]``, drawn first) and ``E_j`` (``[..., N, K]``, every entry its own number, so the K
    draws of a row are i.i.d.). For ``τ <= 1`` as ``(π_j / (π_j + E_j / E_0))^{1/τ}``, with no logarithm
    but ``E_j = -log U_j`` (:func:`log_uniform_into`: from 31 random bits per draw in float32), on the draws' own buffer (``tiny`` added to ``π_j`` in the denominator
    keeps a masked category at 0 when ``U_j = 0``, and changes a weight by a relative ``tiny / π_j`` at
    most: below float precision for ``π_j > 1e-30``); for ``τ > 1`` in log space (a weight that
    underflows is not lost when raised to ``1/τ < 1``). The same law as :func:`conditional_gumbel`,
    other positions of the random numbers: with the K draws last, every pass over the ``N x K`` buffer
    runs along the contiguous ``K`` (``docs/performance.md``). ``out``: a contiguous buffer of at least
    ``logits.numel() * mc_samples`` elements in the logits' dtype, reused for the draws (``τ <= 1``, not
    under ``torch.func`` transforms), so that repeated calls allocate nothing of that size."""
    mc_samples = positive_int("mc_samples", mc_samples)
    x = logits.detach()
    off = index == torch.arange(x.shape[-1], device=x.device)  # == has a vmap rule, scatter_ has none
    shape = (*x.shape, mc_samples)
    inv_e_top = exponential((*x.shape[:-1], 1, mc_samples), dtype=x.dtype, device=x.device,
                            generator=generator).reciprocal_()
    if tau > 1.0:
        log_p = torch.log_softmax(x, -1).masked_fill(off, -math.inf).unsqueeze(-1)
        log_e = exponential(shape, dtype=x.dtype, device=x.device, generator=generator).log_()
        a = log_p - inv_e_top.log() - log_e  # out of place: under vmap(randomness="same") the draws are unbatched
        return F.logsigmoid(a).div_(tau).exp_()
    p = softmax(x).masked_fill(off, 0.0).unsqueeze(-1)
    if out is None or torch._C._are_functorch_transforms_active():
        neg_e = torch.rand(shape, dtype=x.dtype, device=x.device, generator=generator).neg_().log1p_()
    else:
        neg_e = log_uniform_into(out[:math.prod(shape)].view(shape), generator)
    if torch._C._are_functorch_transforms_active():
        w = p / torch.addcmul(p + torch.finfo(x.dtype).tiny, neg_e, inv_e_top, value=-1.0)
    else:
        w = torch.div(p, torch.addcmul(p + torch.finfo(x.dtype).tiny, neg_e, inv_e_top, value=-1.0, out=neg_e),
                      out=neg_e)
    return w if tau == 1.0 else w.pow_(1.0 / tau)


LOG_INT31 = 31 * math.log(2.0)
"""``log 2^31``: :func:`log_uniform_into` draws ``U = i / 2^31`` from 31 random bits ``i``."""


def log_uniform_into(buf: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``log U`` in place in ``buf`` (``U ~ U[0, 1)``; ``-E``, ``E ~ Exp(1)``, where ``-inf`` stands for
    ``E = ∞``), the cheapest way torch offers on the CPU. For a float32 ``buf`` (eager, not compiling),
    ``U = i / 2^31`` from 31 random bits ``i`` drawn into the buffer itself (an int32 view: ``random_``
    fills it faster than ``rand`` makes floats) and ``log i - 31 log 2`` (``torch.log`` reads the
    integers and writes the floats in place): about 0.55 against 0.83 ms for 262,144 numbers on one
    thread (``docs/performance.md``). ``i = 0`` (probability ``2^-31``) gives ``-inf``, i.e. ``E = ∞``,
    which carries the Exp(1) tail beyond ``31 log 2`` (the same probability, ``2^-31``); the grid of ``U``
    is finer than float32 ``rand``'s ``2^-24``. Under ``torch.compile`` (dynamo cannot trace ``random_``)
    ``torch.randint(0, 2**31)``: the same law, other numbers than eager for a generator state, written to a
    new tensor (not ``buf``): use the returned tensor. Other dtypes: ``log1p(-rand)`` into ``buf`` (the same
    law; finite: ``1 - U`` is in ``(0, 1]``)."""
    if buf.dtype != torch.float32:
        return torch.rand(buf.shape, generator=generator, out=buf).neg_().log1p_()
    if torch.compiler.is_compiling():  # dynamo cannot trace random_: the same law, other numbers than eager
        bits = torch.randint(0, 2**31, buf.shape, dtype=torch.int32, device=buf.device, generator=generator)
        return torch.log(bits) - LOG_INT31
    bits = buf.view(torch.int32).random_(generator=generator)  # [0, 2^31): random_() (full range) is
    return torch.log(bits, out=buf).sub_(LOG_INT31)  # twice as fast as random_(0, 2**31) or randint


def categorical_inverse_cdf(logits: torch.Tensor, *, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, probs)``: a sample ``D ~ Categorical(softmax(logits))`` over the last dim (``[..., 1]``)
    by inversion of its distribution function, with **one uniform per row** (not one Gumbel per
    entry), and ``probs = softmax(logits)`` computed on the way (no gradient).

    With the running sums ``c_j = p_0 + ... + p_j``, ``D`` is the number of ``c_j <= U c_{N-1}``,
    ``U ~ U[0, 1)``: category ``j`` is drawn iff ``c_{j-1} <= U c_{N-1} < c_j``, with probability
    ``p_j / c_{N-1}`` (``c_{N-1}`` is 1 up to rounding and is used as it is, so the rounding of the
    normalisation does not bias the law). A ``-inf`` logit has ``p_j = 0`` and is never drawn (its
    interval is empty), and ``U c_{N-1} < c_{N-1}`` in round-to-nearest (``U <= 1 - ε/2``), so ``D`` is
    always a category of positive probability. Rounding: the running sums (and ``U``) are in float64
    whatever the logits' dtype (float32 on MPS, which has no float64), so an interval's width is off by
    about ``1e-16 / p_j`` relatively; in float32 a category with ``p_j`` near ``1e-7`` would be
    distorted by tens of percent, and in bfloat16 whole categories of a row of 300 were never drawn. Cost:
    one softmax, one ``cumsum`` and a binary search per row, against ``rand``, two logarithms and a
    ``max`` over every entry for Gumbel-max; the same law, other random numbers for the same
    generator state. A row with NaN, ``+inf`` or no finite entry gives NaN probabilities (check the
    values first, or see :func:`inverse_cdf_parts`)."""
    index, probs, _ = inverse_cdf_parts(logits, generator=generator)
    return index, probs


def inverse_cdf_parts(logits: torch.Tensor, *, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(index, probs, total)`` of :func:`categorical_inverse_cdf`, with ``total = c_{N-1}`` (``[..., 1]``):
    1 up to rounding for a valid row, NaN for a row with NaN, ``+inf`` or no finite entry (so it is
    also the value check)."""
    x = logits.detach()
    probs = softmax(x)
    # running sums in float64 (float32 where the device has no float64). Measured on the exact interval
    # widths: for a row of 1000 N(0, 9) logits the worst category's probability is off by a factor 7.5
    # with float32 sums and by 1e-8 relatively with float64 ones; bfloat16 sums never draw some
    # categories of a uniform row of 300 (tests/test_fused.py)
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    cdf = probs.to(acc).cumsum(-1)
    total = cdf[..., -1:]
    # out of place: under vmap(randomness="same") the draw is unbatched, the sums batched
    u = torch.rand(total.shape, dtype=acc, device=x.device, generator=generator) * total
    if torch._C._are_functorch_transforms_active():  # searchsorted has no vmap rule: count instead
        index = (cdf <= u).sum(-1, keepdim=True)
    else:
        index = torch.searchsorted(cdf, u, right=True)
    return index.clamp_max_(x.shape[-1] - 1), probs, total
