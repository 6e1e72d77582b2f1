"""Side probe (not part of the harness): train one l2x-aspect model on the quick fixture and print,
per epoch, the training loss (x100), the mean number of runs of the training samples (corr_topk),
and on the test split the MSE (x100), subset precision, segments and, for corr_topk, the mean pair
logit over adjacent pairs inside the rationale (phi_in_aspect) and over all pairs of real words.
Its own seeds (init 0, shuffle 1, noise 2), not the harness's derived streams.

    OMP_NUM_THREADS=1 .venv/bin/python results/l2x/probes/pair_logits.py corr_topk 10 6 [tau] [pair bias]
"""
import sys, time, json, torch
from torch import nn
torch.set_num_threads(1)
from discretegrad.experiments import l2x_aspect as A
from discretegrad.experiments.data import rationales as R
from discretegrad.experiments.common.selection import segments, subset_precision
from discretegrad import structures
import discretegrad as dg

est = sys.argv[1]; k = int(sys.argv[2]); epochs = int(sys.argv[3]); tau = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
pair_bias = float(sys.argv[5]) if len(sys.argv) > 5 else None
seed = 0
splits = A._fixture((2000, 200, 200), 0)
vocab = R.Vocabulary(splits["train"])
data = {s: R.encode(r, vocab, 0, 400) for s, r in splits.items()}
g = torch.Generator().manual_seed(seed)
pairs = est == "corr_topk"
sel = A.Selector(len(vocab), 64, 64, pairs, g); pred = A.Predictor(len(vocab), 64, 64, k, g)
if pair_bias is not None and pairs:
    with torch.no_grad(): sel.pair.bias.fill_(pair_bias)
opt = torch.optim.Adam(list(sel.parameters()) + list(pred.parameters()), lr=1e-3)
gs, gn = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
ids, valid, y, truth = data["train"]
allspans = torch.zeros_like(truth)
for i, r in enumerate(splits["train"]):
    for sp in r.spans:
        for s, e in sp or ():
            allspans[i, s:e] = True
def probe(split):
    x, v, yy, tr = data[split]
    with torch.no_grad():
        th, ph = sel(x, v)
        m = structures.corr_topk_hard(th, ph, k) if pairs else structures.topk_hard(th, k)
        out = dict(mse=100*float(((pred(x, m)-yy)**2).mean()), prec=subset_precision(m, tr), seg=float(segments(m).mean()))
        if pairs:
            both = tr[:, 1:] & tr[:, :-1]
            out["phi_in_aspect"] = float(ph[both].mean())
            out["phi_all"] = float(ph[(v[:, 1:] & v[:, :-1])].mean())
        return out
for ep in range(epochs):
    t0 = time.time(); segs = []; L = 0
    for rows in torch.randperm(ids.shape[0], generator=gs).split(50):
        xb, yb = ids[rows], y[rows]
        th, ph = sel(xb, valid[rows])
        f = lambda z: (pred(xb, z) - yb) ** 2
        if pairs:
            z = dg.subsets.topk(th, k, tau=tau, relaxation="corr", pair_logits=ph, generator=gn)
            loss = f(z).mean(); segs.append(float(segments(z.detach()).mean()))
        else:
            loss = dg.surrogate(lambda z: f(z), th, distribution="topk", estimator=est, k=k, generator=gn, tau=tau).mean()
        opt.zero_grad(); loss.backward(); opt.step(); L += float(loss.detach())
    print(ep, f"{time.time()-t0:.1f}s", "train", round(L/40*100, 2), "trainseg", round(sum(segs)/max(1,len(segs)), 2) if segs else None, json.dumps({kk: round(vv, 3) for kk, vv in probe("test").items()}), flush=True)
