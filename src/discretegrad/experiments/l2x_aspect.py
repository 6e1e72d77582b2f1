"""``l2x-aspect``: word-level rationale selection for an aspect rating (the SST paper's L2X table,
BeerAdvocate; Paulus et al. 2020), on a user-supplied data set or on a generated fixture.

Data (:mod:`discretegrad.experiments.data.rationales`): ``--set data=DIR`` reads
``DIR/{train,valid,test}.jsonl`` in the documented format (tokens, aspect ratings in [0, 1],
annotated rationale spans; BeerAdvocate itself is not redistributable), ``data=fixture`` (the
default) generates the fixture in memory (``fixture_*`` settings: planted aspect phrases among
shorter random runs of the same words, where only a long contiguous run gives the rationale
away) and parses it with the same loader. ``aspect`` picks the rating to predict.

Model (the L2X word-level design of Chen et al. 2018, smaller): selector = embedding → Conv1d
(width 3) ReLU → concatenated with its global max-pool → a position-wise layer → one logit per
word (padding gets -inf: a masked item, never selected); with ``corr_topk`` also one logit per
pair of adjacent words, from the two words' features. Predictor = its own embedding, multiplied
by the selection ``z``, summed over positions and divided by ``k``, → hidden ReLU → sigmoid rating. Loss: squared
error of the rating; Adam; the gradient through ``z`` is the relaxation's (:mod:`.common.selection`:
``l2x``, ``softsub``, ``entropy``, ``binary_entropy`` from the registry, ``corr_topk``).

Metrics on the test split, with the deterministic selection (top-k of the logits; the
correlated maximiser for ``corr_topk``): ``mse`` = 100 × mean squared error of the rating (the
poster's scale, ratings in [0, 1]: we read its MSE as ×10⁻²), ``subset_precision`` = % of the
selected words inside the annotated spans (pooled over the annotated test reviews), and
``segments`` = mean number of contiguous runs in a selection (1 = one phrase), ``adjacent`` = % of
the selected words next to another selected word (100 = runs only, 0 = no two touching) and,
for ``corr_topk``, the mean pair logit inside the rationale spans and elsewhere
(``pair_logit_rationale``, ``pair_logit_other``). ``valid_mse`` is logged per epoch. Grid: ``k`` in 5, 10, 15 (the table's columns).

Quick protocol: the fixture (2000 / 200 / 200 reviews of about 134 tokens), 6 epochs, 2 seeds, the
poster's four relaxations (``l2x``, ``softsub``, ``entropy``, ``corr_topk``; the full protocol adds
``binary_entropy``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import torch
from torch import nn

from discretegrad.experiments.common.nets import linear
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.common.selection import (DISTRIBUTION, LOCAL_ESTIMATORS, adjacent, needs_pairs,
                                                       relaxed_loss, segments, subset_precision, test_mask)
from discretegrad.experiments.common.training import train
from discretegrad.experiments.data import rationales as R
from discretegrad.harness.contract import EFFICIENCY, EstimatorChoice, Experiment, RunConfig, RunContext, \
    register_experiment, setting

__all__ = ["EXPERIMENT", "Settings", "Selector", "Predictor", "load_splits"]

RELAXATIONS = ("l2x", "softsub", "entropy", "binary_entropy", "corr_topk")
QUICK_RELAXATIONS = ("l2x", "softsub", "entropy", "corr_topk")  # the poster's table
_PAD = -math.inf


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``l2x-aspect`` protocol (``--set key=value``)."""

    data: str = setting("fixture", "'fixture' (generated) or a directory with {train,valid,test}.jsonl")
    aspect: int = setting(0, "index of the aspect rating to predict", ge=0)
    k: int = setting(10, "words selected per review", ge=1)
    fixture_train: int = setting(2000, "fixture: training reviews", ge=1)
    fixture_valid: int = setting(200, "fixture: validation reviews", ge=1)
    fixture_test: int = setting(200, "fixture: test reviews", ge=1)
    fixture_seed: int = setting(0, "fixture: generator seed", ge=0)
    max_len: int = setting(400, "reviews are truncated to this many tokens", ge=1)
    embed: int = setting(64, "embedding width (selector and predictor)", ge=1)
    hidden: int = setting(64, "hidden width (selector and predictor)", ge=1)
    epochs: int = setting(20, "training epochs", ge=1)
    batch_size: int = setting(50, "reviews per step", ge=1)
    lr: float = setting(1e-3, "Adam learning rate", gt=0)
    tau: float = setting(0.5, "temperature of the relaxation (unless the estimator fixes one)", gt=0)


