"""Float32 precision of the structured relaxations' log-space computations against float64 brute force.

For each structure (top-k entropy marginals, the LML projection, correlated top-k, spanning-tree and
arborescence marginals), input pattern and scale ``s`` (the size of ``|w| = |logits| / tau``), the
float32 result on float32 inputs is compared with the float64 brute-force result on the same
(rounded) inputs (for LML, which has no enumeration, the float64 result of the same code): the max absolute error of a marginal and the max relative error of their sum
(which must be k, or n - 1 for trees). Patterns: ``offset`` (s + N(0, 1)), ``spread`` (s N(0, 1)),
``ties`` (s times five levels -1, -0.5, 0, 0.5, 1), ``one_huge`` (N(0, 1) with one entry at s),
``all_equal`` (s everywhere). 20 problems per cell (batch elements), top-k n = 8, k = 3;
correlated top-k n = 8, k = 3 (pairs drawn like the items); trees n = 5.

    python benchmarks/dp_precision.py [--out results/reliability/dp_precision.md]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad import structures as S
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment, write_report  # noqa: E402

N, K, V, BATCH = 8, 3, 5, 20
SCALES = [1e0, 1e2, 1e4, 1e6, 1e7]
PATTERNS = ["offset", "spread", "ties", "one_huge", "all_equal"]


def _atoms(n: int, k: int) -> torch.Tensor:
    rows = [[1.0 if i in s else 0.0 for i in range(n)] for s in itertools.combinations(range(n), k)]
    return torch.tensor(rows, dtype=torch.float64)


def _corr_ref(w: torch.Tensor) -> torch.Tensor:
    atoms = _atoms(N, K)
    score = w[..., :N] @ atoms.T + w[..., N:] @ (atoms[:, :-1] * atoms[:, 1:]).T
    return torch.softmax(score, -1) @ atoms


STRUCTURES = {  # name -> (float32 op, float64 reference, input shape, size, sum)
    "top-k entropy": (lambda w: S.topk_marginals(w, K), lambda w: dg.exact.marginals(w, structure="topk", k=K),
                      (BATCH, N), K, lambda m: m.sum(-1)),
    "LML (binary entropy)": (lambda w: S.lml(w, K), lambda w: S.lml(w, K), (BATCH, N), K, lambda m: m.sum(-1)),
    "correlated top-k": (lambda w: S.corr_topk_marginals(w[..., :N], w[..., N:], K), _corr_ref,
                         (BATCH, 2 * N - 1), K, lambda m: m.sum(-1)),
    "spanning tree": (lambda w: S.tree_marginals(w, directed=False),
                      lambda w: dg.exact.marginals(w, structure="spanning_tree"), (BATCH, V, V), V - 1,
                      lambda m: torch.triu(m, 1).sum((-2, -1))),
    "arborescence": (lambda w: S.tree_marginals(w, directed=True),
                     lambda w: dg.exact.marginals(w, structure="arborescence"), (BATCH, V, V), V - 1,
                     lambda m: m.sum((-2, -1))),
}


def inputs(name: str, pattern: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    shape = STRUCTURES[name][2]
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    if pattern == "offset":
        w = scale + base
    elif pattern == "spread":
        w = scale * base
    elif pattern == "ties":
        w = scale * torch.randint(-2, 3, shape, generator=gen).double() / 2
    elif pattern == "one_huge":
        w = base.clone()
        w.view(BATCH, -1)[:, 0] = scale
    else:
        w = torch.full(shape, scale, dtype=torch.float64)
    if name == "spanning tree":
        w = (w + w.transpose(-1, -2)) / 2
    return w.float()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="results/reliability/dp_precision.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# Float32 precision of the structured relaxations\n",
             "Command: `python benchmarks/dp_precision.py`\n",
             f"Environment: {environment('cpu')}\n",
             (__doc__ or "").split("\n\n")[0].replace("\n", " ") + "\n",
             "Each cell: max |marginal error| / max relative error of the sum, over the 20 problems.\n"]
    for name, (op, ref, _, size, total) in STRUCTURES.items():
        rows = []
        for pattern in PATTERNS:
            cells = [pattern]
            for scale in SCALES:
                w = inputs(name, pattern, scale, torch.Generator().manual_seed(0))
                got = op(w).double()
                err = float((got - ref(w.double())).abs().max())
                sum_err = float(((total(got) - size) / size).abs().max())
                cells.append(f"{err:.1e} / {sum_err:.1e}")
            rows.append(cells)
        lines += [f"\n## {name}\n", markdown_table(["pattern", *[f"s = {s:.0e}" for s in SCALES]], rows)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
