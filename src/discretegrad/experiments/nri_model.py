"""The NRI model of the SST graph-layout experiment (Kipf et al. 2018; Paulus et al. 2020):
the factor-graph MLP encoder, the two-edge-type MLP decoder, the loss terms and the edge metrics.

Shapes: ``n`` vertices, ``E = n(n-1)`` directed edges in row-major order of the off-diagonal
entries (edge ``e = (i, j)``, ``i != j``, sends from ``j`` to ``i``); trajectories
``x [B, n, T, 2]``; an undirected graph is a symmetric ``[B, n, n]`` adjacency (0/1, or
relaxed in ``[0, 1]``), read on the ``E`` directed entries for the decoder.

* Encoder (``reference/FACTS.md`` §3.5): node MLP ``2T → h → h``, node→edge (concatenate
  receiver and sender), edge MLP ``2h → h → h`` (kept as a skip), edge→node (sum of incoming
  edges / n), node MLP ``h → h → h``, node→edge, concatenated with the skip, edge MLP
  ``3h → h → h``, linear ``h → 1``: one logit per directed entry. Each MLP is
  linear-ELU-linear-ELU-BatchNorm; Xavier-normal weights, biases 0.1. The logits are symmetrised,
  ``ℓ_ij = ℓ_ji = (ℓ_ij + ℓ_ji)/2`` (:func:`symmetric_logits`).
* Decoder (``skip_first False``): a message MLP ``4 → h → h`` (ReLU) per edge type, weighted by
  ``1 - X_e`` ("no edge") and ``X_e`` ("edge"), summed over the incoming edges; the update is
  ``x + MLP([x; messages])`` (``2 + h → h → h → 2``, ReLU). :meth:`Decoder.forward` rolls out
  ``prediction_steps`` steps from each block start without teacher forcing (1: teacher forcing).
* Loss: :func:`gaussian_nll` (variance 5e-5, no constant, divided by n) and :func:`gumbel_kl`
  (``KL(Gumbel(ℓ, 1) ‖ Gumbel(0, 1)) = ℓ + e^{-ℓ} - 1`` over the ``E`` directed entries, / n).
* Metrics: :func:`edge_precision_recall` (per graph, then averaged, over the directed entries,
  with the interpretation of the unlabelled edge type -- ``X`` or ``1 - X`` -- of higher mean
  precision, as the authors' code does).
"""

from __future__ import annotations

import torch
from torch import nn

from discretegrad.experiments.common.nets import init_linear

__all__ = ["Encoder", "Decoder", "directed_index", "symmetric_logits", "directed_entries", "to_adjacency",
           "gaussian_nll", "gumbel_kl", "elbo_terms", "edge_precision_recall", "NLL_VARIANCE"]

NLL_VARIANCE = 5e-5


