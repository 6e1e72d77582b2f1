"""pWGF-MMD: a Wasserstein-gradient-flow step on the samples, projected back by MMD.

:func:`make_pwgf_mmd` builds the drop-in op of a family from its sampler and the derivative of
its probability mass function: :func:`discretegrad.bernoulli.pwgf_mmd` and
:func:`discretegrad.poisson.pwgf_mmd` are two calls of it
(Cheng et al. 2019, "Straight-through estimator as projected Wasserstein gradient flow",
Sec. 2.2 and App. D). One scalar variable ``z ~ p_θ`` on an integer support ``S``.

Derivation. Let ``g = ∂L/∂z`` be the upstream gradient at the sample ``z``. One gradient-flow
step moves the particle to ``z̃ = z - ε g``. The projection back onto ``{p_θ}`` minimises the
squared MMD between ``p_θ`` and the moved particles ``z̃_1..z̃_N`` (kernel ``K``)::

    Δ²(θ) = Σ_{s,s'} p_θ(s) p_θ(s') K(s, s') - (2/N) Σ_n Σ_s p_θ(s) K(s, z̃_n) + const.

Its gradient is ``2 Σ_{s,s'} ∂p(s) p(s') K(s,s') - (2/N) Σ_n Σ_s ∂p(s) K(s, z̃_n)``. The control
variate of the paper's Sec. 2.1 subtracts the same gradient at ``ε = 0`` (particles not moved),
whose expectation over ``z`` is zero at the current θ (``z`` is a sample of ``p_θ``). That removes
the first, ``O(1)`` term exactly, and the step is read as a gradient by scaling by ``1/(2ε)``::

    ĝ(θ) = -(1/ε) (1/N) Σ_n Σ_s ∂_θ p_θ(s) [K(s, z_n - ε g_n) - K(s, z_n)].

* Linear kernel ``K(s, y) = s y`` (the expectation-difference projection of Sec. 2.1):
  ``ĝ = (1/N) Σ_n g_n ∂_θ E_θ[z]``, straight-through, for every ε. It is evaluated as the kernel
  centred at the particle, ``(s - z)(y - z)``: the two differ by terms constant in ``s`` or in ``y``,
  which neither the projection nor (as ``Σ_s ∂_θ p_θ(s) = 0``) ``ĝ`` sees, and the centred form
  does not cancel catastrophically for large atoms (:func:`kernel_change`).
* RBF kernel, here ``K(s, y) = h² exp(-(s - y)² / (2h²))``: the paper's kernel times ``h²``, a
  constant factor that does not move the projection's minimiser, chosen so that as ``h → ∞`` the
  estimator tends to ST (``h² ∂_y K → (s - y)``) and learning rates stay comparable. As ``ε → 0``,
  ``ĝ → g Σ_s ∂_θ p(s) ∂_y K(s, z)``.

Each variable is its own particle (``N = 1`` per element): autograd sums the contributions of
the ``N`` samples that share a parameter (``params.expand`` in :func:`discretegrad.surrogate`).
Since ``ĝ_ε(c g) = c ĝ_{cε}(g)``, the sum over samples with upstream gradients
``g_n = ∇f(z_n)/N`` (the gradient of a sample mean) is the paper's N-sample estimator with step
``ε/N`` on the per-sample gradients ``∇f(z_n)``. The finite-ε estimator is not linear in ``g``:
ε measured in the units of the upstream gradient would change its meaning with the loss
normalisation (a batch mean of 25 images would run every step at ε/25, in effect the ε → 0 limit).

**ε is defined against the per-sample gradient.** The op's ``mean_over = M`` says that the loss
averages ``M`` per-sample costs (batch size × samples for a batch-mean loss: the experiments pass
it), so the per-sample gradient at ``z`` is ``M g``; the particle moves by ``ε M g`` and the
gradient returned is ``ĝ_ε(M g) / M = ĝ_{Mε}(g)`` (the per-sample estimate, averaged as the loss
averages). ``mean_over = 1`` (the default) takes the upstream gradient as the per-sample one: right
for a sum over samples and for :func:`discretegrad.surrogate` with ``n_samples=1`` on one batch
element; ``surrogate(n_samples=N)``'s mean over samples needs ``mean_over=N``.

Because ``g`` is only known in the backward pass, the estimator is a custom
``torch.autograd.Function``: forward returns the hard sample, backward evaluates ``ĝ`` (first
order only; no double backward). Both work under ``torch.func.grad`` and ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from discretegrad import _validation as V

__all__ = ["KERNELS", "check_hparams", "kernel", "kernel_change", "make_pwgf_mmd", "mmd_gradient", "pwgf_sample"]

KERNELS = ("rbf", "linear")

# (params) -> (atoms [..., S] or [S], d p_θ(atoms) / dθ [..., S]), evaluated without grad.
PmfDerivative = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_hparams(bandwidth: float, step: float, kernel: str, mean_over: int = 1) -> tuple[float, float, str, int]:
    return (V.positive_float("bandwidth", bandwidth), V.positive_float("step", step),
            V.choice("kernel", kernel, KERNELS), V.positive_int("mean_over", mean_over))


def kernel(kind: str, bandwidth: float, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``K(s, y)``: ``"rbf"`` = ``h² exp(-(s-y)²/(2h²))``, ``"linear"`` = ``s y``."""
    if kind == "linear":
        return s * y
    return bandwidth**2 * torch.exp(-((s - y) ** 2) / (2 * bandwidth**2))


