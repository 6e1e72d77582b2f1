"""Accuracy of the tree marginals.

1. As the temperature falls, on K_6 against brute-force enumeration of its 1296 spanning trees:
   ``tree_marginals`` as used (the float64 inverse where its bound allows, else the elimination), the
   elimination (linear space where the centred spread allows, else log space), the log-space
   reference, and the usual matrix-inverse formula (max-shift, optionally the SST code's clipping at
   max - 15).
2. The bound of the inverse path (``structures/kirchhoff.py``): its error against the float64
   log-space reference (values and the SST gradient ``J g``, the reference's double backward) by
   decade of the 1-norm condition number ``κ`` it computes, over Gumbel problems at falling ``τ``,
   spreads, weakly joined clusters, a weak vertex and a weak root (n = 6, 20, 50, both structures),
   and the share of elements the bound refuses.

    python benchmarks/tree_marginals_accuracy.py [--out results/benchmarks/tree_marginals_accuracy.md]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad import structures as S
from discretegrad.structures import kirchhoff, matrix_tree
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402


def inverse_marginals(w: torch.Tensor, max_range: float) -> torch.Tensor:
    """μ_ij = A_ij (B_ii + B_jj - 2 B_ij), B = inverse of the Laplacian minor, A = exp(w - max w)
    clipped below at -max_range: the usual matrix-inversion implementation. As in the SST code, the
    grounded vertex is an endpoint of the heaviest edge (moved to index 0 by a permutation)."""
    n = w.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool)
    masked = w.masked_fill(~off, -math.inf)
    out = torch.empty_like(w)
    for b_idx in range(w.shape[0]):
        r = int(masked[b_idx].flatten().argmax()) // n
        perm = torch.tensor([r] + [v for v in range(n) if v != r])
        wp = w[b_idx][perm][:, perm]
        shifted = (wp - masked[b_idx].max()).clamp_min(-max_range)
        a = torch.exp(shifted) * off
        lap = torch.diag_embed(a.sum(-1)) - a
        b = torch.zeros_like(lap)
        b[1:, 1:] = torch.linalg.inv_ex(lap[1:, 1:]).inverse
        d = torch.diagonal(b)
        mu = a * (d.unsqueeze(-1) + d.unsqueeze(-2) - 2 * b)
        out[b_idx] = mu[perm.argsort()][:, perm.argsort()]
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--per-case", type=int, default=16)
    p.add_argument("--out", default="results/benchmarks/tree_marginals_accuracy.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = 6
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(args.batch, n, n, generator=gen, dtype=torch.float64)
    g = torch.triu(dg.noise.gumbel(theta.shape, dtype=theta.dtype, generator=gen), 1)
    u = torch.triu(theta, 1) + g
    u = u + u.transpose(-1, -2)  # U = θ + G, one Gumbel per undirected edge
    methods = {
        "as used, float64 (dg: the inverse where κ <= KAPPA_MAX, else the elimination)":
            lambda w: S.tree_marginals(w, directed=False),
        "as used, float32 input (dg: the same, computed in float64)":
            lambda w: S.tree_marginals(w.float(), directed=False).double(),
        "elimination, float64 (dg before: linear space where the spread allows)":
            lambda w: matrix_tree.tree_marginals_elimination(w, directed=False),
        "elimination, float32 (dg before: linear space where the spread allows)":
            lambda w: matrix_tree.tree_marginals_elimination(w.float(), directed=False).double(),
        "log-space elimination, float64 (dg reference)":
            lambda w: matrix_tree.tree_marginals_reference(w, directed=False),
        "log-space elimination, float32 (dg reference)":
            lambda w: matrix_tree.tree_marginals_reference(w.float(), directed=False).double(),
        "inverse, max-shift, float64": lambda w: inverse_marginals(w, math.inf),
        "inverse, max-shift + clip at max-15, float64 (SST code)": lambda w: inverse_marginals(w, 15.0),
        "inverse, max-shift, float32": lambda w: inverse_marginals(w.float(), math.inf).double(),
    }
    taus = [1.0, 0.3, 0.1, 0.03, 0.01]
    lines = ["# Spanning-tree marginals: accuracy against brute force as tau falls\n",
             f"Command: `python benchmarks/tree_marginals_accuracy.py --batch {args.batch} --per-case {args.per_case}`\n",
             f"Environment: {environment()}\n",
             f"{args.batch} random problems on K_{n}: θ ~ N(0, 1) per edge, U = θ + Gumbel, marginals of "
             f"p(T) ∝ exp(<U, T>/τ). Cells: max |μ - μ_exact| over all problems and edges "
             f"(μ_exact by enumeration of the {n ** (n - 2)} trees, dg.exact.marginals); 'nan' = a non-finite "
             "value occurred. Last row: mean L1 distance of the exact marginals to the Kruskal tree.\n"]
    rows = []
    exact = {t: dg.exact.marginals(u, structure="spanning_tree", tau=t) for t in taus}
    for name, fn in methods.items():
        cells = []
        for t in taus:
            mu = fn(u / t)
            cells.append("nan" if not bool(torch.isfinite(mu).all()) else f"{float((mu - exact[t]).abs().max()):.1e}")
        rows.append([name, *cells])
    hard = S.kruskal(u)
    rows.append(["(exact marginals: mean L1 distance to the hard tree)",
                 *(f"{float((exact[t] - hard).abs().sum((-1, -2)).mean()):.3f}" for t in taus)])
    lines.append(markdown_table(["method", *(f"τ = {t}" for t in taus)], rows))
    lines += bound_section(args.per_case)
    write_report(lines, args.out)


def _problems(n: int, b: int, gen: torch.Generator):
    """(name, undirected w, directed w) families whose conditioning ranges from 1 to singular."""
    def sym(w):
        return torch.triu(w, 1) + torch.triu(w, 1).transpose(-1, -2)

    def noise(shape):
        return dg.noise.gumbel(shape, dtype=torch.float64, generator=gen)

    for tau in (1.0, 0.3, 0.1, 0.03, 0.01):
        theta = torch.randn(b, n, n, generator=gen, dtype=torch.float64)
        yield f"gumbel, τ = {tau}", sym(theta + noise(theta.shape)) / tau, (theta + noise(theta.shape)) / tau
    cross = (torch.arange(n) < n // 2).unsqueeze(0) != (torch.arange(n) < n // 2).unsqueeze(1)
    for s in (5.0, 10.0, 20.0, 30.0, 40.0):
        theta = torch.randn(b, n, n, generator=gen, dtype=torch.float64)
        yield f"two clusters, bridges at -{s:g}", sym(theta - s * cross), theta - s * cross
        weak = theta.clone()
        weak[:, -1, :] -= s
        weak[:, :, -1] -= s
        yield f"one vertex at -{s:g}", sym(weak), weak
        root = theta.clone()
        root[:, 0, :] -= s
        yield f"root's out-edges at -{s:g}", sym(root), root
        yield f"N(0, {s / 3:.3g}^2) weights", sym(theta * s / 3), theta * s / 3


def _nan(x: torch.Tensor) -> torch.Tensor:
    """The unguarded run's "fallback": only singular elements (κ NaN) reach it."""
    return torch.full_like(x, math.nan)