def _embedding(n: int, d: int, g: torch.Generator) -> nn.Embedding:
    emb = nn.utils.skip_init(nn.Embedding, n, d)
    with torch.no_grad():
        emb.weight.normal_(0.0, 1.0, generator=g)
    return emb


class Selector(nn.Module):
    """Word logits ``θ [B, L]`` (padding -inf) and, with ``pairs``, adjacent-pair logits ``φ [B, L-1]``."""

    def __init__(self, vocab: int, embed: int, hidden: int, pairs: bool, g: torch.Generator):
        super().__init__()
        self.emb = _embedding(vocab, embed, g)
        self.conv = nn.utils.skip_init(nn.Conv1d, embed, hidden, 3, padding=1)
        bound = (3 * embed) ** -0.5
        with torch.no_grad():
            self.conv.weight.uniform_(-bound, bound, generator=g)
            self.conv.bias.uniform_(-bound, bound, generator=g)
        self.mix, self.unary = linear(2 * hidden, hidden, g), linear(hidden, 1, g)
        self.pair = linear(2 * hidden, 1, g) if pairs else None

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = torch.relu(self.conv(self.emb(ids).transpose(1, 2))).transpose(1, 2)  # [B, L, H]
        pooled = h.masked_fill(~valid.unsqueeze(-1), 0.0).amax(1, keepdim=True).expand_as(h)
        z = torch.relu(self.mix(torch.cat([h, pooled], -1)))
        logits = self.unary(z).squeeze(-1).masked_fill(~valid, _PAD)
        if self.pair is None:
            return logits, None
        both = valid[:, 1:] & valid[:, :-1]
        return logits, self.pair(torch.cat([z[:, :-1], z[:, 1:]], -1)).squeeze(-1).masked_fill(~both, 0.0)