def directed_index(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(receivers, senders)`` of the ``n(n-1)`` off-diagonal entries in row-major order."""
    off = ~torch.eye(n, dtype=torch.bool, device=device)
    rows, cols = off.nonzero(as_tuple=True)
    return rows, cols


def symmetric_logits(edge_logits: torch.Tensor, n: int) -> torch.Tensor:
    """Directed logits ``[B, E]`` → symmetric ``[B, n, n]`` with ``(ℓ_ij + ℓ_ji)/2``, zero diagonal."""
    rows, cols = directed_index(n, edge_logits.device)
    full = edge_logits.new_zeros(*edge_logits.shape[:-1], n, n)
    full[..., rows, cols] = edge_logits
    return 0.5 * (full + full.transpose(-1, -2))


def directed_entries(adj: torch.Tensor) -> torch.Tensor:
    """``[..., n, n]`` → ``[..., E]`` (the off-diagonal entries, row-major)."""
    rows, cols = directed_index(adj.shape[-1], adj.device)
    return adj[..., rows, cols]


def to_adjacency(upper: torch.Tensor, n: int) -> torch.Tensor:
    """Values on the ``n(n-1)/2`` upper-triangle edges (``torch.triu_indices`` order) → symmetric ``[..., n, n]``."""
    rows, cols = torch.triu_indices(n, n, 1, device=upper.device).unbind(0)
    adj = upper.new_zeros(*upper.shape[:-1], n, n)
    adj[..., rows, cols] = upper
    return adj + adj.transpose(-1, -2)


def _xavier_linear(a: int, b: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, a, b)
    with torch.no_grad():
        nn.init.xavier_normal_(layer.weight, generator=generator)
        layer.bias.fill_(0.1)
    return layer


class _EncoderMLP(nn.Module):
    """Linear-ELU-linear-ELU, then BatchNorm over all leading dims."""

    def __init__(self, a: int, h: int, b: int, generator: torch.Generator):
        super().__init__()
        self.fc1, self.fc2 = _xavier_linear(a, h, generator), _xavier_linear(h, b, generator)
        self.bn = nn.BatchNorm1d(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.elu(self.fc2(nn.functional.elu(self.fc1(x))))
        return self.bn(y.reshape(-1, y.shape[-1])).view_as(y)


class Encoder(nn.Module):
    """NRI's factor-graph MLP encoder: trajectories ``[B, n, T, 2]`` → directed logits ``[B, E]``."""

    def __init__(self, n: int, steps: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.n = n
        self.mlp1 = _EncoderMLP(2 * steps, hidden, hidden, generator)
        self.mlp2 = _EncoderMLP(2 * hidden, hidden, hidden, generator)
        self.mlp3 = _EncoderMLP(hidden, hidden, hidden, generator)
        self.mlp4 = _EncoderMLP(3 * hidden, hidden, hidden, generator)
        self.out = _xavier_linear(hidden, 1, generator)
        rec, send = directed_index(n)
        self.register_buffer("rec", rec, persistent=False)
        self.register_buffer("send", send, persistent=False)

    def _node2edge(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, self.rec], x[:, self.send]], -1)

    def _edge2node(self, e: torch.Tensor) -> torch.Tensor:
        out = e.new_zeros(e.shape[0], self.n, e.shape[-1])
        return out.index_add(1, self.rec, e) / self.n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp1(x.flatten(2))
        skip = self.mlp2(self._node2edge(h))
        h = self.mlp3(self._edge2node(skip))
        e = self.mlp4(torch.cat([self._node2edge(h), skip], -1))
        return self.out(e).squeeze(-1)


