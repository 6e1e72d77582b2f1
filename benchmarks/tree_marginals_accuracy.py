"""Accuracy of spanning-tree marginals as the temperature falls: the elimination as used (linear
space where the centred spread allows, else log space) and the log-space reference (ours)
against the matrix-inverse formula (max-shift, optionally the SST code's clipping at max - 15),
all compared with brute-force enumeration of the 1296 spanning trees of K_6.

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
from discretegrad.structures import matrix_tree
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
        "elimination as used, float64 (dg: linear space where the spread allows)":
            lambda w: S.tree_marginals(w, directed=False),
        "elimination as used, float32 (dg: linear space where the spread allows)":
            lambda w: S.tree_marginals(w.float(), directed=False).double(),
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
             f"Command: `python benchmarks/tree_marginals_accuracy.py --batch {args.batch}`\n",
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
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