class Predictor(nn.Module):
    """The rating in ``(0, 1)`` from the selected words: ``σ(MLP(Σ_i z_i e(w_i) / k))``."""

    def __init__(self, vocab: int, embed: int, hidden: int, k: int, g: torch.Generator):
        super().__init__()
        self.emb, self.k = _embedding(vocab, embed, g), k
        self.hidden, self.out = linear(embed, hidden, g), linear(hidden, 1, g)

    def forward(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # z [..., B, L] -> [..., B]
        bag = (self.emb(ids) * z.unsqueeze(-1)).sum(-2) / self.k
        return torch.sigmoid(self.out(torch.relu(self.hidden(bag))).squeeze(-1))


def pair_logit_means(pair: torch.Tensor, valid: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean pair logit ``φ`` over adjacent pairs of real words inside a rationale span
    (``pair_logit_rationale``) and over the other such pairs (``pair_logit_other``): whether the
    selector learned to join the words of a phrase (positive) rather than only scoring words."""
    both = valid[:, 1:] & valid[:, :-1]
    inside = truth[:, 1:] & truth[:, :-1]
    out = {}
    for name, where in (("pair_logit_rationale", both & inside), ("pair_logit_other", both & ~inside)):
        if bool(where.any()):
            out[name] = float(pair[where].mean())
    return out


def load_splits(data: str, aspect: int, sizes: tuple[int, int, int], seed: int) -> dict[str, list[R.Review]]:
    """The three splits: read from the directory ``data`` (every call: the files may change), or
    the generated fixture (cached per process), which goes through the same parser."""
    if data != "fixture":
        return R.load_rationale_dir(data, aspect)
    if not 0 <= aspect < len(R.ASPECT_WORDS):
        raise ValueError(f"Expected aspect in [0, {len(R.ASPECT_WORDS) - 1}] for the fixture, but got {aspect}")
    return _fixture(sizes, seed)


@functools.lru_cache(maxsize=4)
def _fixture(sizes: tuple[int, int, int], seed: int) -> dict[str, list[R.Review]]:
    return {split: R.parse_reviews((json.dumps(r) for r in records), source=f"fixture {split}")
            for split, records in R.fixture_splits(sizes, seed).items()}


def _splits(p: Settings) -> dict[str, list[R.Review]]:
    return load_splits(p.data, p.aspect, (p.fixture_train, p.fixture_valid, p.fixture_test), p.fixture_seed)


def check(config: RunConfig) -> None:
    _splits(config.settings)  # parses (so verifies) the files before a sweep creates anything


def run(config: RunConfig, ctx: RunContext) -> dict[str, float]:
    p: Settings = config.settings
    device = torch.device(ctx.device)
    splits = _splits(p)
    vocab = R.Vocabulary(splits["train"])
    data = {s: [t.to(device) for t in R.encode(r, vocab, p.aspect, p.max_len)] for s, r in splits.items()}
    length = min(int(d[0].shape[1]) for d in data.values())
    if p.k > length:
        raise ValueError(f"Expected --set k <= {length} (the shortest padded split), but got {p.k}")
    g_init = derived_generator(config.seed, "init")
    selector = Selector(len(vocab), p.embed, p.hidden, needs_pairs(config), g_init).to(device)
    predictor = Predictor(len(vocab), p.embed, p.hidden, p.k, g_init).to(device)
    model = nn.ModuleDict({"selector": selector, "predictor": predictor})
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    g_shuffle, g_noise = derived_generator(config.seed, "shuffle"), derived_generator(config.seed, "noise", device)
    ids, valid, ratings, _ = data["train"]

    def batches(epoch: int):
        order = torch.randperm(ids.shape[0], generator=g_shuffle).to(device)
        return order.split(p.batch_size)

    def step(rows: torch.Tensor, index: int) -> torch.Tensor:
        xb, yb = ids[rows], ratings[rows]
        logits, pair = selector(xb, valid[rows])
        loss = relaxed_loss(config, lambda z: (predictor(xb, z) - yb) ** 2, logits, pair, k=p.k, tau=p.tau,
                            generator=g_noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def scores(split: str) -> dict[str, float]:
        x, v, y, truth = data[split]
        with torch.no_grad():
            logits, pair = selector(x, v)
            mask = test_mask(config, logits, pair, p.k)
            out = {"mse": 100.0 * float(((predictor(x, mask) - y) ** 2).mean()),
                   "segments": float(segments(mask).mean()), "adjacent": adjacent(mask)}
            annotated = truth.any(1)
            if bool(annotated.any()):
                out["subset_precision"] = subset_precision(mask[annotated], truth[annotated])
                if pair is not None:
                    out.update(pair_logit_means(pair[annotated], v[annotated], truth[annotated]))
        return out

    def evaluate(epoch: int) -> dict[str, float]:
        return {"valid_mse": scores("valid")["mse"]}

    final = train(ctx=ctx, epochs=p.epochs, batches=batches, step=step, module=model, weight=len,
                  evaluate=evaluate, progress_metric="valid_mse")
    return {**final, **scores("test")}


EXPERIMENT = register_experiment(Experiment(
    name="l2x-aspect",
    distribution=DISTRIBUTION,
    paper="SST (Paulus et al. 2020) poster, L2X aspect-rating table (BeerAdvocate), k = 5, 10, 15",
    description=(
        "Select k words of a review to predict one aspect rating (L2X word-level selector and predictor, squared "
        "error), through l2x, softsub, SST entropy and binary-entropy top-k or correlated top-k; test MSE (x100) and "
        "subset precision against annotated rationale spans. Data: a user-supplied directory in the documented "
        "JSON-lines format (BeerAdvocate is not redistributable) or the generated fixture of planted aspect "
        "sentences (default)."
    ),
    settings=Settings,
    quick={"epochs": 6},  # 240 steps of 50 reviews
    grid={"k": [5, 10, 15]},
    estimators=tuple(EstimatorChoice(name) for name in RELAXATIONS),
    quick_estimators=tuple(EstimatorChoice(name) for name in QUICK_RELAXATIONS),
    seeds=tuple(range(5)),
    quick_seeds=(0, 1),
    run=run,
    metrics={"subset_precision": False, "mse": True, "segments": None, "adjacent": None, "pair_logit_rationale": None,
             "pair_logit_other": None, "valid_mse": True, "train_loss": True},
    check=check,
    artifacts=(EFFICIENCY.with_baseline("l2x"),),
    local_estimators=LOCAL_ESTIMATORS,
    family_options=("k",),
    paper_results={
        (name, (("k", k),)): {"mse": (mse, mse_sd), "subset_precision": (prec, prec_sd)}
        for name, rows in {
            "l2x": ((5, 3.6, 0.1, 28.3, 1.7), (10, 3.0, 0.1, 25.5, 1.2), (15, 2.6, 0.1, 25.5, 0.4)),
            "softsub": ((5, 3.6, 0.1, 27.2, 0.7), (10, 3.0, 0.1, 26.1, 1.1), (15, 2.6, 0.1, 25.1, 1.0)),
            "entropy": ((5, 3.5, 0.1, 28.8, 1.7), (10, 2.7, 0.1, 32.8, 0.5), (15, 2.5, 0.1, 29.2, 0.8)),
            "corr_topk": ((5, 2.9, 0.1, 63.1, 5.3), (10, 2.5, 0.1, 53.1, 0.9), (15, 2.4, 0.1, 45.5, 2.7)),
        }.items()
        for k, mse, mse_sd, prec, prec_sd in rows
    },
))