class Decoder(nn.Module):
    """NRI's MLP decoder with two edge types ("no edge", "edge"), both with a message MLP;
    ``tied=True`` starts the "edge" type's message MLP as a copy of the "no edge" type's (the same
    draws are made either way, so the other layers do not depend on ``tied``)."""

    def __init__(self, n: int, hidden: int, generator: torch.Generator, dims: int = 2, tied: bool = False):
        super().__init__()
        self.n = n

        def lin(a: int, b: int) -> nn.Linear:
            return init_linear(nn.utils.skip_init(nn.Linear, a, b), generator)

        self.msg1 = nn.ModuleList([lin(2 * dims, hidden) for _ in range(2)])
        self.msg2 = nn.ModuleList([lin(hidden, hidden) for _ in range(2)])
        if tied:
            with torch.no_grad():
                for layers in (self.msg1, self.msg2):
                    layers[1].load_state_dict(layers[0].state_dict())
        self.out = nn.Sequential(lin(dims + hidden, hidden), nn.ReLU(), lin(hidden, hidden), nn.ReLU(),
                                 lin(hidden, dims))
        rec, send = directed_index(n)
        self.register_buffer("rec", rec, persistent=False)
        self.register_buffer("send", send, persistent=False)

    def step(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One step: positions ``[B, n, 2]``, edge-type weights ``[B, E, 2]`` → next positions."""
        pre = torch.cat([x[:, self.rec], x[:, self.send]], -1)
        msg = 0
        for t in range(2):
            m = torch.relu(self.msg2[t](torch.relu(self.msg1[t](pre))))
            msg = msg + m * weights[..., t:t + 1]
        agg = msg.new_zeros(x.shape[0], self.n, msg.shape[-1]).index_add(1, self.rec, msg)
        return x + self.out(torch.cat([x, agg], -1))

    def forward(self, x: torch.Tensor, edges: torch.Tensor, prediction_steps: int) -> torch.Tensor:
        """Predictions of frames ``1..T-1`` ``[B, n, T-1, 2]`` from trajectories ``x [B, n, T, 2]``
        and directed edge values ``edges [B, E]`` in ``[0, 1]``: from each block start
        ``0, p, 2p, ...`` (``p = prediction_steps``) the decoder rolls out ``p`` steps on its own
        predictions."""
        weights = torch.stack([1 - edges, edges], -1)
        steps = x.shape[2]
        preds = []
        for start in range(0, steps - 1, prediction_steps):
            cur = x[:, :, start]
            for _ in range(min(prediction_steps, steps - 1 - start)):
                cur = self.step(cur, weights)
                preds.append(cur)
        return torch.stack(preds, 2)


def gaussian_nll(pred: torch.Tensor, target: torch.Tensor, variance: float = NLL_VARIANCE) -> torch.Tensor:
    """``Σ (pred - target)² / (2 variance)`` over vertices, time and dims, divided by n: ``[..., B]``."""
    n = pred.shape[-3]
    return (pred - target).square().sum((-1, -2, -3)) / (2 * variance) / n


def gumbel_kl(sym_logits: torch.Tensor) -> torch.Tensor:
    """``Σ_e (ℓ_e + exp(-ℓ_e) - 1) / n`` over the directed entries of symmetric logits ``[B, n, n]``.

    ``exp(-ℓ)`` is computed as such (the KL of a very negative logit is large, and finite while
    ``-ℓ`` is below the dtype's log-max; beyond it, the loss is rightly infinite)."""
    n = sym_logits.shape[-1]
    ell = directed_entries(sym_logits)
    return (ell + torch.expm1(-ell)).sum(-1) / n


def _precision_recall(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tp = (pred * true).sum(-1)
    n_pred, n_true = pred.sum(-1), true.sum(-1)
    precision = torch.where(n_pred > 0, tp / n_pred.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(n_true > 0, tp / n_true.clamp_min(1), torch.zeros_like(tp))
    return precision, recall


def edge_precision_recall(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Edge precision and recall of hard graphs ``pred`` against ``true`` (both ``[B, n, n]`` 0/1).

    Per graph over the ``n(n-1)`` directed entries (a graph that predicts no edge has precision
    0), averaged over graphs, for both readings of the edge type: ``pred`` ("edge" = 1) and
    ``1 - pred`` (the decoder could have used the other type for edges). Returns ``precision`` and
    ``recall`` of the reading with the higher mean precision (ties: ``pred``), ``flipped`` (1.0
    when that is ``1 - pred``), and both readings' values."""
    p, t = directed_entries(pred).double(), directed_entries(true).double()
    prec, rec = _precision_recall(p, t)
    prec_f, rec_f = _precision_recall(1 - p, t)
    out = {"precision_as_is": float(prec.mean()), "recall_as_is": float(rec.mean()),
           "precision_flipped": float(prec_f.mean()), "recall_flipped": float(rec_f.mean())}
    flipped = out["precision_flipped"] > out["precision_as_is"]
    key = "flipped" if flipped else "as_is"
    out.update(precision=out[f"precision_{key}"], recall=out[f"recall_{key}"], flipped=float(flipped))
    return out


def elbo_terms(decoder: Decoder, x: torch.Tensor, edges: torch.Tensor, sym_logits: torch.Tensor,
               prediction_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nll [B], kl [B])`` of trajectories ``x`` under directed edge values ``edges [B, E]``."""
    pred = decoder(x, edges, prediction_steps)
    return gaussian_nll(pred, x[:, :, 1:]), gumbel_kl(sym_logits)

