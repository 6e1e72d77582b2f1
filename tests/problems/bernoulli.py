"""Bernoulli fixtures for the generic suite."""

from __future__ import annotations

import dataclasses

import torch
from scipy import stats

from problems import Case, Problem, Soak, bounded


def _problems() -> list[Problem]:
    g = torch.Generator().manual_seed(11)
    out = []
    for b, v in [(2, 3), (1, 5)]:
        logits = 1.5 * torch.randn(b, v, generator=g, dtype=torch.float64)
        w = torch.randn(v, generator=g, dtype=torch.float64)
        c = torch.randn(v, generator=g, dtype=torch.float64)

        def f(z, w=w, c=c):
            # nonlinear, couples the variables, accepts relaxed z in [0, 1]
            return (z @ w) ** 2 + torch.cos(2 * (z @ c))

        out.append(Problem(f"bern{b}x{v}", logits, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    """Frequency test: Σ_j (k_j - M p_j)² / (M p_j (1-p_j)) over coordinates ~ χ²(d) (normal approximation)."""
    p = torch.sigmoid(params.double()).flatten()
    m = samples.shape[0]
    k = samples.reshape(m, -1).double().sum(0)
    stat = float((((k - m * p) ** 2) / (m * p * (1 - p))).sum())
    return float(stats.chi2.sf(stat, p.numel()))


def _is_valid(z: torch.Tensor) -> bool:
    return bool(((z == 0) | (z == 1)).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    big = 1e4
    return [
        torch.tensor([big, -big, 0.0, 30.0, -30.0, 1e-3], dtype=dtype),
        torch.tensor([[big, big], [-big, 5.0]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([0.0, float("nan"), 1.0]), ValueError),
        (torch.tensor([0.0, float("inf")]), ValueError),
        (torch.tensor([-float("inf"), 1.0]), ValueError),
        (torch.tensor([0, 1, 2]), TypeError),
        ([0.0, 1.0], TypeError),
    ]


_POSITIVE = [0.0, -1.0, float("nan"), float("inf"), "1", True]

CASE = Case(
    distribution="bernoulli",
    problems=_problems,
    law_params=lambda: torch.tensor([0.3, -1.0, 1.5, 0.0, -2.5, 3.0], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"tau": _POSITIVE,
                 "bandwidth": _POSITIVE,
                 "step": _POSITIVE,
                 "mean_over": [0, -1, 1.5, "2", None],
                 "kernel": ["gaussian", None, 1],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)],
                 "control_variate": [1.0, "net"],
                 "eta": [float("nan"), float("inf"), "1", True]},
)

CASE = dataclasses.replace(CASE, soak=Soak(sizes=(1, 1), event_shape=lambda n: (), in_hull=bounded))  # [0, 1]


# ----------------------------------------------------------------------------- gradient references
# Written from the papers' formulas, independently of the library. p = σ(θ); the logistic noise
# L = log E₁ - log E₂ is replayed from the generator (E = -log(1 - U), U ~ U[0, 1)).

def _replay_logistic(shape, dtype, generator):
    u = torch.rand((2, *shape), dtype=dtype, generator=generator)
    log_e = (-torch.log1p(-u)).clamp_min(torch.finfo(dtype).tiny).log()
    return log_e[0] - log_e[1]


def _ref_st(theta, out, v, generator):
    p = torch.sigmoid(theta)
    return v * p * (1 - p)  # Bengio et al. 2013: d/dθ σ(θ)


def _ref_gumbel_softmax(theta, out, v, generator, tau=1.0):
    y = torch.sigmoid((theta + _replay_logistic(theta.shape, theta.dtype, generator)) / tau)
    torch.testing.assert_close(out.detach(), y)  # the value is the binary concrete sample
    return v * y * (1 - y) / tau


def _ref_stgs(theta, out, v, generator, tau=1.0):
    perturbed = theta + _replay_logistic(theta.shape, theta.dtype, generator)
    assert torch.equal(out.detach(), (perturbed > 0).to(theta.dtype))
    y = torch.sigmoid(perturbed / tau)
    return v * y * (1 - y) / tau


def _ref_pwgf_mmd(theta, out, v, generator, bandwidth=2.0, step=0.1, kernel="rbf", mean_over=1):
    # Cheng et al. 2019, App. D: dΔ²/dp = 2[(1-2p)(1-K(1,0)) - (K(1,z̃) - K(0,z̃))] (first term's sign
    # corrected); the control variate subtracts the same at z̃ = z, scale 1/(2ε), chain dp/dθ = p(1-p).
    def k(s, y):
        return s * y if kernel == "linear" else bandwidth**2 * torch.exp(-((s - y) ** 2) / (2 * bandwidth**2))

    p = torch.sigmoid(theta)
    z = out.detach()
    # ε is applied to the per-sample gradient mean_over · v; the estimate is averaged as the loss (/ mean_over)
    moved = z - step * mean_over * v
    d_p = -2 * ((k(1.0, moved) - k(0.0, moved)) - (k(1.0, z) - k(0.0, z))) / (2 * step)
    return d_p * p * (1 - p) / mean_over


CASE = dataclasses.replace(
    CASE,
    references={"st": _ref_st, "gumbel_softmax": _ref_gumbel_softmax, "stgs": _ref_stgs, "pwgf_mmd": _ref_pwgf_mmd},
    reference_params=lambda g: torch.randn(6, 4, 5, generator=g, dtype=torch.float64) * 2,
    reference_grid={"tau": [0.3, 1.0, 2.5], "bandwidth": [0.5, 2.0], "step": [0.1, 1.0], "kernel": ["rbf", "linear"],
                    "mean_over": [1, 25]},
)
