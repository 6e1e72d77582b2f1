"""The fused categorical ops (custom autograd Functions, ``discretegrad._st_functions``) against the
straightforward autograd compositions they replace, kept here as the reference: same sample, same
gradient to float tolerance, in float64, float32 and the half types, with masks, ``dim`` and
temperatures; and what they save for backward against ``F.gumbel_softmax(hard=True)``.

The references below are the implementations the library had before the Functions (autograd
through ``hard + soft - sg(soft)``), rewritten from the formulas: they draw the same random
numbers (for stgs and decoupled_stgs Gumbel by inversion from ``torch.rand`` with the generator; for
st, gst, reinmax and gumbel_rao one uniform per row inverted through the running sums of the
softmax; then for GR-MCK one seed and the conditional Gumbels from a generator seeded with it, by
the formula of ``noise.conditional_gumbel`` with the draws laid out last, as the backward takes them).
"""

from __future__ import annotations

import pytest
import torch

import discretegrad as dg
from _devices import DEVICES

TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6)}


def _gumbel(x, gen):
    return dg.noise.gumbel(x.shape, dtype=x.dtype, device=x.device, generator=gen)


def _inverse_cdf_sample(x, gen):
    """One-hot ``D`` as st, gst, reinmax and gumbel_rao draw it: one uniform per row, ``D`` = the number
    of running sums of ``softmax(x)`` at or below it (the straightforward way: normalised first; sums and
    uniform in float64, as the sampler, except on MPS)."""
    acc = torch.float32 if x.device.type == "mps" else torch.float64
    cdf = torch.softmax(x.detach(), -1).to(acc).cumsum(-1)
    u = torch.rand((*x.shape[:-1], 1), dtype=acc, device=x.device, generator=gen) * cdf[..., -1:]
    index = (cdf <= u).sum(-1).clamp_max(x.shape[-1] - 1)
    return torch.nn.functional.one_hot(index, x.shape[-1]).to(x.dtype)


def _st(hard, soft):
    return hard + (soft - soft.detach())  # exactly hard in the forward pass


def _one_hot(z):
    return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)


def ref_st(x, gen, tau=1.0):
    return _st(_inverse_cdf_sample(x, gen), torch.softmax(x / tau, -1))


def ref_stgs(x, gen, tau=1.0, forward_tau=1.0):
    scaled = x / forward_tau
    noisy = scaled + _gumbel(x, gen)
    return _st(_one_hot(noisy.detach()), torch.softmax(noisy / tau, -1))


def ref_gst(x, gen, tau=1.0, gap=1.0):
    hard = _inverse_cdf_sample(x, gen)
    xd = x.detach()
    m = xd.max(-1, keepdim=True).values
    if gap == "pi":
        g = dg.categorical.gap_pi((torch.softmax(xd, -1) * hard).sum(-1, keepdim=True))
    else:
        g = gap
    moved = torch.where(hard.bool(), m, torch.minimum(xd, m - g))
    return _st(hard, torch.softmax((x + (moved - xd)) / tau, -1))


def _surrogate(x, p):  # linear in x with Jacobian diag(p) - p pᵀ
    p = p.detach()
    return p * x - p * (p * x).sum(-1, keepdim=True)


def ref_reinmax(x, gen, tau=1.0):
    hard = _inverse_cdf_sample(x, gen)
    pi1 = 0.5 * (hard + torch.softmax(x.detach() / tau, -1))
    return _st(hard, 2.0 * _surrogate(x, pi1) - 0.5 * torch.softmax(x, -1))


def _conditional_gumbel_draws_last(x, index, mc_samples, gen, tau):
    """``mc_samples`` conditional Gumbels given ``argmax = index`` from the formula of
    ``noise.conditional_gumbel`` (``T = logsumexp θ - log E_0``, ``z_j = -logaddexp(-T, log E_j - θ_j)``,
    ``z_D = T``), with the random numbers where GR-MCK's backward takes them for a batch of one chunk:
    ``E_0`` as ``[..., 1, K]`` first, then ``E`` as ``[..., N, K]`` (the draws last, ``-log U`` as
    ``noise.log_uniform_into`` makes them); returned as
    ``[K, ..., N]``."""
    e_top = dg.noise.exponential((*x.shape[:-1], 1, mc_samples), dtype=x.dtype, device=x.device, generator=gen)
    shape = (*x.shape, mc_samples)
    if tau <= 1.0:  # E = -log U as the op draws it there (dg.noise.log_uniform_into: 31 random bits in float32)
        e = dg.noise.log_uniform_into(torch.empty(shape, dtype=x.dtype, device=x.device), gen).neg_()
    else:
        e = dg.noise.exponential(shape, dtype=x.dtype, device=x.device, generator=gen)
    xd = x.detach()
    top = torch.logsumexp(xd, -1, keepdim=True).unsqueeze(-1) - e_top.log()
    z = -torch.logaddexp(-top, e.log() - xd.unsqueeze(-1))
    z = torch.where(torch.nn.functional.one_hot(index, x.shape[-1]).bool().unsqueeze(-1), top, z)
    return z.movedim(-1, 0)


