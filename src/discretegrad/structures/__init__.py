"""Combinatorial solvers, log-partition dynamic programs and exact laws for the structured estimators.

Private to the library (the public ops live in :mod:`discretegrad.subsets` and
:mod:`discretegrad.trees`; brute-force references in :mod:`discretegrad.exact`): small functions on
detached or differentiable tensors, batched over leading dims, on the input's device. One module
per algorithm:

* :mod:`.logspace`: the finite ``-inf`` stand-in, a double-backward-safe ``logaddexp``, and
  :func:`~.logspace.gradient` ("inference is backprop": marginals as ``∂ log Z``, under
  ``no_grad``/``inference_mode`` too);
* :mod:`.semiring`: the one chain DP over (item, count, state) in the log or max semiring
  (:func:`~.semiring.chain_score`) and its max-semiring traceback (:func:`~.semiring.chain_argmax`);
* :mod:`.topk_scan`: the fast top-k marginals (count-centred scans over the items);
* :mod:`.corr_marginals`: the fast correlated top-k marginals (posterior pass, closed-form backward);
* :mod:`.topk`: k-subset solvers and Gibbs marginals built on it: :func:`topk_hard`,
  :func:`topk_marginals`, :func:`corr_topk_hard`, :func:`corr_topk_marginals`;
* :mod:`.lml`: the limited multilabel projection :func:`lml` (bisection, implicit backward);
* :mod:`.kruskal`: maximum spanning tree :func:`prim` (used) and :func:`kruskal` (reference), the edge numbering;
* :mod:`.edmonds`: maximum spanning arborescence :func:`edmonds` (Chu-Liu/Edmonds);
* :mod:`.eager`: :func:`~.eager.eager_solver`, which runs those two solvers eagerly on the whole
  batch under ``torch.func.vmap`` (they loop on data);
* :mod:`.kirchhoff`: tree marginals by one matrix inverse where its measured error bound holds;
* :mod:`.matrix_tree`: :func:`tree_log_partition` and :func:`tree_marginals` (matrix-tree theorem
  by subtraction-free elimination, undirected and directed; the marginals by :mod:`.kirchhoff` first);
* :mod:`.enumeration`: :func:`all_ksubsets`, :func:`all_spanning_trees`, :func:`all_arborescences`;
* :mod:`.plackett_luce`: the Plackett-Luce prefix log-probability :func:`~.plackett_luce.log_prob`
  and the Gumbel-top-k set law :func:`~.plackett_luce.subset_log_prob`;
* :mod:`.kruskal_law`: :func:`kruskal_law`, the exact law of the Gumbel-perturbed Kruskal tree.
"""

from __future__ import annotations

from discretegrad.structures.edmonds import edmonds
from discretegrad.structures.enumeration import all_arborescences, all_ksubsets, all_spanning_trees
from discretegrad.structures.kruskal import kruskal, prim
from discretegrad.structures.kruskal_law import kruskal_law
from discretegrad.structures.lml import lml
from discretegrad.structures.matrix_tree import tree_log_partition, tree_marginals
from discretegrad.structures.topk import corr_topk_hard, corr_topk_marginals, topk_hard, topk_marginals

__all__ = [
    "topk_hard",
    "topk_marginals",
    "corr_topk_hard",
    "corr_topk_marginals",
    "lml",
    "kruskal",
    "prim",
    "edmonds",
    "tree_marginals",
    "tree_log_partition",
    "all_ksubsets",
    "all_spanning_trees",
    "all_arborescences",
    "kruskal_law",
]