def kernel_change(kind: str, bandwidth: float, d: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``K(s, z - shift) - K(s, z)`` as a function of ``d = s - z``, without cancellation.

    ``"rbf"``: ``h² (e^a - e^b)`` with ``a = -(d + shift)²/(2h²)``, ``b = -d²/(2h²)``, written as
    ``h² e^{max(a, b)} (±expm1(-|a - b|))`` with ``a - b = -shift (2d + shift)/(2h²)`` (exact
    rewriting; no overflow, and small changes keep their relative precision).
    ``"linear"``: ``-d shift``, the change of the linear kernel centred at the particle,
    ``(s - z)(y - z)``; it differs from ``s (y - z)`` by ``z (y - z)``, constant in ``s``, which
    ``Σ_s ∂p(s) = 0`` removes from :func:`mmd_gradient` (so the estimator is the same, ST exactly).
    Written in ``d`` and ``shift``, neither form loses the small change ``shift`` against the size of
    ``s`` and ``z`` (a Poisson atom and sample near ``1e6`` in float32), as ``K(s, z̃) - K(s, z)`` would.
    """
    if kind == "linear":
        return -d * shift
    h2 = bandwidth**2
    b = -(d**2) / (2 * h2)
    gap = -shift * (2 * d + shift) / (2 * h2)  # a - b
    # e^a - e^b = e^b expm1(a - b) if a <= b, else -e^a expm1(b - a): every expm1 argument <= 0
    return h2 * torch.where(gap <= 0, torch.exp(b) * torch.expm1(gap.clamp_max(0)),
                            -torch.exp(b + gap) * torch.expm1((-gap).clamp_max(0)))


def mmd_gradient(atoms: torch.Tensor, dpmf: torch.Tensor, z: torch.Tensor, g: torch.Tensor,
                 step: float, kind: str, bandwidth: float) -> torch.Tensor:
    """``-(1/ε) Σ_s ∂p(s) [K(s, z - ε g) - K(s, z)]`` per element (``z``, ``g``: ``[...]``).

    The kernel change comes from :func:`kernel_change` (in ``s - z``, no cancellation), so the
    result keeps the precision of ``dpmf`` at any scale of the support.
    """
    d = atoms - z.unsqueeze(-1)
    diff = kernel_change(kind, bandwidth, d, (step * g).unsqueeze(-1))
    return -(dpmf * diff).sum(-1) / step


class _PWGF(torch.autograd.Function):
    """Forward: the sample ``z``; backward: ``ĝ`` of :func:`mmd_gradient`.

    ``setup_context`` (not a ``ctx`` argument of ``forward``) so that ``torch.func`` transforms
    apply. The estimator is elementwise (every variable is its own particle), so its ``vmap`` rule
    moves the vmapped dim into the tensors and applies the Function once; its backward, which
    sums over a data-dependent window of atoms (Poisson), never runs under ``vmap`` itself.
    """

    @staticmethod
    def forward(params, z, derivative, step, kind, bandwidth):  # type: ignore[override]
        return z.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        params, z, derivative, step, kind, bandwidth = inputs
        ctx.save_for_backward(params, z)
        ctx.derivative, ctx.step, ctx.kind, ctx.bandwidth = derivative, step, kind, bandwidth

    @staticmethod
    def backward(ctx, grad_z):  # type: ignore[override]
        params, z = ctx.saved_tensors
        return _PWGFGrad.apply(params, z, grad_z, ctx.derivative, ctx.step, ctx.kind, ctx.bandwidth), \
            None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, params, z, derivative, step, kind, bandwidth):  # type: ignore[override]
        params, z = _batch_first(info.batch_size, in_dims[:2], params, z)
        return _PWGF.apply(params, z, derivative, step, kind, bandwidth), 0


class _PWGFGrad(torch.autograd.Function):
    """The backward of :class:`_PWGF` (first order only: no gradient of its own), elementwise."""

    @staticmethod
    def forward(params, z, grad_z, derivative, step, kind, bandwidth):  # type: ignore[override]
        with torch.no_grad():
            atoms, dpmf = derivative(params)
            grad = mmd_gradient(atoms, dpmf, z, grad_z.to(z.dtype), step, kind, bandwidth)
        return grad.to(params.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        pass

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        raise RuntimeError("pWGF-MMD's gradient is first order only (no double backward)")

    @staticmethod
    def vmap(info, in_dims, params, z, grad_z, derivative, step, kind, bandwidth):  # type: ignore[override]
        params, z, grad_z = _batch_first(info.batch_size, in_dims[:3], params, z, grad_z)
        return _PWGFGrad.apply(params, z, grad_z, derivative, step, kind, bandwidth), 0


def _batch_first(size: int, in_dims, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` with the vmapped dim first (expanded where a tensor is not vmapped)."""
    return tuple(t.movedim(d, 0) if d is not None else t.expand(size, *t.shape) for t, d in zip(tensors, in_dims))


def pwgf_sample(params: torch.Tensor, z: torch.Tensor, derivative: PmfDerivative, *,
                step: float, kind: str, bandwidth: float) -> torch.Tensor:
    """Forward value ``z`` (detached hard sample, same shape as ``params``); backward ``ĝ``."""
    return _PWGF.apply(params, z.detach(), derivative, step, kind, bandwidth)


# (params, generator) -> (params checked and in the compute dtype, exact hard sample)
Draw = Callable[[torch.Tensor, "torch.Generator | None"], tuple[torch.Tensor, torch.Tensor]]


def make_pwgf_mmd(draw: Draw, derivative: PmfDerivative, *, doc: str, module: str) -> Callable[..., torch.Tensor]:
    """The pWGF-MMD drop-in op of a family: ``op(params, *, bandwidth, step, kernel, mean_over, generator)``.

    ``draw`` checks the parameters and returns them in the compute dtype with an exact sample;
    ``derivative`` gives the atoms and ``∂p_θ(s)/∂θ`` the backward pass sums over. ``doc`` is the
    op's docstring (its first line is the registry summary).
    """

    def pwgf_mmd(params: torch.Tensor, *, bandwidth: float = 2.0, step: float = 0.1, kernel: str = "rbf",
                 mean_over: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        bandwidth, step, kernel, mean_over = check_hparams(bandwidth, step, kernel, mean_over)
        x, hard = draw(params, generator)
        # ε applies to the per-sample gradient mean_over · g: ĝ_ε(M g)/M = ĝ_{Mε}(g)
        out = pwgf_sample(x, hard, derivative, step=step * mean_over, kind=kernel, bandwidth=bandwidth)
        return out.to(params.dtype)

    pwgf_mmd.__doc__ = doc
    pwgf_mmd.__module__ = module
    return pwgf_mmd
