"""Forward+backward time of the structured SMT/SST ops (k-subsets, spanning trees, arborescences).

Each time is reported as a ratio to a plain ``torch.softmax`` over the same number of logits
(same batch), measured in the same run (never as an absolute target). Sizes from issue 5:
top-k n = 100, k = 10, batch 1000; trees n = 10, batch 128 and n = 50, batch 32.

The SST authors' way of computing each relaxation (``sst_baseline.py``) runs side by side, and for
top-k the fast paths as they were at revision ``PREVIOUS`` (loaded with ``git show``).

    python benchmarks/bench_structured.py [--device cuda] [--reps 20] [--only trees] [--out results/benchmarks/structured.md]

With ``--only topk`` or ``--only trees`` only those groups run, and their sections replace the same
sections of an existing report at ``--out`` (the other sections are kept as they were, under the
report's own command line; each new section carries its command and environment).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

import discretegrad as dg
from discretegrad.structures.matrix_tree import tree_marginals_elimination, tree_marginals_reference
from discretegrad.structures.topk import topk_marginals_reference
from discretegrad._format import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
import sst_baseline  # noqa: E402
from _env import environment, interleaved, module_at, write_report  # noqa: E402


def _softmax(x, generator=None):
    return torch.softmax(x, -1)


def _sym(x):
    return (x + x.transpose(-1, -2)) / 2


def timed(fn, make, device, seed=0):
    """A closure running one forward + backward of ``sum(v * fn(x))`` (fresh noise each call)."""
    x = make().to(device).requires_grad_(True)
    v = torch.randn(x.shape, device=device, generator=torch.Generator(device=device).manual_seed(1))
    gen = torch.Generator(device=device).manual_seed(seed)

    def run():
        out = fn(x, gen)
        if out.requires_grad:
            (out * v).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


PIECE = "piece (forward only, no gradient): "
"""Rows that time one part of the spanning-tree op alone, for the floors (no backward to run)."""


def _sst_topk(marginals):
    """The SST authors' hard top-k op: top-k of U forward, their marginals' finite-difference backward."""
    def op(x, g, k):
        u = x + dg.noise.gumbel_like(x, generator=g)
        return _straight_through(dg.structures.topk_hard(u.detach(), k), marginals(u, k))
    return op


def _straight_through(hard, soft):
    return hard + (soft - soft.detach())


SST_TOPK = "SST authors: NumPy float64 DP + central finite differences (entropy, hard)"
SST_CORR = "SST authors: NumPy float64 DP + central finite differences (corr, hard, zero pair logits)"
SST_TREE = "SST authors: Kruskal + clip 15, exp, slogdet, autograd (spanning tree, hard)"
SST_TREE_RELAXED = "SST authors: clip 15, exp, slogdet, autograd (spanning tree, relaxed: no Kruskal)"
BEFORE_TOPK = "before issue 10: topk entropy (hard), log-space chain DP + autograd (topk_marginals_reference)"
BEFORE_TREE = "before issue 10: spanning_tree (hard), Kruskal + log-space elimination (tree_marginals_reference)"
ELIMINATION_TREE = ("previous fast path: spanning_tree (hard), Prim + elimination marginals by autograd "
                    "(tree_marginals_elimination)")
ELIMINATION_ARB = ("previous fast path: arborescence (relaxed), elimination marginals by autograd "
                   "(tree_marginals_elimination)")
PREVIOUS = "b5c09d9"
"""The revision of the top-k fast paths before the scans' and the correlated DP's layout change (issue 10, P4)."""
PREVIOUS_TOPK = f"previous fast path: topk entropy (hard), scans over [k, L, B] (topk_scan at {PREVIOUS})"
PREVIOUS_CORR = f"previous fast path: topk corr (hard), the chain DP with the batch inside (corr_marginals at {PREVIOUS})"
SECOND_CORR_REV = "f0a13bd"
"""The correlated top-k fast path before its third pass (rolling state buffers, no logaddexp; issue 10, P4)."""
SECOND_CORR = (f"second pass: topk corr (hard), the chain DP batch-last with stored states "
               f"(corr_marginals, chain_argmax at {SECOND_CORR_REV})")
BASELINES = {SST_CORR: ("topk corr", PREVIOUS_CORR, SECOND_CORR), SST_TOPK: ("topk", "l2x", "softsub", BEFORE_TOPK, PREVIOUS_TOPK),
             SST_TREE_RELAXED: ("spanning_tree (relaxed)",),
             SST_TREE: ("spanning_tree", BEFORE_TREE, ELIMINATION_TREE)}
"""Which rows each SST-authors row is the speed-up baseline for (by name prefix)."""


def topk_cases(k):
    s = dg.subsets
    sst = _sst_topk(sst_baseline.topk_marginals)
    sst_corr = _sst_topk(lambda u, kk: sst_baseline.corr_marginals(
        u, torch.zeros_like(u[..., 1:]) + dg.noise.gumbel_like(u[..., 1:], generator=torch.Generator().manual_seed(2)), kk))
    before = _sst_topk(topk_marginals_reference)
    previous_scan = module_at(PREVIOUS, "src/discretegrad/structures/topk_scan.py", "previous_topk_scan")
    previous = _sst_topk(previous_scan.scan_marginals)
    previous_corr = module_at(PREVIOUS, "src/discretegrad/structures/corr_marginals.py", "previous_corr_marginals")
    previous_chain = module_at(PREVIOUS, "src/discretegrad/structures/semiring.py", "previous_semiring")
    second_corr = module_at(SECOND_CORR_REV, "src/discretegrad/structures/corr_marginals.py", "second_corr_marginals")
    second_chain = module_at(SECOND_CORR_REV, "src/discretegrad/structures/semiring.py", "second_semiring")

    def corr_at(marginals, chain):  # the registered op at a former revision, tau = 1: the noise, the same two calls
        def op(x, g):
            u = x + dg.noise.gumbel_like(x, generator=g)
            v = dg.noise.gumbel_like(x[..., 1:], generator=g)
            soft = marginals.corr_marginals(u, v, k, dg.structures.topk.corr_topk_marginals_reference)
            return _straight_through(chain.chain_argmax(u, k, v), soft)
        return op

    return {
        SST_TOPK: lambda x, g: sst(x, g, k),
        BEFORE_TOPK: lambda x, g: before(x, g, k),
        PREVIOUS_TOPK: lambda x, g: previous(x, g, k),
        SST_CORR: lambda x, g: sst_corr(x, g, k),
        PREVIOUS_CORR: corr_at(previous_corr, previous_chain),
        SECOND_CORR: corr_at(second_corr, second_chain),
        "topk entropy (hard, SST grad)": lambda x, g: s.topk(x, k, generator=g),
        "topk entropy (relaxed)": lambda x, g: s.topk(x, k, hard=False, generator=g),
        "topk binary_entropy (hard)": lambda x, g: s.topk(x, k, relaxation="binary_entropy", generator=g),
        "topk corr (hard, zero pair logits)": lambda x, g: s.topk(
            x, k, relaxation="corr", pair_logits=torch.zeros_like(x[..., 1:]), generator=g),
        "l2x": lambda x, g: s.l2x(x, k, generator=g),
        "softsub": lambda x, g: s.softsub(x, k, generator=g),
    }


def tree_cases(n):
    t = dg.trees
    i, j = torch.triu_indices(n, n, 1)

    def v_minus_1(x, g):  # the SST paper's "|V|-1 edges" baseline: top-(n-1) over undirected edges
        xs = _sym(x)
        sel = dg.subsets.topk(xs[..., i, j], n - 1, generator=g)
        adj = torch.zeros_like(x)
        adj[..., i, j] = sel
        return adj + adj.transpose(-1, -2)

    def sst_tree(x, g):
        u = _sym(x) + dg.noise.symmetric_gumbel_like(x, generator=g)
        mu = sst_baseline.tree_marginals(u)
        return _straight_through(dg.structures.kruskal(u), mu + mu.transpose(-1, -2))

    def sst_relaxed(x, g):
        mu = sst_baseline.tree_marginals(_sym(x) + dg.noise.symmetric_gumbel_like(x, generator=g))
        return mu + mu.transpose(-1, -2)

    def before_tree(x, g):
        u = _sym(x) + dg.noise.symmetric_gumbel_like(x, generator=g)
        return _straight_through(dg.structures.kruskal(u), tree_marginals_reference(u, directed=False))

    def elimination_tree(x, g):
        u = _sym(x) + dg.noise.symmetric_gumbel_like(x, generator=g)
        return _straight_through(dg.structures.prim(u), tree_marginals_elimination(u, directed=False))

    def elimination_arb(x, g):
        return tree_marginals_elimination(x + dg.noise.gumbel_like(x, generator=g), directed=True)

    def laplacians(x):
        a = torch.exp(_sym(x.detach()).double() - 3.0)
        return torch.diag_embed(a.sum(-2) + 1.0) - a

    def noise_and_checks(x, g):
        u = dg.trees.check_edge_logits(_sym(x.detach()), symmetric=True)
        return u + dg.noise.symmetric_gumbel_like(u, generator=g)

    return {
        SST_TREE: sst_tree,
        PIECE + "input checks + Gumbel noise": noise_and_checks,
        PIECE + "Prim (the hard sample)": lambda x, g: dg.structures.prim(_sym(x.detach())),
        PIECE + "float64 inverse of the Laplacians (torch.linalg.inv_ex)":
            lambda x, g: torch.linalg.inv_ex(laplacians(x))[0],
        SST_TREE_RELAXED: sst_relaxed,
        BEFORE_TREE: before_tree,
        ELIMINATION_TREE: elimination_tree,
        "spanning_tree (hard: Prim + SST grad)": lambda x, g: t.spanning_tree(_sym(x), generator=g),
        "spanning_tree (relaxed)": lambda x, g: t.spanning_tree(_sym(x), hard=False, generator=g),
        "arborescence (hard: Chu-Liu/Edmonds + SST grad)": lambda x, g: t.arborescence(x, generator=g),
        ELIMINATION_ARB: elimination_arb,
        "arborescence (relaxed)": lambda x, g: t.arborescence(x, hard=False, generator=g),
        "V-1 edges baseline (topk entropy over the edges, k = n-1)": v_minus_1,
    }


def _speedup(name, results):
    for base, prefixes in BASELINES.items():
        if base in results and name != base and name.startswith(prefixes):
            return f"{results[base][1] / results[name][1]:.1f}"
    return ""


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["topk", "trees"], default=None)
    p.add_argument("--out", default="results/benchmarks/structured.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = (f"python benchmarks/bench_structured.py --device {args.device} --reps {args.reps} "
               f"--threads {args.threads}" + (f" --only {args.only}" if args.only else ""))
    lines = ["# Structured SMT/SST ops: forward+backward time\n",
             f"Command: `{command}`\n",
             f"Environment: {environment(args.device)}\n",
             "Time of one forward and backward of `sum(v * op(x))`, float32 logits, fresh noise each call. "
             "Interleaved repeats: one warm-up each, then `--reps` rounds that run every variant of a group in "
             "rotating order, so contention on the shared machine (2 cores, other jobs) hits all variants alike; "
             "the minimum is the better estimate of the intrinsic cost. 'x softmax' divides by `torch.softmax` "
             "over the same logits tensor (forward + backward) in the same rounds; 'speed-up over SST' divides "
             "the SST authors' way of computing the same relaxation (`benchmarks/sst_baseline.py`: a NumPy "
             "float64 forward-backward DP with a central finite-difference backward for top-k, the clipped "
             "`slogdet` with autograd for trees) by the row (minima).\n"]
    groups = [
        ("top-k: logits [1000, 100], k = 10", lambda: torch.randn(1000, 100), lambda: topk_cases(10)),
        ("trees: n = 10, batch 128 (edge logits [128, 10, 10])", lambda: torch.randn(128, 10, 10),
         lambda: tree_cases(10)),
        ("trees: n = 50, batch 32 (edge logits [32, 50, 50])", lambda: torch.randn(32, 50, 50),
         lambda: tree_cases(50)),
    ]
    if args.only:
        groups = [group for group in groups if group[0].startswith("top-k" if args.only == "topk" else "trees")]
    sections = {}
    softmax = "baseline: torch.softmax over the same logits"
    for title, make, cases in groups:
        flat = lambda x, g: _softmax(x.flatten(1), g).reshape(x.shape)  # noqa: E731
        variants = {softmax: timed(flat, make, args.device)}
        variants.update({name: timed(fn, make, args.device) for name, fn in cases().items()})
        results = interleaved(variants, args.reps)
        base_min = results[softmax][1]
        rows = [[name, f"{med * 1e3:.3f}", f"{low * 1e3:.3f}", f"{low / base_min:.0f}", _speedup(name, results)]
                for name, (med, low) in results.items()]
        print(title, flush=True)
        section = [f"\n## {title}\n"]
        if args.only:
            section.append(f"Measured by `{command}`; {environment(args.device)}.\n")
        section.append(markdown_table(["op", "median ms", "min ms", "x softmax (minima)",
                                       "speed-up over SST (minima)"], rows))
        sections[title] = "\n".join(section)
        lines += section
    if args.only and Path(args.out).exists():
        lines = [_splice(Path(args.out).read_text(), sections).rstrip("\n")]
    write_report(lines, args.out)


def _splice(report: str, sections: dict[str, str]) -> str:
    """``report`` with each ``## title`` section named in ``sections`` replaced (others kept)."""
    head, *parts = re.split(r"\n(?=\n## )", report)
    kept = []
    for part in parts:
        title = part.strip().splitlines()[0][3:].strip()
        kept.append(sections.pop(title) if title in sections else part)
    return "\n".join([head, *kept, *sections.values()])


if __name__ == "__main__":
    main()
