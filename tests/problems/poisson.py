"""Poisson fixtures for the generic suite."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import stats

from problems import Case, Problem, Soak


def _problems() -> list[Problem]:
    # Rates stay small so that the exact oracle's truncated support (P(X > K) < 1e-10) is short:
    # K = 26 for rate 3, i.e. 27^V joint configurations.
    g = torch.Generator().manual_seed(13)
    out = []
    for b, v, top in [(2, 2, 3.0), (1, 3, 1.5)]:
        rate = 0.2 + (top - 0.2) * torch.rand(b, v, generator=g, dtype=torch.float64)
        w = torch.randn(v, generator=g, dtype=torch.float64)

        def f(z, w=w):
            # nonlinear in z and coupling the variables; defined for real z (MuProp, pWGF)
            return torch.sin(z @ w) + 0.1 * z.sum(-1) ** 2

        out.append(Problem(f"pois{b}x{v}", rate, f))
    return out


def _law_pvalue(params: torch.Tensor, samples: torch.Tensor) -> float:
    """χ² over binned counts per coordinate (bins at Poisson deciles, so every expected count is
    large), statistics and degrees of freedom summed over coordinates."""
    rates = params.double().flatten().numpy()
    m = samples.shape[0]
    z = samples.reshape(m, -1).double().numpy()
    stat, dof = 0.0, 0
    for j, lam in enumerate(rates):
        edges = np.unique(stats.poisson.ppf(np.linspace(0.1, 0.9, 9), lam))  # bins (-inf, e1], (e1, e2], ..., (ek, inf)
        cdf = np.concatenate([[0.0], stats.poisson.cdf(edges, lam), [1.0]])
        expected = m * np.diff(cdf)
        observed = np.histogram(z[:, j], bins=np.concatenate([[-np.inf], edges + 0.5, [np.inf]]))[0]
        keep = expected > 0
        stat += float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
        dof += int(keep.sum()) - 1
    return float(stats.chi2.sf(stat, max(dof, 1)))


def _is_valid(z: torch.Tensor) -> bool:
    return bool(((z >= 0) & (z == torch.round(z)) & torch.isfinite(z)).all())


def _extreme(dtype: torch.dtype) -> list[torch.Tensor]:
    return [
        torch.tensor([1e-6, 1e4, 1.0, 1e-3], dtype=dtype),
        torch.tensor([[1e-6, 1e-6], [1e4, 2e3]], dtype=dtype),
    ]


def _bad_params() -> list[tuple[object, type[Exception]]]:
    return [
        (torch.tensor([1.0, -0.5]), ValueError),
        (torch.tensor([0.0, 1.0]), ValueError),
        (torch.tensor([1.0, float("nan")]), ValueError),
        (torch.tensor([float("inf"), 1.0]), ValueError),
        (torch.tensor([1, 2]), TypeError),
        ([1.0, 2.0], TypeError),
    ]


_POSITIVE = [0.0, -1.0, float("nan"), float("inf"), "1", True]

CASE = Case(
    distribution="poisson",
    problems=_problems,
    law_params=lambda: torch.tensor([0.05, 0.7, 3.0, 20.0, 400.0], dtype=torch.float64),
    law_pvalue=_law_pvalue,
    is_valid=_is_valid,
    extreme_params=_extreme,
    bad_params=_bad_params,
    bad_hparams={"bandwidth": _POSITIVE,
                 "step": _POSITIVE,
                 "mean_over": [0, -1, 1.5, "2", None],
                 "kernel": ["gaussian", None, 1],
                 "baseline": ["b", True, float("nan"), torch.zeros(13, 17)]},
)

# rates 10^(x / 2500): logits in [-1e4, 1e4] give rates in [1e-4, 1e4], ties kept
CASE = dataclasses.replace(CASE, soak=Soak(sizes=(1, 1), event_shape=lambda n: (),
                                           to_params=lambda x: 10.0 ** (x.clamp(-1e4, 1e4) / 2500)))

# ----------------------------------------------------------------------------- gradient references
# Written from the papers' formulas, independently of the library.

def _ref_st(rate, out, v, generator):
    assert torch.equal(out.detach(), torch.poisson(rate, generator=generator))  # forward: the Poisson draw
    return v.clone()  # Bengio et al. 2013 / pWGF Sec. 2.1: d/dλ of the mean λ, times the upstream gradient


def _ref_pwgf_mmd(rate, out, v, generator, bandwidth=2.0, step=0.1, kernel="rbf", mean_over=1):
    # Cheng et al. 2019, Sec. 2.2 with the control variate: ĝ = -(1/ε) Σ_s ∂p_λ(s)/∂λ [K(s, z - εv) - K(s, z)],
    # ∂p_λ(s)/∂λ = p_λ(s-1) - p_λ(s), summed here over s = 0..120 (every rate is below 6).
    assert torch.equal(out.detach(), torch.poisson(rate, generator=generator))
    s = torch.arange(121, dtype=rate.dtype)
    pmf = torch.tensor(stats.poisson.pmf(s.numpy()[None, :], rate.reshape(-1, 1).numpy()), dtype=rate.dtype)
    pmf = pmf.reshape(*rate.shape, -1)
    dpmf = torch.cat([torch.zeros_like(pmf[..., :1]), pmf[..., :-1]], -1) - pmf

    def k(y):
        y = y.unsqueeze(-1)
        return s * y if kernel == "linear" else bandwidth**2 * torch.exp(-((s - y) ** 2) / (2 * bandwidth**2))

    z = out.detach()
    # ε is applied to the per-sample gradient mean_over · v; the estimate is averaged as the loss (/ mean_over)
    return -(dpmf * (k(z - step * mean_over * v) - k(z))).sum(-1) / (step * mean_over)


CASE = dataclasses.replace(
    CASE,
    references={"st": _ref_st, "pwgf_mmd": _ref_pwgf_mmd},
    reference_params=lambda g: 0.2 + 5.0 * torch.rand(6, 4, generator=g, dtype=torch.float64),
    reference_grid={"bandwidth": [0.5, 2.0], "step": [0.1, 1.0], "kernel": ["rbf", "linear"], "mean_over": [1, 25]},
    # The library sums pWGF-MMD over a window holding all but TAIL = 1e-10 of the mass; the reference
    # sums (almost) everything, so they differ by at most 2 TAIL max|ΔK| / ε <= 2e-10 * 4 / 0.1 = 8e-9.
    reference_atol=1e-8,
)
