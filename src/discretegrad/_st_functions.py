"""The categorical straight-through ops as custom ``autograd.Function``s with closed-form backward passes.

Each Function takes the sample index ``D`` (drawn outside, with the noise, so that the Function
itself is deterministic: ``torch.func.vmap`` generates its rule and ``torch.compile`` traces it),
returns the exact one-hot ``D`` in the input's dtype, and applies the softmax Jacobian
``J(p) = diag(p) - ppᵀ`` as ``J(p) v = p ⊙ v - p ⟨p, v⟩`` (no ``N x N`` matrix, no autograd graph).
What each saves for backward is the least it needs: the input logits and an ``int32`` index (the
softmax is recomputed in backward: no saved probability vector), or, for STGS, the perturbed
softmax in the input's dtype. Half-precision inputs are computed in float32; masked (``-inf``)
logits give probability 0 and therefore an exactly zero gradient, with no ``inf - inf``.

The straightforward autograd compositions these replace are kept in the tests
(``tests/test_fused.py``), which pin every Function to them to float tolerance.
"""

from __future__ import annotations

from typing import Any

import torch

from discretegrad._autograd import softmax
from discretegrad.noise import conditional_gumbel_offweights

__all__ = ["apply", "softmax", "softmax_vjp", "one_hot", "gap_pi", "gapped_logits", "seed_from", "StraightThrough",
           "PerturbedSoftmax", "Gapped", "ReinMax", "GumbelRao"]


def _compute(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def softmax_vjp(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J(p) v = p ⊙ v - p ⟨p, v⟩`` along the last dim."""
    t = p * v
    return torch.addcmul(t, p, t.sum(-1, keepdim=True), value=-1.0)


def one_hot(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot of ``index`` (``[..., 1]``) in ``like``'s shape, dtype and device."""
    return torch.zeros_like(like).scatter(-1, index, 1.0)


def apply(function: type[torch.autograd.Function], *args: Any) -> Any:
    """``function.apply(*args)`` without torch's per-call ``inspect.signature`` binding, in eager mode.

    For a Function with ``setup_context``, ``Function.apply`` binds the arguments to ``forward``'s
    signature on every call to fill in defaults (about a third of a tiny op's forward on this CPU,
    measured with cProfile, ``docs/performance.md``). The ops here pass every argument positionally,
    so the binding is the identity and the call can go straight to the C++ entry point
    (``torch._C._FunctionBase.apply``, what ``Function.apply`` calls after binding). Under
    ``torch.func`` transforms and ``torch.compile`` (which trace ``Function.apply`` themselves) it is
    torch's own ``apply``."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*args)  # type: ignore[misc]


class _OneHot(torch.autograd.Function):
    """Shared by the ops below: forward the exact one-hot of ``index`` in the logits' dtype; save the
    logits and ``index`` (as int32) for a backward that recomputes what it needs; ``ctx.args`` holds
    the remaining (non-tensor) arguments."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, index: torch.Tensor, *args: Any) -> torch.Tensor:
        return one_hot(index, logits)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0], inputs[1].to(torch.int32))
        ctx.args = inputs[2:]


def _save_probs(ctx: Any, logits: torch.Tensor, index: torch.Tensor | None, tau: float, probs: torch.Tensor) -> None:
    """Save what ST and ReinMax need for ``softmax(θ)`` in backward: at ``τ = 1`` with a float32/float64
    input, the sampler's ``softmax(θ)`` itself (the size of the logits, which are then not saved: no
    recomputation); otherwise the logits (the softmax recomputed in backward). ``index`` (as int32)
    when given."""
    ctx.from_probs = tau == 1.0 and probs.dtype == logits.dtype
    ctx.dtype, ctx.tau = logits.dtype, tau
    first = probs if ctx.from_probs else logits
    ctx.save_for_backward(first, *(() if index is None else (index.to(torch.int32),)))


def _probs(ctx: Any, saved: tuple, tau: float = 1.0) -> torch.Tensor:
    """``softmax(θ/τ)`` in the compute dtype from what :func:`_save_probs` saved (``τ`` = 1 when saved)."""
    return saved[0] if ctx.from_probs else softmax(_compute(saved[0]), tau)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


