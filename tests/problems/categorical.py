"""Categorical fixtures for the generic suite."""

from __future__ import annotations

import dataclasses

import torch
from scipy import stats

from problems import Case, Problem, Soak, bounded


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(7)
    out = []
    for b, v, n in [(2, 2, 3), (1, 3, 4)]:
        logits = torch.randn(b, v, n, generator=g, dtype=torch.float64)
        w = torch.randn(v, n, generator=g, dtype=torch.float64)
        c = torch.randn(v * n, generator=g, dtype=torch.float64)

        def f(z, w=w, c=c):
            lin = (z * w).sum((-1, -2))
            return lin**2 + torch.cos(z.flatten(-2) @ c)

        out.append(Problem(f"cat{b}x{v}x{n}", logits, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    counts = samples.reshape(-1, params.shape[-1]).sum(0).double()
    expected = torch.softmax(params.double(), -1) * counts.sum()
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


def _is_valid(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [
        torch.tensor([[big, -big, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-big, -big, -big, big]], dtype=dtype),
        torch.tensor([[big, big - 1e-3, -big, 3.0]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([[0.0, float("nan"), 1.0]]), ValueError),
        (torch.tensor([[0.0, float("inf"), 1.0]]), ValueError),
        (torch.tensor([[0, 1, 2]]), TypeError),
        ([[0.0, 1.0]], TypeError),
        (torch.tensor(1.0), ValueError),
        (torch.tensor([[0.0, 1.0], [-float("inf"), -float("inf")]]), ValueError),  # a row with every category masked
    ]


def _masked(dtype: torch.dtype) -> list[torch.Tensor]:
    """Masked (-inf) categories, including a row with one category left and extreme finite logits."""
    inf = float("inf")
    return [
        torch.tensor([[0.3, -inf, 1.2, -0.5, -inf], [-inf, -inf, 2.0, -inf, -inf], [1.0, 0.0, -inf, 0.5, 0.2]],
                     dtype=dtype),
        torch.tensor([[[1e4, -inf, -1e4], [-inf, -1e4, 0.0]]], dtype=dtype),
    ]


CASE = Case(
    distribution="categorical",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0, -0.2], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    masked_params=_masked,
    bad_hparams={"tau": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "gap": [-0.5, "p", None, float("nan")],
                 "mc_samples": [0, -3, 2.5, True],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)],
                 "control_variate": [1.0, "net"],
                 "eta": [float("nan"), float("inf"), "1", True],
                 "forward_tau": [0.0, -1.0, float("nan"), float("inf"), "1", True],
                 "builtin_baseline": [1, "yes", None]},
)

CASE = dataclasses.replace(CASE, soak=Soak(
    sizes=(1, 10),
    event_shape=lambda n: (n,),
    # the probability simplex is the convex hull of the one-hot vectors
    in_hull=lambda z, tol: bounded(z, tol) and bool(((z.double().sum(-1) - 1).abs() <= tol * z.shape[-1]).all()),
))


# ----------------------------------------------------------------------------- gradient references
# Written from the papers' formulas, independently of the library: J(p) = diag(p) - p pᵀ is the
# softmax Jacobian at p, applied to the upstream vector v.

def _jv(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return (jac @ v.unsqueeze(-1)).squeeze(-1)


def _replay_gumbel(shape, dtype, generator):
    u = torch.rand(shape, dtype=dtype, generator=generator)  # Gumbel by inversion: -log(-log(1 - U))
    return -(-torch.log1p(-u)).clamp_min(torch.finfo(dtype).tiny).log()


def _ref_st(theta, out, v, generator, tau=1.0):
    return _jv(torch.softmax(theta / tau, -1), v) / tau  # GST eq. 7


def _ref_gumbel_softmax(theta, out, v, generator, tau=1.0):
    y = torch.softmax((theta + _replay_gumbel(theta.shape, theta.dtype, generator)) / tau, -1)
    torch.testing.assert_close(out.detach(), y)  # the value is the relaxed sample itself
    return _jv(y, v) / tau


def _ref_stgs(theta, out, v, generator, tau=1.0):
    perturbed = theta + _replay_gumbel(theta.shape, theta.dtype, generator)
    assert torch.equal(out.detach().argmax(-1), perturbed.argmax(-1))  # forward = argmax(θ + G)
    return _jv(torch.softmax(perturbed / tau, -1), v) / tau  # GST eq. 10


def _gap_value(theta, d, gap):
    if gap != "pi":
        return torch.full_like(theta[..., :1], float(gap))
    pi_d = torch.softmax(theta, -1).gather(-1, d.unsqueeze(-1)) * (1 - 1e-5)
    return -torch.log(1 - pi_d) / pi_d  # GST Sec. 4: expected gap of STGS


def _gst_moved(theta, out, gap):
    d = out.detach().argmax(-1)
    m = theta.max(-1, keepdim=True).values
    is_d = torch.nn.functional.one_hot(d, theta.shape[-1]).bool()
    moved = torch.where(is_d, m, torch.minimum(theta, m - _gap_value(theta, d, gap)))  # θ + m1 - m2
    return d, is_d, moved


def _ref_gst(theta, out, v, generator, tau=1.0, gap=1.0):
    _, _, moved = _gst_moved(theta, out, gap)
    # m1, m2 built from detached logits: ∂θ'/∂θ = I (GST eq. 17-19)
    return _jv(torch.softmax(moved / tau, -1), v) / tau


def _ref_nz_gst(theta, out, v, generator, tau=1.0, gap=1.0):
    d, is_d, moved = _gst_moved(theta, out, gap)
    n = theta.shape[-1]
    top = torch.nn.functional.one_hot(theta.argmax(-1), n).to(theta.dtype)
    g = _gap_value(theta, d, gap)
    clamped = (theta >= theta.max(-1, keepdim=True).values - g) & ~is_d
    eye = torch.eye(n, dtype=theta.dtype)
    # row j of ∂θ'/∂θ: e_argmax for j = D or j clamped to max - gap, e_j otherwise
    a = torch.where((is_d | clamped).unsqueeze(-1), top.unsqueeze(-2).expand(*theta.shape, n), eye)
    upstream = _jv(torch.softmax(moved / tau, -1), v) / tau
    return (a.transpose(-1, -2) @ upstream.unsqueeze(-1)).squeeze(-1)


def _ref_reinmax(theta, out, v, generator, tau=1.0):
    pi0 = torch.softmax(theta, -1)
    pi1 = 0.5 * (out.detach() + torch.softmax(theta / tau, -1))
    return 2 * _jv(pi1, v) - 0.5 * _jv(pi0, v)  # Liu et al. 2023, Alg. 2


def _ref_decoupled_stgs(theta, out, v, generator, tau=1.0, forward_tau=1.0):
    # Shah et al. 2024: forward argmax(θ/τ_f + G) (a sample of softmax(θ/τ_f)); backward the ST-GS
    # Jacobian at temperature τ_b of the same perturbed logits, d softmax((θ/τ_f + G)/τ_b)/dθ
    perturbed = theta / forward_tau + _replay_gumbel(theta.shape, theta.dtype, generator)
    assert torch.equal(out.detach().argmax(-1), perturbed.argmax(-1))
    return _jv(torch.softmax(perturbed / tau, -1), v) / (tau * forward_tau)


CASE = dataclasses.replace(
    CASE,
    references={"decoupled_stgs": _ref_decoupled_stgs, "st": _ref_st, "gumbel_softmax": _ref_gumbel_softmax, "stgs": _ref_stgs, "gst": _ref_gst,
                "nz_gst": _ref_nz_gst, "reinmax": _ref_reinmax},
    covered_by={"gumbel_rao": "test_categorical::test_gumbel_rao_mean_matches_stgs"},
    reference_params=lambda g: torch.randn(6, 4, 5, generator=g, dtype=torch.float64) * 2,
    reference_grid={"tau": [0.3, 1.0, 2.5], "gap": [0.0, 0.8, 1.2, "pi"], "forward_tau": [0.5, 1.0, 3.0]},
)
