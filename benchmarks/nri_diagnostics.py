"""Issue 12's checks of the nri-graph-layout pieces, each on its own, at the quick size (hidden 64,
batch 32, T = 10, n = 10; the first 5000 training and 500 validation graphs of the cached data).

* ``decoder``: the decoder alone with a fixed latent -- the true trees, random trees (Kruskal on
  Gumbel weights, like the data's) or no edges -- trained ``--steps`` steps on 9-step roll-outs;
  validation NLL teacher-forced and rolled out. Does the data carry the tree for the decoder?
* ``encoder``: the encoder alone, trained on the true edges (cross-entropy on the symmetric
  logits); edge accuracy and the precision of the maximum spanning tree of its logits every 100
  steps. Does the data show the tree to the encoder?
* ``geometry``: no learning -- the precision of the 9 closest pairs and of the minimum spanning
  tree of the vertex distances in one frame (first 1000 validation graphs): what reading the
  layout alone gives, a yardstick for the models.
* ``op``: the encoder trained through the experiment's latent path (``dg.surrogate`` on the
  structure's estimator, as in training) with the reward "sample mass on the true edges" in place
  of the decoder: do the encoder, the symmetrisation and the op learn trees together?
* ``joint``: the experiment's own training step (``make_step``) for ``--steps`` steps from a
  given initialisation (``--init-seed``: the harness's ``derived_generator(seed, "init")``),
  validation every 100 steps (hard-sample ELBO, precision, which reading of the edge type),
  then the trained decoder's teacher-forced NLL under other latents (its own sample, the true
  tree, a random tree, none, complements), the logit spread and the KL. Which code did the
  encoder and decoder settle on? ``--tied`` starts the two message MLPs equal (the experiment's
  ``decoder_init=tied``; a probe, not the authors' model).

    OMP_NUM_THREADS=1 python benchmarks/nri_diagnostics.py decoder [--steps 300]
    OMP_NUM_THREADS=1 python benchmarks/nri_diagnostics.py encoder [--steps 400]
    OMP_NUM_THREADS=1 python benchmarks/nri_diagnostics.py geometry
    OMP_NUM_THREADS=1 python benchmarks/nri_diagnostics.py op --structure spanning_tree [--steps 300]
    OMP_NUM_THREADS=1 python benchmarks/nri_diagnostics.py joint --structure spanning_tree \\
        --estimator entropy_relaxed --tau 3.864 --lr 1.243e-3 --init-seed 0 [--steps 200]

Every draw comes from an explicit generator with a fixed seed; the numbers in
``results/nri-graph-layout/README.md`` ("Debugging") were printed by these commands.
"""

from __future__ import annotations

import argparse
import time

import torch

import discretegrad as dg
from discretegrad.experiments import nri_graph_layout as nri
from discretegrad.experiments.common.seeding import derived_generator
from discretegrad.experiments.data.graph_layout import load_graph_layout, random_trees
from discretegrad.experiments.nri_model import (Decoder, Encoder, directed_entries, edge_precision_recall,
                                                gaussian_nll, gumbel_kl, symmetric_logits, to_adjacency)
from discretegrad.harness.contract import EstimatorChoice
from discretegrad.structures import prim

N_TRAIN, N_VALID, HIDDEN, BATCH = 5000, 500, 64, 32


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, e = load_graph_layout("train", 10, size=N_TRAIN, train_size=50000)
    vx, ve = load_graph_layout("valid", 10, size=N_VALID, train_size=50000)
    return x, e, vx, ve