def ref_gumbel_rao(x, gen, tau=1.0, mc_samples=7):
    hard = _inverse_cdf_sample(x, gen)
    seed = int(torch.randint(0, 2**62, (), generator=gen, device=x.device))
    z = _conditional_gumbel_draws_last(x, hard.argmax(-1), mc_samples, torch.Generator(x.device).manual_seed(seed), tau)
    return _st(hard, torch.softmax((x + (z - x.detach())) / tau, -1).mean(0))  # K copies kept (naive)


CASES = [("st", ref_st, {"tau": 0.7}), ("gumbel_rao", ref_gumbel_rao, {"tau": 2.5, "mc_samples": 5}),
         ("gumbel_rao", ref_gumbel_rao, {"tau": 1.0, "mc_samples": 3}), ("stgs", ref_stgs, {"tau": 0.6}),
         ("decoupled_stgs", ref_stgs, {"tau": 0.8, "forward_tau": 2.5}), ("gst", ref_gst, {"tau": 0.5, "gap": 1.2}),
         ("gst", ref_gst, {"gap": "pi"}), ("gst", ref_gst, {"gap": 0.0, "tau": 2.0}), ("reinmax", ref_reinmax, {}),
         ("reinmax", ref_reinmax, {"tau": 1.7}), ("gumbel_rao", ref_gumbel_rao, {"tau": 0.5, "mc_samples": 7})]


def _compare(name, ref, hp, x, v, atol_rtol, dim=-1, x_ref=None):
    op = dg.registry.get(name, distribution="categorical").fn
    x_ref = x if x_ref is None else x_ref
    leaf = x.clone().requires_grad_(True)
    out = op(leaf, generator=torch.Generator(x.device).manual_seed(3), dim=dim, **hp)
    (g,) = torch.autograd.grad((out * v).sum(), leaf)
    rleaf = x_ref.clone().movedim(dim, -1).requires_grad_(True)
    rout = ref(rleaf, torch.Generator(x.device).manual_seed(3), **hp)
    (rg,) = torch.autograd.grad((rout * v.movedim(dim, -1)).sum(), rleaf)
    assert torch.equal(out.movedim(dim, -1), rout.detach())
    rtol, atol = atol_rtol
    torch.testing.assert_close(g.movedim(dim, -1), rg, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name, ref, hp", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fused_op_equals_autograd_reference(name, ref, hp, dtype, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 3, 6, generator=g, dtype=torch.float64) * 3).to(dtype).to(device)
    v = torch.randn(7, 3, 6, generator=g, dtype=torch.float64).to(dtype).to(device)
    _compare(name, ref, hp, x, v, TOL[dtype])


@pytest.mark.parametrize("name, ref, hp", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fused_op_with_masks_and_dim(name, ref, hp):
    """-inf categories and categories on dim 1: the reference sees finite stand-ins (it would form
    inf - inf), the fused op the -inf itself; same sample, same gradient, exact zeros where masked."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 6, 4, generator=g) < 0.3
    mask[:, 0] = False  # one finite category per row (categories on dim 1)
    v = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    op = dg.registry.get(name, distribution="categorical").fn
    masked = x.masked_fill(mask, -float("inf"))
    leaf = masked.clone().requires_grad_(True)
    out = op(leaf, generator=torch.Generator().manual_seed(3), dim=1, **hp)
    (grad,) = torch.autograd.grad((out * v).sum(), leaf)
    assert torch.isfinite(grad).all() and (grad[mask] == 0).all() and (out[mask] == 0).all()
    _compare(name, ref, hp, masked, v, TOL[torch.float64], dim=1, x_ref=x.masked_fill(mask, -1e300))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name, ref, hp", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fused_op_half_dtypes_match_float32_reference(name, ref, hp, dtype):
    """Half inputs are computed in float32: the sample equals the float32 reference's and the
    gradient equals it to the half type's rounding (STGS keeps its softmax in the half type)."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(9, 8, generator=g) * 2).to(dtype)
    v = torch.randn(9, 8, generator=g).to(dtype)
    op = dg.registry.get(name, distribution="categorical").fn
    leaf = x.clone().requires_grad_(True)
    out = op(leaf, generator=torch.Generator().manual_seed(3), **hp)
    (grad,) = torch.autograd.grad((out * v).sum(), leaf)
    rleaf = x.float().requires_grad_(True)
    rout = ref(rleaf, torch.Generator().manual_seed(3), **hp)
    (rg,) = torch.autograd.grad((rout * v.float()).sum(), rleaf)
    assert out.dtype == dtype and grad.dtype == dtype and torch.equal(out.float(), rout.detach())
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(grad.float(), rg, rtol=4 * eps, atol=4 * eps * float(rg.abs().max()))


def _saved_bytes(fn, x):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(16, 30, 10), (8, 4, 100)])
@pytest.mark.parametrize("name", ["st", "stgs", "gst", "reinmax", "decoupled_stgs"])
def test_saved_for_backward_at_most_torch_gumbel_softmax(name, shape, dtype):
    """Counting every storage saved (the input included, when an op keeps it)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_(True)
    op = dg.registry.get(name, distribution="categorical").fn
    ours = _saved_bytes(lambda t: op(t, generator=torch.Generator().manual_seed(0)), x)
    with torch.random.fork_rng():
        theirs = _saved_bytes(lambda t: torch.nn.functional.gumbel_softmax(t, hard=True), x)
    assert 0 < ours <= theirs


def test_gumbel_rao_saves_the_same_for_k_1000_as_for_stgs_scale():
    """GR-MCK saves the logits and D whatever K: at most 2x what STGS saves."""
    x = torch.randn(100, 30, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    stgs = _saved_bytes(lambda t: dg.categorical.stgs(t, generator=torch.Generator().manual_seed(0)), x)
    for k in (1, 100, 1000):
        gr = _saved_bytes(lambda t: dg.categorical.gumbel_rao(t, mc_samples=k, generator=torch.Generator().manual_seed(0)), x)
        assert gr <= 2 * stgs


def test_gumbel_rao_no_draw_without_backward_and_generator_advanced_once():
    """The forward pass draws D and one seed; the K conditional draws happen in backward only, from
    their own generator, so the caller's stream after the call does not depend on K."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    states = []
    for k in (3, 300):
        gen = torch.Generator().manual_seed(5)
        out = dg.categorical.gumbel_rao(x, mc_samples=k, generator=gen)
        out.sum().backward()
        states.append(gen.get_state())
    assert torch.equal(states[0], states[1])