class StraightThrough(_OneHot):
    """ST: forward one-hot ``D``, backward ``J(softmax(θ/τ)) v / τ`` (args: ``tau, probs``, the sampler's
    ``softmax(θ)``; saves it at ``τ = 1``, else θ only: :func:`_save_probs`)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        logits, _, tau, probs = inputs
        _save_probs(ctx, logits, None, tau, probs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        tau = ctx.tau
        out = softmax_vjp(_probs(ctx, ctx.saved_tensors, tau), _compute(grad))
        return _cast(out / tau if tau != 1.0 else out, ctx.dtype), None, None, None


class PerturbedSoftmax(torch.autograd.Function):
    """STGS (and decoupled STGS): ``perturbed = θ/τ_f + G``, its row maxima ``top`` and argmax ``index``
    given; forward one-hot ``index``,
    backward ``J(y) v / (τ τ_f)`` with ``y = softmax(perturbed/τ)`` saved in the input's dtype."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: torch.Tensor, perturbed: torch.Tensor, top: torch.Tensor, index: torch.Tensor, tau: float,
                forward_tau: float):
        y = softmax(perturbed, tau, top)
        return one_hot(index, logits), y.to(logits.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.scale = inputs[4] * inputs[5]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _unused: torch.Tensor):
        (y,) = ctx.saved_tensors
        out = softmax_vjp(_compute(y), _compute(grad))
        return (out / ctx.scale if ctx.scale != 1.0 else out).to(y.dtype), None, None, None, None, None


def gap_pi(probs_of_sample: torch.Tensor) -> torch.Tensor:
    """GST-p gap ``-log(1 - π_D)/π_D`` (``π_D`` scaled by ``1 - 1e-5``; the ``π_D → 0`` limit is 1)."""
    p = probs_of_sample * (1 - 1e-5)
    safe = p.clamp_min(torch.finfo(p.dtype).tiny)
    return torch.where(p > 1e-12, -torch.log1p(-safe) / safe, torch.ones_like(p))


def gapped_logits(x: torch.Tensor, index: torch.Tensor, gap: float | str) -> torch.Tensor:
    """GST's perturbed logits from ``sg(θ)``: ``θ'_D = max θ``, ``θ'_j = min(θ_j, max θ - gap)``."""
    m = x.amax(-1, keepdim=True)
    if gap == "pi":
        pi_d = torch.exp(x.gather(-1, index) - torch.logsumexp(x, -1, keepdim=True))
        g: torch.Tensor | float = gap_pi(pi_d)
    else:
        g = float(gap)
    return torch.minimum(x, m - g).scatter(-1, index, m)


