"""ListOps (GST Table 6): the generator, the test set and its preprocessing, the latent-tree
parsers and a tiny run of the experiment."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import discretegrad as dg
from discretegrad.experiments import listops as X
from discretegrad.experiments.common import parse_metrics as PM
from discretegrad.experiments.common.latent_tree import TreeLSTMEncoder, arborescence_scores, masked_scores, score_masks
from discretegrad.experiments.data import listops as D
from discretegrad.experiments.data import listops_gen as G
from discretegrad.harness.contract import EstimatorChoice, get_experiment
from discretegrad.harness.grid import make_config
from experiment_helpers import assert_resumes_bit_for_bit, run_tiny

REPO = Path(__file__).resolve().parents[1]
_ROOT = os.environ.get("DISCRETEGRAD_LISTOPS_ROOT", str(REPO.parent / "shared" / "data" / "listops"))
needs_test_set = pytest.mark.skipif(not (Path(_ROOT) / D.TEST_FILE).is_file(),
                                    reason=f"the ListOps test set is not at {_ROOT} (set DISCRETEGRAD_LISTOPS_ROOT)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISCRETEGRAD_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "listops"


# ----------------------------------------------------------------------------- generator

def test_operator_semantics():
    assert G.value(("MIN", (4, 2, 7))) == 2 and G.value(("MAX", (4, 2, 7))) == 7
    assert G.value(("MED", (1, 2, 3, 4))) == 2  # numpy median 2.5, truncated by int()
    assert G.value(("MED", (9, 4))) == 6  # (4 + 9) / 2 = 6.5 -> 6
    assert G.value(("MED", (5, 1, 3))) == 3 and G.value(("MED", (8, 8, 0, 9, 1))) == 8
    assert G.value(("SM", (7, 8, 9))) == 4 and G.value(("SM", (0, 0))) == 0
    assert G.value(("MAX", (("SM", (5, 6)), ("MIN", (3, 9))))) == 3


def test_generator_limits_and_determinism():
    rng = random.Random(5)
    trees = [G.generate_tree(rng) for _ in range(3000)]

    def nodes(t):
        if isinstance(t, int):
            yield t
            return
        yield t
        for c in t[1]:
            yield from nodes(c)

    for t in trees:
        assert G.depth(t) <= G.MAX_DEPTH - 1  # operators only above the depth limit
        for node in nodes(t):
            if isinstance(node, int):
                assert 0 <= node <= 9
            else:
                assert node[0] in G.OPERATORS and 2 <= len(node[1]) <= G.MAX_ARGS
    assert max(G.depth(t) for t in trees) >= 5
    shallow = [G.generate_tree(rng, max_depth=3) for _ in range(500)]
    assert max(G.depth(t) for t in shallow) == 2
    # a leaf with probability 0.75 at the root: 3000 draws, binomial sd 24, so a 6-sd band
    assert abs(sum(isinstance(t, int) for t in trees) - 2250) < 150
    a, b, c = G.generate_distinct(3, 200), G.generate_distinct(3, 200), G.generate_distinct(4, 200)
    assert a == b and a != c
    assert len({G.to_string(t) for t in a}) == 200
    banned = {G.to_string(t) for t in a[:50]}
    assert not banned & {G.to_string(t) for t in G.generate_distinct(3, 200, exclude=banned)}


def test_string_bracketing_and_gold_spans():
    t = ("MIN", (6, ("SM", (3, 4)), 5))
    assert G.to_string(t) == "( ( ( ( [MIN 6 ) ( ( ( [SM 3 ) 4 ) ] ) ) 5 ) ] )"
    assert G.parse(G.to_string(t)) == t and G.parse("7") == 7
    toks = G.tokens(t)
    assert toks == ["[", "min", "6", "[", "sm", "3", "4", "]", "5", "]"]
    spans = G.gold_spans(t)
    assert len(spans) == len(toks) - 1 and spans[-1] == (0, len(toks))
    assert {(0, 2), (0, 3), (3, 5), (3, 6), (3, 7), (3, 8), (0, 8), (0, 9)} <= set(spans)
    for (a1, b1) in spans:  # laminar: two constituents nest or are disjoint
        for (a2, b2) in spans:
            assert b1 <= a2 or b2 <= a1 or (a1 <= a2 and b2 <= b1) or (a2 <= a1 and b1 <= b2)
    merges = G.merges_for_spans(len(toks), spans)
    assert sorted(G.spans_from_merges(len(toks), merges)) == sorted(spans)
    with pytest.raises(ValueError, match="Expected"):
        G.parse("( ( [MIN 6 ) 3 )")


# ----------------------------------------------------------------------------- test set

@needs_test_set
def test_test_set_verifies_parses_and_filters(cache):
    lines = D.read_test_lines(_ROOT)
    assert (cache / D.TEST_FILE).is_file()  # installed into the cache, then read from it
    assert D.read_test_lines() == lines
    for line in lines:  # every label is the expression's value: the semantics (MED included) match the file
        label, expr = line.split("\t")
        tree = G.parse(expr)
        assert G.to_string(tree) == expr and G.value(tree) == int(label)
    test = D.load_test()
    assert len(test) == 8689  # GST's filter: fewer than 100 tokens
    assert all(len(e.ids) < 100 and 1 <= e.label <= 10 for e in test)
    assert {D.VOCAB[i] for e in test for i in e.ids} == set(D.VOCAB) - {"<unk>", "<pad>"}
    assert D.N_CLASSES == 11


def test_test_set_missing_or_corrupt(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="data_root"):
        D.read_test_lines()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / D.TEST_FILE).write_text("0\t( ( [MIN 1 ) ] )\n")
    with pytest.raises(ValueError, match="SHA-256"):
        D.read_test_lines(str(bad))
    assert not (cache / D.TEST_FILE).exists()  # a corrupt file is never cached


@needs_test_set
def test_generated_splits_never_contain_test_lines(cache):
    train, valid = D.generated_splits(0, 500, 100, _ROOT)
    again = D.generated_splits(0, 500, 100, _ROOT)
    assert (train, valid) == again
    test = {e.ids for e in D.load_test(_ROOT)}
    assert 380 < len(train) < 500 and 70 < len(valid) <= 100  # about 87 % pass the filter
    assert not test & {e.ids for e in train + valid}
    assert not {e.ids for e in train} & {e.ids for e in valid}


# ----------------------------------------------------------------------------- parsers

def _examples(n: int, seed: int, max_tokens: int = 30) -> list[D.Example]:
    out = [D.encode(t) for t in G.generate_distinct(seed, 4 * n)]
    return [e for e in out if len(e.ids) < max_tokens][:n]


def _model(latent: str = "parent", hidden: int = 12):
    p = X.Settings(hidden=hidden, latent=latent, gcn_layers=3)
    model = X.build_model(p, seed=0)
    model.eval()
    return model


def test_parser_builds_a_binary_tree_with_n_minus_one_merges():
    examples = _examples(24, 1)
    batch = D.collate(examples)
    model = _model()
    with torch.no_grad():
        _, merges = model(batch, X.greedy("parent"), None)
    for i, e in enumerate(examples):
        n = len(e.ids)
        row = merges[i].tolist()
        assert all(k >= 0 for k in row[: n - 1]) and all(k == -1 for k in row[n - 1:])
        spans = G.spans_from_merges(n, row[: n - 1])
        assert len(set(spans)) == n - 1 and (n == 1 or spans[-1] == (0, n))
        assert all(0 <= k < n - 1 - level for level, k in enumerate(row[: n - 1]))


def test_gold_selection_reproduces_the_gold_bracketing():
    examples = _examples(16, 2)
    batch = D.collate(examples)
    gold = [G.merges_for_spans(len(e.ids), e.spans) for e in examples]

    def select(scores, level, raw):
        assert torch.equal(torch.isfinite(scores), torch.isfinite(scores - raw))  # raw: the same, unmasked
        idx = torch.tensor([g[level] if level < len(g) else 0 for g in gold])
        assert bool(torch.isfinite(scores.gather(1, idx[:, None])).all())  # the gold choice is never masked
        return F.one_hot(idx, scores.shape[-1]).to(scores.dtype)

    with torch.no_grad():
        _, merges = _model()(batch, select, None)
    for i, e in enumerate(examples):
        n = len(e.ids)
        assert sorted(G.spans_from_merges(n, merges[i, : n - 1].tolist())) == sorted(e.spans)
        assert PM.f1(PM.constituents_from_spans(n, e.spans), PM.constituents_from_spans(n, e.spans)) in (1.0, None)


@pytest.mark.parametrize("latent", ["parent", "arborescence"])
def test_padding_does_not_change_any_example(latent):
    examples = _examples(8, 3)
    assert len({len(e.ids) for e in examples}) > 3
    model = _model(latent)
    with torch.no_grad():
        logits, parse = model(D.collate(examples), X.greedy(latent), None)
        for i, e in enumerate(examples):
            one, p1 = model(D.collate([e]), X.greedy(latent), None)
            torch.testing.assert_close(logits[i], one[0], rtol=1e-5, atol=1e-6)
            n = len(e.ids)
            if latent == "parent":
                assert parse[i, : n - 1].tolist() == p1[0].tolist()
            else:
                assert torch.equal(parse[i, :n, :n], p1[0])


def test_arborescence_sample_is_a_tree_with_padding_off_the_root(gen):
    examples = _examples(6, 4)
    batch = D.collate(examples)
    model = _model("arborescence")
    model.train()
    cfg = make_config(get_experiment("listops"), EstimatorChoice("stgs"), 0, {"latent": "arborescence", "tau": 0.1})
    logits, adj = model(batch, X.sampler(cfg, gen), gen)
    assert bool(dg.trees.is_arborescence(adj, root=0).all())
    L = batch.tokens.shape[1]
    for i, n in enumerate(batch.lengths.tolist()):
        assert adj[i, 0, n:].sum() == L - n and adj[i, 1:, n:].sum() == 0 and adj[i, n:, :n].sum() == 0
    logits.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in model.parameters() if t.grad is not None)
    assert model.encoder.head.weight.grad.abs().sum() > 0  # the tree's gradient reaches the edge scorer


def test_masks_are_minus_inf_with_one_finite_entry_per_row():
    lengths = torch.tensor([5, 2, 1])
    masks = score_masks(lengths, 5)
    assert masks.shape == (4, 3, 4)
    assert masks[0, 0].tolist() == [0, 0, 0, 0] and masks[0, 1].tolist() == [0] + [-torch.inf] * 3
    assert masks[2, 1].tolist() == [0] + [-torch.inf] * 3  # finished: a finite dummy at column 0
    assert bool(torch.isfinite(masks).any(-1).all())
    valid = torch.tensor([[True, False], [False, False]])
    assert masked_scores(torch.tensor([[2.0, 3.0], [1.0, 1.0]]), valid).tolist() == [[2.0, -torch.inf], [0.0, -torch.inf]]
    s = arborescence_scores(torch.zeros(1, 3, 3), torch.tensor([2]))
    assert bool(torch.isfinite(s).all()) and s[0, 0, 2] > s[0, 1, 2]


@pytest.mark.parametrize("name, hparams", [("stgs", {}), ("gst", {"gap": 1.0}), ("gumbel_rao", {"mc_samples": 4}),
                                           ("reinmax", {}), ("gst", {"gap": "pi"})])
def test_training_step_with_masked_logits_is_finite(name, hparams, gen):
    examples = _examples(8, 5)
    model = _model()
    model.train()
    cfg = make_config(get_experiment("listops"), EstimatorChoice(name, hparams), 0, {"tau": 0.01})
    logits, _ = model(D.collate(examples), X.sampler(cfg, gen), gen)
    F.cross_entropy(logits, D.collate(examples).labels).backward()
    grads = [t.grad for t in model.parameters() if t.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_post_softmax_masked_stgs_is_the_valid_gumbel_max_unless_a_padded_winner_leaves_nothing():
    """GST's STGS masks after its tempered softmax: where no padded candidate wins by the
    resolution margin, its choice is the Gumbel-max over the valid candidates (the same noise);
    where one does, the choice falls to column 0 with zero gradient."""
    g0 = torch.Generator().manual_seed(0)
    raw = torch.randn(4000, 6, generator=g0)
    valid = torch.arange(6).expand(4000, 6) < torch.randint(2, 7, (4000, 1), generator=g0)
    for tau in (1.0, 0.01):
        sel, fell = X.post_softmax_masked_stgs(raw, valid, tau, torch.Generator().manual_seed(1))
        g = dg.noise.gumbel_like(raw, generator=torch.Generator().manual_seed(1))
        exact = (raw + g).masked_fill(~valid, -torch.inf).argmax(-1)
        assert torch.equal(sel.sum(-1), torch.ones(4000)) and torch.equal(sel.argmax(-1)[~fell], exact[~fell])
        assert bool((sel.argmax(-1)[fell] == 0).all())
        if tau == 1.0:
            assert not fell.any()  # a margin of 63 tau is not reached by these scores
        else:  # a padded winner by more than about 0.63: the rows that fell are exactly those
            top_pad = (raw + g).masked_fill(valid, -torch.inf).amax(-1)
            margin = top_pad - (raw + g).masked_fill(~valid, -torch.inf).amax(-1)
            assert bool((margin[fell] > 0.6).all()) and bool((margin[~fell] < 0.65).all()) and 0 < fell.sum() < 4000
    raw = torch.tensor([[0.0, 0.5, 10.0]], requires_grad=True)  # the padded candidate 2 wins by 9.5
    sel, fell = X.post_softmax_masked_stgs(raw, torch.tensor([[True, True, False]]), 0.01, torch.Generator())
    (sel * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert fell.tolist() == [True] and sel.detach().tolist() == [[1.0, 0.0, 0.0]] and raw.grad.abs().max() < 1e-30


def test_authors_masking_counts_fallbacks_and_trains(gen):
    examples = _examples(16, 6)
    batch = D.collate(examples)
    assert len(set(batch.lengths.tolist())) > 1  # padding, so there are padded candidates
    model = _model()
    model.train()
    cfg = make_config(get_experiment("listops"), EstimatorChoice("stgs"), 0, {"tau": 0.01, "masking": "authors"})
    select = X.sampler(cfg, gen)
    logits, merges = model(batch, select, gen)
    F.cross_entropy(logits, batch.labels).backward()
    assert all(bool(torch.isfinite(t.grad).all()) for t in model.parameters() if t.grad is not None)
    rate = select.rate()["train_fallback_rate"]  # lengths 1 to 29 in one batch: many padded winners (0.37 here)
    assert 0.1 < rate <= 1 and select.rate() == {"train_fallback_rate": 0.0}  # reset after each reading
    for i, n in enumerate(batch.lengths.tolist()):  # a valid binary tree however the choices fell
        row = merges[i, : n - 1].tolist()
        assert all(0 <= k < n - 1 - level for level, k in enumerate(row))


def test_check_refuses_authors_masking_outside_stgs_on_the_parent_choice(monkeypatch):
    monkeypatch.setattr(D, "read_test_lines", lambda root: [])  # the settings' check only, not the test set's
    exp = get_experiment("listops")
    X.check(make_config(exp, EstimatorChoice("stgs"), 0, {"masking": "authors"}))
    for name, settings in (("gst", {"masking": "authors"}), ("stgs", {"masking": "authors", "latent": "arborescence"})):
        with pytest.raises(ValueError, match="masking=authors"):
            X.check(make_config(exp, EstimatorChoice(name), 0, settings))


def test_constituents_of_a_dependency_tree():
    heads = [0, 0, 1, 1, 0]  # 0 -> 1 -> {2, 3}; 0 -> 4
    assert PM.constituents_from_heads(heads) == {frozenset({1, 2, 3})}
    assert PM.f1({frozenset({1, 2})}, {frozenset({1, 2}), frozenset({0, 1})}) == pytest.approx(2 / 3)
    assert PM.f1(set(), set()) is None and PM.mean_f1([None, 1.0, 0.0]) == 0.5


# ----------------------------------------------------------------------------- the experiment

@pytest.mark.parametrize("name", ["rloo", "gumbel_softmax"])
def test_check_refuses_estimators_without_sequential_discrete_choices(name):
    cfg = make_config(get_experiment("listops"), EstimatorChoice(name), 0, {})
    with pytest.raises(ValueError, match="Expected a categorical op"):
        X.check(cfg)
    cfg = make_config(get_experiment("listops"), EstimatorChoice("gst"), 0, {"latent": "arborescence"})
    with pytest.raises(ValueError, match="Expected estimator 'stgs' with latent=arborescence"):
        X.check(cfg)


TINY = dict(hidden=8, train_size=120, valid_size=40, epochs=2, max_tokens=20, eval_batch=64)


def test_short_draws_condition_the_distribution_on_length():
    trees = G.generate_distinct(7, 300, max_tokens=12)
    assert all(G.n_tokens(t) < 12 for t in trees) and len({G.to_string(t) for t in trees}) == 300
    assert trees == G.generate_distinct(7, 300, max_tokens=12)
    assert all(G.n_tokens(t) == len(G.tokens(t)) for t in G.generate_distinct(7, 300))
    # the conditioned draws are the unconditioned ones with the long lines left out
    free = G.generate_distinct(7, 300)
    assert [t for t in free if G.n_tokens(t) < 12][:50] == trees[:50]
    with pytest.raises(ValueError, match="Expected max_tokens >= 2"):
        G.generate_distinct(7, 3, max_tokens=1)


def test_arborescence_reader_learns_at_its_default_depth():
    """The default reader (8 shared graph layers, residual) must fit a tiny task: 64 short lines,
    120 Adam steps (deterministic: seeded init, data and noise). Its final loss has to fall 0.7
    nats below the entropy of the labels, the loss of a model that reads nothing (the failure of the
    plain 8-layer reader on ListOps); measured: 2.39 -> 1.26 residual, 2.40 -> 1.76 plain (fails)."""
    p = X.Settings(latent="arborescence", hidden=32, dropout=0.0, tau=1.0)
    assert p.gcn_layers == 8 and p.gcn_residual  # the defaults under test
    examples = [D.encode(t) for t in G.generate_distinct(0, 64, max_tokens=12)]
    counts = torch.bincount(torch.tensor([e.label for e in examples]), minlength=D.N_CLASSES).double()
    freq = counts[counts > 0] / counts.sum()
    label_entropy = float(-(freq * freq.log()).sum())
    model = X.build_model(p, 0)
    gen = torch.Generator().manual_seed(0)
    cfg = make_config(get_experiment("listops"), EstimatorChoice("stgs"), 0, {"latent": "arborescence", "tau": 1.0})
    select = X.sampler(cfg, gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [D.collate(examples[i:i + 16]) for i in range(0, 64, 16)]
    losses = []
    for step in range(120):
        b = batches[step % 4]
        opt.zero_grad()
        logits, _ = model(b, select, gen)
        loss = F.cross_entropy(logits, b.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:4]) / 4 > label_entropy - 0.1  # it starts at about the label entropy
    assert sum(losses[-4:]) / 4 < label_entropy - 0.7


@needs_test_set
@pytest.mark.parametrize("name, hparams, latent", [("stgs", {}, "parent"), ("gst", {"gap": 1.0}, "parent"),
                                                   ("stgs", {}, "arborescence")])
def test_tiny_run(cache, name, hparams, latent):
    exp = get_experiment("listops")
    final, ctx = run_tiny(exp, name, hparams, data_root=_ROOT, latent=latent, tau=0.1, **TINY)
    assert {"test_acc", "test_short_acc", "test_f1", "best_valid_acc", "valid_f1", "train_loss"} <= set(final)
    assert 0 <= final["test_acc"] <= 1 and 0 <= final["best_valid_acc"] <= 1
    assert final["best_valid_acc"] >= max(m["valid_acc"] for _, m in ctx.epochs)
    assert final["test_size"] == len(D.load_test(_ROOT, 20))
    assert [e for e, _ in ctx.epochs] == [1, 2]
    assert ctx.artifacts["speed"]["steps_per_second"] > 0 and ctx.artifacts["speed"]["examples_per_second"] > 0
    assert final["test_short_size"] == final["test_size"] and final["test_short_acc"] == final["test_acc"]
    again, _ = run_tiny(exp, name, hparams, data_root=_ROOT, latent=latent, tau=0.1, **TINY)
    assert again == final  # seeded: the same run twice gives the same numbers


@needs_test_set
@pytest.mark.parametrize("name, hparams", [("stgs", {}), ("gumbel_rao", {"mc_samples": 3})])
def test_a_killed_run_resumes_from_its_checkpoint_bit_for_bit(cache, name, hparams):
    assert_resumes_bit_for_bit(get_experiment("listops"), name, kill_at=2, hparams=hparams, data_root=_ROOT,
                               tau=0.1, **{**TINY, "epochs": 3})


@needs_test_set
def test_tiny_run_on_short_lines(cache):
    tiny = {**TINY, "train_max_tokens": 12}
    train, valid = D.generated_splits(0, tiny["train_size"], tiny["valid_size"], _ROOT, 20, 12)
    assert len(train) == 120 and len(valid) == 40 and max(len(e.ids) for e in train + valid) < 12
    final, _ = run_tiny(get_experiment("listops"), "stgs", {}, data_root=_ROOT, tau=1.0, **tiny)
    short = [e for e in D.load_test(_ROOT, 20) if len(e.ids) < 12]
    assert final["test_short_size"] == len(short) < final["test_size"] and 0 <= final["test_short_acc"] <= 1


@pytest.mark.slow
@needs_test_set
def test_cli_smoke_run_resumes(tmp_path):
    env = {**os.environ, "DISCRETEGRAD_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "discretegrad", "run", "listops", "--estimators", "stgs,gst:gap=1.0", "--seeds", "0",
           "--set", "tau=0.01", "--out", str(out), "--quiet", "--set", f"data_root={_ROOT}",
           *[a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, env=env, timeout=600)
    assert dry.returncode == 0 and "0 to run" in dry.stdout, dry.stdout
    report = subprocess.run([sys.executable, "-m", "discretegrad", "report", str(out)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert report.returncode == 0 and "test_acc" in (out / "report" / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "discretegrad", "run", "listops", "--estimators", "rloo", "--out",
                          str(tmp_path / "bad"), "--set", f"data_root={_ROOT}"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    shutil.rmtree(out)