def _vjp(fn, w, v):
    leaf = w.clone().requires_grad_(True)
    mu = fn(leaf)
    (grad,) = torch.autograd.grad((mu * v).sum(), leaf)
    return mu.detach(), grad


def bound_section(per_case: int) -> list[str]:
    """Errors of the unguarded inverse against the log-space reference, by decade of its κ."""
    gen = torch.Generator().manual_seed(1)
    eps = torch.finfo(torch.float64).eps
    decades: dict[int, list[float]] = {}
    refused: dict[str, list[int]] = {}
    worst = [0.0, 0.0]
    unguarded = {torch.float64: float("inf"), torch.float32: float("inf")}
    for n in (6, 20, 50):
        for name, undirected, directed in _problems(n, per_case, gen):
            for is_directed, w in ((False, undirected), (True, directed)):
                v = torch.randn(w.shape, generator=gen, dtype=torch.float64)
                a = kirchhoff._weights(0.5 * (w + w.transpose(-1, -2)) if not is_directed else w,
                                       0 if is_directed else n - 1)
                m, d, _ = kirchhoff._inverse(a, 0 if is_directed else n - 1)
                kappa = m.abs().sum(-1).amax(-1) * (2 * d.amax(-1)).clamp_min(1.0)  # m: the transpose
                saved = dict(kirchhoff.KAPPA_MAX)
                kirchhoff.KAPPA_MAX.update(unguarded)
                try:
                    new = _vjp(lambda x: kirchhoff.inverse_marginals(x, directed=is_directed, root=0,
                                                                     fallback=_nan), w, v)
                finally:
                    kirchhoff.KAPPA_MAX.update(saved)
                ref = _vjp(lambda x: matrix_tree.tree_marginals_reference(x, directed=is_directed), w, v)
                e_mu = (new[0] - ref[0]).abs().amax((-1, -2))
                e_jv = (new[1] - ref[1]).abs().amax((-1, -2)) / ref[1].abs().amax((-1, -2)).clamp_min(1.0)
                for k, em, ej in zip(kappa.tolist(), e_mu.tolist(), e_jv.tolist()):
                    key = min(int(math.floor(math.log10(k))), 15) if math.isfinite(k) and k > 0 else 15
                    cell = decades.setdefault(key, [0, 0.0, 0.0])
                    cell[0] += 1
                    cell[1] = max(cell[1], em) if math.isfinite(em) else math.inf
                    cell[2] = max(cell[2], ej) if math.isfinite(ej) else math.inf
                    if key < 15:
                        worst[0] = max(worst[0], em / (eps * k))
                        worst[1] = max(worst[1], ej / (eps * k))
                if name.startswith("gumbel"):
                    count = refused.setdefault(f"n = {n}, {'directed' if is_directed else 'undirected'}, {name}", [0, 0])
                    count[0] += int((~(kappa <= kirchhoff.KAPPA_MAX[torch.float64])).sum())
                    count[1] += int((~(kappa <= kirchhoff.KAPPA_MAX[torch.float32])).sum())
    rows = [[("κ >= 1e15 or singular" if key == 15 else f"[1e{key}, 1e{key + 1})"), str(c), f"{em:.1e}", f"{ej:.1e}"]
            for key, (c, em, ej) in sorted(decades.items())]
    lines = ["\n## The bound of the inverse path (`structures/kirchhoff.py`)\n",
             "The inverse **without its bound** against the float64 "
             "log-space elimination (`tree_marginals_reference`; the SST gradient `J g` by its double backward), "
             f"{per_case} problems per family and size: Gumbel problems `(θ + G)/τ`, two clusters joined by weak "
             "bridges, one weak vertex, a weak root, wide normal weights (n = 6, 20, 50, spanning trees and "
             "arborescences). Rows: decades of the 1-norm condition number `κ = ||L'||_1 ||L'^-1||_1` that the path "
             "computes from its own inverse. Cells: the largest error of the marginals (absolute) and of `J g` "
             "(relative to max(1, max |J g|)) per problem.\n",
             markdown_table(["κ", "problems", "max error μ", "max error J g (rel.)"], rows),
             f"\nOver every problem with `κ < 1e15`: error of μ <= {worst[0]:.2f} ε κ, of `J g` <= {worst[1]:.2f} ε κ "
             f"(ε = {eps:.3g}). The path is used where `κ <= KAPPA_MAX` = {kirchhoff.KAPPA_MAX[torch.float64]:g} "
             f"(float64 results) or {kirchhoff.KAPPA_MAX[torch.float32]:g} (float32 and half results).\n",
             "Share of the Gumbel problems the bound refuses (they take the elimination), float64 / float32 bound:\n",
             markdown_table(["problems", "refused (float64)", "refused (float32)"],
                            [[k, f"{a}/{per_case}", f"{b}/{per_case}"] for k, (a, b) in refused.items()])]
    return lines


if __name__ == "__main__":
    main()