class Gapped(_OneHot):
    """GST: forward one-hot ``D``, backward ``J(softmax(θ'/τ)) v / τ`` with θ' recomputed (args: ``tau, gap``)."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        logits, index = ctx.saved_tensors
        tau, gap = ctx.args
        p = softmax(gapped_logits(_compute(logits), index.long(), gap), tau)
        out = softmax_vjp(p, _compute(grad))
        return (out / tau if tau != 1.0 else out).to(logits.dtype), None, None, None


class ReinMax(_OneHot):
    """ReinMax: forward one-hot ``D``, backward ``2 J(π1) v - J(π0) v / 2`` with ``π0 = softmax(θ)``,
    ``π1 = (D + p)/2``, ``p = softmax(θ/τ)``, both recomputed (saves θ and D, or at ``τ = 1`` the
    sampler's ``softmax(θ)`` and D: :func:`_save_probs`).

    Expanded with ``D`` one-hot (``s_p = ⟨p, v⟩``, ``s_0 = ⟨π0, v⟩``)::

        2 J(π1) v - J(π0) v / 2 = p ⊙ (v - (v_D + s_p)/2) - π0 ⊙ (v - s_0)/2 + e_D (v_D - s_p)/2

    and at ``τ = 1`` (``p = π0``) this is ``π0 ⊙ (v - v_D)/2 + e_D (v_D - s_0)/2``: one softmax, no
    ``N``-vector ``π1`` (args: ``tau, probs``)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        logits, index, tau, probs = inputs
        _save_probs(ctx, logits, index, tau, probs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        *saved, index = ctx.saved_tensors
        tau = ctx.tau
        v, index = _compute(grad), index.long()
        pi0, v_d = _probs(ctx, saved), v.gather(-1, index)
        if tau == 1.0:
            out = pi0 * (v - v_d)  # its row sum is s_0 - v_D
            d_term = out.sum(-1, keepdim=True).mul_(-0.5)
            out.mul_(0.5)
        else:
            p = softmax(_compute(saved[0]), tau)
            s_p, s_0 = (p * v).sum(-1, keepdim=True), (pi0 * v).sum(-1, keepdim=True)
            out = p * (v - 0.5 * (v_d + s_p))
            out.sub_(pi0 * (v - s_0), alpha=0.5)
            d_term = 0.5 * (v_d - s_p)
        return _cast(out.scatter_add(-1, index, d_term), ctx.dtype), None, None, None


def _rao_sums(w: torch.Tensor, v: torch.Tensor, v_d: torch.Tensor, work: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """For one chunk of weights ``w [B, N, k]`` (0 at the sample ``D``, where the weight is 1:
    ``y_k = (w_k + e_D) / S_k``) and ``v [B, N]`` (``v_d`` = ``v`` at ``D``, ``[B, 1]``): the sums over
    ``k`` of ``J(y_k) v = y_k ⊙ v - y_k ⟨y_k, v⟩``, split as ``v ⊙ Σ_k a_k w_k - Σ_k b_k w_k`` (plus the
    ``e_D`` terms) with ``a_k = 1/S_k``, ``b_k = ⟨w_k + e_D, v⟩ / S_k²``. Returns
    ``v ⊙ Σ_k a_k w_k - Σ_k b_k w_k`` (``[B, N]``) and ``Σ_k (a_k v_D - b_k)`` (``[B, 1]``, the ``e_D``
    term). Every reduction runs along the contiguous ``k``; no softmax JVP per draw. ``work``: a buffer of
    ``w.numel()`` elements or more for the temporaries (eager mode only: ``None`` under ``torch.func``)."""
    s = w.sum(-2).add_(1.0)  # [B, k]
    a = s.reciprocal_()
    tmp = None if work is None else work[:w.numel()].view(w.shape)
    b = torch.mul(w, v.unsqueeze(-1), out=tmp).sum(-2).add_(v_d).mul_(a).mul_(a)
    coef = torch.addcmul(-b.unsqueeze(-2), v.unsqueeze(-1), a.unsqueeze(-2), out=tmp)  # a_k v_j - b_k, [B, N, k]
    out = (coef.mul_(w) if coef.shape == w.shape else coef * w).sum(-1)
    return out, (a * v_d - b).sum(-1, keepdim=True)


def _rao_blocks(rows: int, n: int, k_total: int) -> tuple[int, int]:
    """(rows, draws) per chunk: about 2^18 numbers at once (a few MiB of temporaries, measured fastest
    against 2^16, 2^17 and 2^20 in ``results/benchmarks/categorical_rao.md``), so the transient memory
    is bounded in K and in the batch."""
    k = max(1, min(k_total, (1 << 18) // max(1, n)))
    return max(1, min(rows, (1 << 18) // (k * n))), k


class GumbelRao(_OneHot):
    """GR-MCK: forward one-hot ``D``; backward ``(1/K) Σ_k J(y_k) v / τ`` with
    ``y_k = softmax(z_k/τ)``, ``z_k`` conditional Gumbels given ``D``, drawn *in backward* in chunks
    from a generator seeded by ``seed`` (a number drawn from the caller's generator in forward; with
    no generator, ``seed`` is ``None`` and the draws come from torch's default generator at backward
    time, which is also what ``torch.compile`` can trace).

    Saves θ and ``D`` only: nothing that grows with K (no second moment, no draws); the draws are
    made once, where they are used, in chunks of rows and draws (:func:`_rao_blocks`). The weights
    come straight from the closed form ``y_kj ∝ σ(θ_j - T_k - log E_kj)^{1/τ}``, with the K draws laid
    out last and 0 at ``D`` (:func:`discretegrad.noise.conditional_gumbel_offweights`: no logarithm but
    the exponentials' for ``τ <= 1``, log space for ``τ > 1``); the weight 1 of ``D`` is added in the
    sums (:func:`_rao_sums`), so no pass masks it, and the sum over ``k`` of the Jacobian-vector
    products is reductions along ``k``, not K softmax JVPs. Args: ``tau, mc_samples, seed``."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        logits, index = ctx.saved_tensors
        tau, k_total, seed = ctx.args
        x, v, index = _compute(logits), _compute(grad), index.long()
        gen = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
        n = x.shape[-1]
        x2, v2, i2 = x.reshape(-1, n), v.reshape(-1, n), index.reshape(-1, 1)
        v_d = v2.gather(-1, i2)
        step_rows, step_k = _rao_blocks(x2.shape[0], n, k_total)
        eager = not torch._C._are_functorch_transforms_active()  # buffers reused across chunks (not under vmap)
        size = min(x2.shape[0], step_rows) * n * step_k
        draws, work = (torch.empty(size, dtype=x.dtype, device=x.device) for _ in range(2)) if eager else (None, None)
        blocks = []
        for r in range(0, x2.shape[0], step_rows):
            rows = slice(r, r + step_rows)
            out, at_d = None, None
            for start in range(0, k_total, step_k):
                w = conditional_gumbel_offweights(x2[rows], i2[rows], min(step_k, k_total - start), tau=tau,
                                                  generator=gen, out=draws)
                o, d = _rao_sums(w, v2[rows], v_d[rows], work)
                out, at_d = (o, d) if out is None else (out + o, at_d + d)
            blocks.append(out.scatter_add(-1, i2[rows], at_d))
        grad_x = torch.cat(blocks).mul_(1.0 / (k_total * tau))
        return grad_x.reshape(x.shape).to(logits.dtype), None, None, None, None


def seed_from(generator: torch.Generator | None, device: torch.device) -> int | None:
    """A 62-bit seed drawn from ``generator`` (one draw), for a generator made later (GR-MCK's
    backward); ``None`` without a generator (the backward then draws from torch's default one)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (), generator=generator, device=device))