def _law_bound(p: torch.Tensor, draws: int, false_failure: float) -> torch.Tensor:
    """Two-sided per-category bound on ``|frequency - p|`` over ``draws`` i.i.d. draws: ``z`` standard
    errors ``sqrt(p (1 - p) / draws)``, ``z`` Bonferroni-corrected over the categories so that the whole
    check fails with probability at most ``false_failure`` for a correct sampler (normal approximation;
    ``p = 0`` gives a bound of 0: a masked category must never be drawn)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - false_failure / (2 * p.numel()))
    return z * (p * (1 - p) / draws).sqrt()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inverse_cdf_sampler_has_the_categorical_law(dtype):
    """``noise.categorical_inverse_cdf`` (st, gst, reinmax, gumbel_rao) draws ``Categorical(softmax(θ))``:
    200,000 draws per row of logits with a mask, a near-tie, an extreme spread and one category; each
    frequency within the Monte Carlo bound of ``_law_bound`` (false-failure rate 1e-6 per row for a
    random seed; the seed is fixed, so the test is deterministic)."""
    rows = [[2.0, -float("inf"), 0.5, -1.0, 0.5, 1.0], [30.0, 0.0, -30.0, 29.0, -float("inf"), 28.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [-float("inf")] * 5 + [3.0]]
    draws = 200_000
    for row in rows:
        theta = torch.tensor(row, dtype=dtype)
        index, probs = dg.noise.categorical_inverse_cdf(theta.expand(draws, -1),
                                                        generator=torch.Generator().manual_seed(len(row)))
        assert index.shape == (draws, 1)
        torch.testing.assert_close(probs[0], torch.softmax(theta, -1))
        freq = torch.bincount(index[:, 0], minlength=theta.numel()).double() / draws
        p = torch.softmax(theta.double(), -1)
        assert ((freq - p).abs() <= _law_bound(p, draws, 1e-6)).all(), (row, freq, p)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_inverse_cdf_sampler_law_in_half_precision_on_a_long_row(dtype):
    """With running sums in the logits' own 16-bit dtype, a uniform row of 300 categories lost some
    categories entirely (frequency 0, others doubled): the sums are in float64, and every frequency is
    within ``_law_bound`` of 1/300 (false-failure rate 1e-6; 200,000 draws in chunks)."""
    n, draws, chunk = 300, 200_000, 40_000
    gen = torch.Generator().manual_seed(11)
    counts = torch.zeros(n, dtype=torch.float64)
    for _ in range(draws // chunk):
        index, _ = dg.noise.categorical_inverse_cdf(torch.zeros(chunk, n, dtype=dtype), generator=gen)
        counts += torch.bincount(index[:, 0], minlength=n).double()
    p = torch.full((n,), 1.0 / n, dtype=torch.float64)
    assert ((counts / draws - p).abs() <= _law_bound(p, draws, 1e-6)).all(), counts.min()


def test_inverse_cdf_ops_forward_law_in_bfloat16_and_dim():
    """The registered ops' forward samples (computed in float32 for a bfloat16 input, categories on dim 0)
    have the law ``softmax(θ)`` of the rounded logits: the same bound as above (false-failure rate 1e-6)."""
    theta = torch.tensor([1.5, -0.5, 0.0, -float("inf"), 2.0], dtype=torch.bfloat16)
    draws = 100_000
    p = torch.softmax(theta.double(), -1)
    for name in ("st", "gst", "reinmax", "gumbel_rao"):
        op = dg.registry.get(name, distribution="categorical").fn
        out = op(theta.unsqueeze(1).expand(-1, draws), dim=0, generator=torch.Generator().manual_seed(4))
        assert out.dtype == torch.bfloat16 and (out.sum(0) == 1).all()
        freq = out.double().mean(1)
        assert ((freq - p).abs() <= _law_bound(p, draws, 1e-6)).all(), (name, freq, p)


def test_gumbel_rao_in_chunks_equals_reference_drawn_block_by_block(monkeypatch):
    """Chunks of 2 rows and 3 draws (instead of about 2^18 numbers): the backward draws block by block,
    rows outer, draws inner; the gradient equals the reference drawing the same blocks in that order."""
    import discretegrad._st_functions as functions

    monkeypatch.setattr(functions, "_rao_blocks", lambda rows, n, k: (2, 3))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64) * 2
    v = torch.randn(5, 4, generator=g, dtype=torch.float64)
    k_total, tau = 8, 0.7
    leaf = x.clone().requires_grad_(True)
    out = dg.categorical.gumbel_rao(leaf, mc_samples=k_total, tau=tau, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((out * v).sum(), leaf)
    ref_gen = torch.Generator().manual_seed(3)
    hard = _inverse_cdf_sample(x, ref_gen)
    seed = int(torch.randint(0, 2**62, (), generator=ref_gen))
    draws = torch.Generator().manual_seed(seed)
    rleaf = x.clone().requires_grad_(True)
    blocks = []
    for r in range(0, 5, 2):
        zs = [_conditional_gumbel_draws_last(x[r:r + 2], hard[r:r + 2].argmax(-1), min(3, k_total - s), draws, tau)
              for s in range(0, k_total, 3)]
        z = torch.cat(zs)  # [K, rows, N]
        blocks.append(torch.softmax((rleaf[r:r + 2] + (z - x[r:r + 2])) / tau, -1).mean(0))
    (rg,) = torch.autograd.grad((torch.cat(blocks) * v).sum(), rleaf)
    assert torch.equal(out.detach(), hard)
    torch.testing.assert_close(grad, rg, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_gumbel_rao_gradient_has_the_mean_of_stgs(tau):
    """The law of the whole GR-MCK pipeline (inverse-CDF ``D``, then K conditional draws given ``D``, laid
    out last) against STGS's independent Gumbel-max path: GR-MCK Rao-Blackwellises STGS, so per row the
    two gradients have the same expectation ``E[J(softmax((θ + G)/τ)) v / τ]``. 100,000 independent rows
    each; every entry of the two means within ``z`` standard errors of their difference,
    ``sqrt(s²_gr/M + s²_stgs/M)`` (sample variances), ``z`` Bonferroni-corrected over the 5 entries for
    a false-failure rate of 1e-6 (normal approximation). A wrong conditional law (the maximum's
    location, the truncation, the weight at ``D``) shifts the mean by far more than the tolerance."""
    from statistics import NormalDist

    rows = 100_000
    theta = torch.tensor([1.0, -0.5, 0.3, -float("inf"), 0.0], dtype=torch.float64)
    v = torch.tensor([0.7, -1.2, 0.4, 2.0, -0.3], dtype=torch.float64)
    grads = []
    for name, hp in (("gumbel_rao", {"mc_samples": 3}), ("stgs", {})):
        leaf = theta.expand(rows, -1).clone().requires_grad_(True)
        out = dg.registry.get(name, distribution="categorical").fn(
            leaf, tau=tau, generator=torch.Generator().manual_seed(8), **hp)
        (grad,) = torch.autograd.grad((out * v).sum(), leaf)
        grads.append(grad)
    (gr, st) = grads
    assert (gr[:, 3] == 0).all() and (st[:, 3] == 0).all()
    z = NormalDist().inv_cdf(1 - 1e-6 / (2 * theta.numel()))
    se = (gr.var(0) / rows + st.var(0) / rows).sqrt()
    assert ((gr.mean(0) - st.mean(0)).abs() <= z * se).all(), (gr.mean(0), st.mean(0), se)