def decoder_check(steps: int) -> None:
    x, e, vx, ve = _data()
    g = torch.Generator().manual_seed(0)
    rand_tr, rand_va = random_trees(N_TRAIN, 10, g).float(), random_trees(N_VALID, 10, g).float()
    for name, tr, va in (("true", e.float(), ve.float()), ("random", rand_tr, rand_va),
                         ("empty", torch.zeros_like(rand_tr), torch.zeros_like(rand_va))):
        dec = Decoder(10, HIDDEN, torch.Generator().manual_seed(1))
        opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
        gb = torch.Generator().manual_seed(2)
        t0 = time.time()
        for _ in range(steps):
            idx = torch.randint(0, N_TRAIN, (BATCH,), generator=gb)
            loss = gaussian_nll(dec(x[idx], directed_entries(tr[idx]), 9), x[idx][:, :, 1:]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            tf = gaussian_nll(dec(vx, directed_entries(va), 1), vx[:, :, 1:]).mean()
            ro = gaussian_nll(dec(vx, directed_entries(va), 9), vx[:, :, 1:]).mean()
        print(f"{name}: last train loss {float(loss):.0f}, valid NLL teacher-forced {float(tf):.0f}, "
              f"rolled out {float(ro):.0f} ({time.time() - t0:.0f} s)", flush=True)


def encoder_check(steps: int) -> None:
    x, e, vx, ve = _data()
    enc = Encoder(10, 10, HIDDEN, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    gb = torch.Generator().manual_seed(2)
    t0 = time.time()
    for s in range(steps):
        idx = torch.randint(0, N_TRAIN, (BATCH,), generator=gb)
        sym = symmetric_logits(enc(x[idx]), 10)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(directed_entries(sym),
                                                                    directed_entries(e[idx]).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (s + 1) % 100 == 0:
            enc.eval()
            with torch.no_grad():
                sym = symmetric_logits(enc(vx), 10)
                acc = ((directed_entries(sym) > 0).long() == directed_entries(ve)).float().mean()
                pr = edge_precision_recall(prim(sym), ve.double())
            enc.train()
            print(f"step {s + 1}: cross-entropy {float(loss):.3f}, edge accuracy {float(acc):.3f}, "
                  f"precision of the MST of the logits {pr['precision_as_is']:.3f} ({time.time() - t0:.0f} s)",
                  flush=True)


def geometry_check() -> None:
    vx, ve = load_graph_layout("valid", 10, size=1000, train_size=50000)
    rows, cols = torch.triu_indices(10, 10, 1)
    for frame in (0, 4, 9):
        dist = torch.cdist(vx[:, :, frame], vx[:, :, frame]).double()
        closest = torch.zeros(dist.shape[0], rows.numel(), dtype=dist.dtype)
        closest.scatter_(-1, (-dist[:, rows, cols]).topk(9, -1).indices, 1.0)
        pairs = edge_precision_recall(to_adjacency(closest, 10), ve.double())["precision_as_is"]
        tree = edge_precision_recall(prim(-dist), ve.double())["precision_as_is"]
        print(f"frame {frame}: the 9 closest pairs {pairs:.3f}, the minimum spanning tree of the distances {tree:.3f}")


def op_check(structure: str, estimator: str, tau: float, steps: int) -> None:
    x, e, vx, ve = _data()
    p = nri.Settings(structure=structure, hidden=HIDDEN, search=False)
    model = nri.NRIModel(p, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.encoder.parameters(), lr=1.243e-3)
    family, name = nri.latent_estimator(structure, estimator)
    options = nri._options(p)
    gb, gn, t0 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3), time.time()
    for s in range(steps):
        idx = torch.randint(0, N_TRAIN, (BATCH,), generator=gb)
        sym, target = model.logits(x[idx]), e[idx].float()

        def reward(z: torch.Tensor) -> torch.Tensor:  # [S, B, *event] -> [S, B]: minus the mass on true edges
            return -(model.adjacency(z.flatten(0, 1)).view(z.shape[0], -1, 10, 10) * target).sum((-1, -2))

        loss = dg.surrogate(reward, model.params(sym), distribution=family, estimator=name, generator=gn, tau=tau,
                            **options).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (s + 1) % 100 == 0:
            r = nri.evaluate(model, vx, ve, torch.Generator().manual_seed(4), options)
            print(f"{structure} {estimator} tau {tau} step {s + 1}: precision {r['precision']:.1f} "
                  f"flipped {r['flipped']:.0f} ({time.time() - t0:.0f} s)", flush=True)


def joint_check(structure: str, estimator: str, tau: float, lr: float, init_seed: int, steps: int,
                tied: bool = False) -> None:
    x, _, vx, ve = _data()
    p = nri.Settings(structure=structure, hidden=HIDDEN, batch_size=BATCH, search=False,
                     decoder_init="tied" if tied else "independent")
    model = nri.NRIModel(p, derived_generator(init_seed, "init"))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step = nri.make_step(model, opt, p, EstimatorChoice(estimator), tau, torch.Generator().manual_seed(3))
    options, gb, t0 = nri._options(p), torch.Generator().manual_seed(2), time.time()
    for s in range(steps):
        loss = step(x[torch.randint(0, N_TRAIN, (BATCH,), generator=gb)])
        if (s + 1) % 100 == 0:
            r = nri.evaluate(model, vx, ve, torch.Generator().manual_seed(4), options)
            print(f"{structure} {estimator} tau {tau} lr {lr} init {init_seed} step {s + 1}: loss {float(loss):.0f} "
                  f"valid ELBO {r['elbo']:.0f} precision {r['precision']:.1f} flipped {r['flipped']:.0f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        own = nri.evaluate(model, vx, ve, torch.Generator().manual_seed(4), options)["graphs"].float()
        rnd = random_trees(N_VALID, 10, torch.Generator().manual_seed(9)).float()
        eye = torch.eye(10)
        for name, adj in (("own sample", own), ("true tree", ve.float()), ("random tree", rnd),
                          ("no edges", torch.zeros_like(rnd)), ("true complement", 1 - ve.float() - eye),
                          ("own complement", 1 - own - eye)):
            nll = [float(gaussian_nll(model.decoder(vx, directed_entries(adj), k), vx[:, :, 1:]).mean()) for k in (1, 9)]
            print(f"  decoder NLL with {name}: teacher-forced {nll[0]:.0f}, rolled out {nll[1]:.0f}")
        sym = model.logits(vx)
        print(f"  logit spread (std over edges, mean over graphs) {float(directed_entries(sym).std(-1).mean()):.2f}; "
              f"KL per graph {float(gumbel_kl(sym).mean()):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("decoder", "encoder", "geometry", "op", "joint"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--structure", choices=nri.STRUCTURES, default="spanning_tree")
    parser.add_argument("--estimator", default="entropy_relaxed")
    parser.add_argument("--tau", type=float, default=3.864)
    parser.add_argument("--lr", type=float, default=1.243e-3)
    parser.add_argument("--init-seed", type=int, default=0)
    parser.add_argument("--tied", action="store_true", help="joint: both message MLPs start equal")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check == "decoder":
        decoder_check(args.steps)
    elif args.check == "encoder":
        encoder_check(args.steps)
    elif args.check == "geometry":
        geometry_check()
    elif args.check == "op":
        op_check(args.structure, args.estimator, args.tau, args.steps)
    else:
        joint_check(args.structure, args.estimator, args.tau, args.lr, args.init_seed, args.steps, args.tied)


if __name__ == "__main__":
    main()
