"""Latent-tree sentence encoders for ListOps: the Gumbel Tree-LSTM of Choi et al. (2018), whose
parent choice at each level is a categorical latent variable, and the same leaf encoder with a
latent non-projective dependency tree (an arborescence) read by a graph network.

**Gumbel Tree-LSTM** (:class:`TreeLSTMEncoder`). A leaf LSTM turns tokens into states
``(h_i, c_i)``. A level with ``m`` nodes forms all ``m - 1`` adjacent parents at once with one
composition ``[i, f_l, f_r, u, o] = W [h_l; h_r] + b``,
``c = c_l σ(f_l + 1) + c_r σ(f_r + 1) + tanh(u) σ(i)``, ``h = σ(o) tanh(c)``, scores each by
``q·h / √H`` with a learned query ``q``, and a ``select(scores, level)`` callback returns a one-hot
choice ``[B, m - 1]`` (an estimator's straight-through sample in training, the argmax in
evaluation, a given parse in tests; it also gets the unmasked scores, ``raw``). The new level
keeps the nodes left of the choice, puts the parent at it and shifts the rest left
(cumulative-sum masks, so the choice's gradient reaches all three terms). Padded candidates are masked with ``-inf`` scores; a sequence that is already
one node keeps its state (its row gets one finite dummy score, and the choice is discarded).
The last level has one candidate and needs no choice. Everything is vectorised over the batch
and over candidate pairs; the only Python loop is over the ``L - 1`` levels.

**Arborescence** (:class:`ArborescenceEncoder`, beyond the paper; SST's ListOps framing). Edge
scores ``s_ij = (W_h h_i)·(W_d h_j)/√H`` for the edge ``i → j`` (``i`` the head), root = token 0,
one latent arborescence ``A`` from a callback (the SST straight-through sample in training,
the maximum arborescence in evaluation); then ``K`` shared graph layers with a pre-norm
residual path, ``X = LayerNorm(E)``, ``E ← E + f(X) + A g(X)`` (each head adds its children's
messages), and the root's ``LayerNorm(E)`` is the sentence vector (``residual=False``: the plain
``E ← LayerNorm(f(E) + A g(E))``, which at the default 8 layers did not learn ListOps in 1,653
steps). Padded vertices hang off the root and are cut out of ``A``.

Dropout draws from an explicit generator (:func:`dropout`), as every random draw here does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["dropout", "LeafLSTM", "TreeLSTMEncoder", "ArborescenceEncoder", "Classifier", "masked_scores", "score_masks",
           "arborescence_scores", "MASK_MARGIN"]

MASK_MARGIN = 60.0
"""Arborescence masking: forbidden edges score this far below the lowest allowed score (finite,
as the tree solvers require; a Gumbel difference beyond 60 has probability below 1e-26)."""


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None, training: bool) -> torch.Tensor:
    """Inverted dropout with keep probability ``1 - p``, drawn from ``generator``."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class LeafLSTM(nn.Module):
    """Embedding (N(0, 0.01)) and a unidirectional LSTM (``W_ih`` Kaiming-normal, ``W_hh``
    orthogonal, biases 0, forget-gate bias 1) over the tokens: states ``h, c [B, L, H]``."""

    def __init__(self, vocab: int, word_dim: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.embedding = nn.utils.skip_init(nn.Embedding, vocab, word_dim)
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, word_dim))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(4 * hidden))  # gates i, f, g, o (PyTorch's order)
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, 0.0, 0.01, generator=generator)
            nn.init.kaiming_normal_(self.weight_ih, generator=generator)
            nn.init.orthogonal_(self.weight_hh, generator=generator)
            self.bias[hidden:2 * hidden] = 1.0

    def forward(self, tokens: torch.Tensor, p_drop: float, generator: torch.Generator | None):
        x = dropout(self.embedding(tokens), p_drop, generator, self.training)
        # one step at a time: the tree needs every cell state c_i (nn.LSTM returns only the last)
        h = x.new_zeros(x.shape[0], self.hidden)
        c = torch.zeros_like(h)
        hs, cs = [], []
        pre = x @ self.weight_ih.T + self.bias  # [B, L, 4H], all input projections at once
        for t in range(x.shape[1]):
            i, f, g, o = (pre[:, t] + h @ self.weight_hh.T).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            cs.append(c)
        return torch.stack(hs, 1), torch.stack(cs, 1)


def score_masks(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """Additive masks ``[L - 1, B, L - 1]`` for every level's candidate scores: 0 on the valid
    candidates (``j < n - level - 1``), ``-inf`` elsewhere, except that a row without any valid
    candidate (a sequence already reduced to one node) keeps a finite 0 at column 0, so every
    row is a valid categorical (its choice is discarded)."""
    level = torch.arange(max(L - 1, 0), device=lengths.device).view(-1, 1, 1)
    j = torch.arange(max(L - 1, 0), device=lengths.device).view(1, 1, -1)
    n_valid = lengths.view(1, -1, 1) - level - 1
    keep = (j < n_valid) | ((n_valid <= 0) & (j == 0))
    zero = torch.zeros((), device=lengths.device)
    return torch.where(keep, zero, torch.full((), -math.inf, device=lengths.device))


def masked_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``scores`` with ``-inf`` on invalid candidates and a finite 0 at column 0 of a row without
    any valid one (the per-level form of :func:`score_masks`)."""
    empty = ~valid.any(-1, keepdim=True)
    col0 = torch.zeros_like(valid)
    col0[:, 0] = True
    keep = valid | (empty & col0)
    return torch.where(keep, torch.where(valid, scores, torch.zeros_like(scores)),
                       torch.full_like(scores, -math.inf))


Select = Callable[..., torch.Tensor]
"""``select(masked scores [B, m - 1], level, raw=scores) -> one-hot [B, m - 1]`` (possibly with a
gradient); ``raw`` holds the same scores before masking (padded candidates keep their computed
scores), for a selection that masks after its softmax as GST's STGS does."""


class TreeLSTMEncoder(nn.Module):
    """Choi et al.'s Gumbel Tree-LSTM over the leaf states (module docstring)."""

    def __init__(self, hidden: int, generator: torch.Generator):
        super().__init__()
        self.hidden = hidden
        self.compose = nn.utils.skip_init(nn.Linear, 2 * hidden, 5 * hidden)
        self.query = nn.Parameter(torch.empty(hidden))
        with torch.no_grad():
            nn.init.orthogonal_(self.compose.weight, generator=generator)
            self.compose.bias.zero_()
            nn.init.normal_(self.query, 0.0, 0.01, generator=generator)

    def _compose(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, fl, fr, u, o = self.compose(torch.cat([h[:, :-1], h[:, 1:]], -1)).chunk(5, -1)
        c_new = c[:, :-1] * torch.sigmoid(fl + 1) + c[:, 1:] * torch.sigmoid(fr + 1) + torch.tanh(u) * torch.sigmoid(i)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def forward(self, h: torch.Tensor, c: torch.Tensor, lengths: torch.Tensor,
                select: Select) -> tuple[torch.Tensor, torch.Tensor]:
        """Root states ``[B, H]`` and the merge index per level ``[B, L - 1]`` (``-1`` once a
        sequence is a single node)."""
        B, L, _ = h.shape
        merges = torch.full((B, max(L - 1, 0)), -1, dtype=torch.long, device=h.device)
        masks = score_masks(lengths, L).to(h.dtype)
        n_left = lengths - 1  # merges still to do, before each level
        for level in range(L - 1):
            m = L - level  # nodes at this level (padded)
            cand_h, cand_c = self._compose(h, c)  # [B, m - 1, H]
            active = n_left > level  # [B]: still more than one node
            if m == 2:
                sel = torch.ones(B, 1, dtype=h.dtype, device=h.device)
            else:
                scores = (cand_h @ self.query) / math.sqrt(self.hidden)
                sel = select(scores + masks[level, :, : m - 1], level, raw=scores)
            merges[:, level] = torch.where(active, sel.detach().argmax(-1), torch.full_like(lengths, -1))
            cum = sel.cumsum(-1)
            left, right = (1 - cum).unsqueeze(-1), (cum - sel).unsqueeze(-1)
            s = sel.unsqueeze(-1)
            new_h = left * h[:, :-1] + s * cand_h + right * h[:, 1:]
            new_c = left * c[:, :-1] + s * cand_c + right * c[:, 1:]
            keep = active.view(B, 1, 1)
            h = torch.where(keep, new_h, h[:, :-1])
            c = torch.where(keep, new_c, c[:, :-1])
        return h[:, 0], merges


def arborescence_scores(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Edge scores ``[B, L, L]`` (``i → j``) with padding handled by finite masks: a padded vertex
    can only hang off the root (vertex 0) and never heads a real vertex."""
    B, L, _ = scores.shape
    valid = torch.arange(L, device=scores.device) < lengths.unsqueeze(-1)  # [B, L]
    low = scores.detach().amin((-1, -2), keepdim=True) - MASK_MARGIN
    both = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    pad_col = ~valid.unsqueeze(-2)  # column j padded
    from_root = torch.zeros(L, 1, dtype=torch.bool, device=scores.device)
    from_root[0] = True
    allowed = both | (pad_col & from_root)
    return torch.where(allowed, torch.where(both, scores, low + MASK_MARGIN), low)


class ArborescenceEncoder(nn.Module):
    """Latent dependency tree over the leaf states, read by ``layers`` shared graph layers."""

    def __init__(self, hidden: int, layers: int, generator: torch.Generator, residual: bool = True):
        super().__init__()
        self.hidden, self.layers, self.residual = hidden, layers, residual
        lin = lambda a, b: _kaiming_linear(a, b, generator)  # noqa: E731
        self.head, self.dep = lin(hidden, hidden), lin(hidden, hidden)
        self.self_mlp = nn.Sequential(lin(hidden, hidden), nn.ReLU(), lin(hidden, hidden))
        self.child_mlp = nn.Sequential(lin(hidden, hidden), nn.ReLU(), lin(hidden, hidden))
        self.norm = nn.LayerNorm(hidden)
        if residual:
            self.out_norm = nn.LayerNorm(hidden)

    def edge_scores(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s = self.head(h) @ self.dep(h).transpose(-1, -2) / math.sqrt(self.hidden)
        return arborescence_scores(s, lengths)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor,
                select: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Root vectors ``[B, H]`` and the (hard, detached) adjacency ``[B, L, L]``."""
        adj = select(self.edge_scores(h, lengths))
        valid = (torch.arange(h.shape[1], device=h.device) < lengths.unsqueeze(-1)).to(h.dtype)
        a = adj * valid.unsqueeze(-1) * valid.unsqueeze(-2)
        e = h
        for _ in range(self.layers):
            if self.residual:  # pre-norm residual: the stream keeps the leaf state, each layer adds to it
                x = self.norm(e)
                e = e + self.self_mlp(x) + a @ self.child_mlp(x)
            else:
                e = self.norm(self.self_mlp(e) + a @ self.child_mlp(e))
        return (self.out_norm(e[:, 0]) if self.residual else e[:, 0]), adj.detach()


def _kaiming_linear(a: int, b: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.utils.skip_init(nn.Linear, a, b)
    with torch.no_grad():
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
        layer.bias.zero_()
    return layer


class Classifier(nn.Module):
    """dropout → Linear H→H (Kaiming) + ReLU → dropout → Linear H→classes (uniform ±0.002), biases 0."""

    def __init__(self, hidden: int, classes: int, generator: torch.Generator):
        super().__init__()
        self.hidden_layer = _kaiming_linear(hidden, hidden, generator)
        self.out = nn.utils.skip_init(nn.Linear, hidden, classes)
        with torch.no_grad():
            nn.init.uniform_(self.out.weight, -0.002, 0.002, generator=generator)
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor, p_drop: float, generator: torch.Generator | None) -> torch.Tensor:
        x = torch.relu(self.hidden_layer(dropout(x, p_drop, generator, self.training)))
        return self.out(dropout(x, p_drop, generator, self.training))
