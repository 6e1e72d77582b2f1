"""Drop-in conventions over the registry: masked logits, ``dim=``, ``torch.func.vmap`` / ``grad``.

Parametrised over ``dg.estimators()`` (masks: every estimator of a family whose fixture declares
``masked_params``), so a new estimator is covered with no edit here.
"""

from __future__ import annotations

import pytest
import torch

import discretegrad as dg
from problems import case_for

SPECS = dg.estimators()
OPS = [s for s in SPECS if s.kind == "op"]
MASKED = [s for s in SPECS if getattr(case_for(s.distribution), "masked_params", None) is not None]
CATEGORICAL_OPS = [s for s in OPS if s.distribution == "categorical"]


def sid(spec: dg.EstimatorSpec) -> str:
    return f"{spec.distribution}:{spec.name}"


def hp(spec, **extra):
    c = case_for(spec.distribution)
    return {**{k: v for k, v in c.test_hparams.items() if k in spec.hyperparameters}, **extra}


# ----------------------------------------------------------------------------- masked logits

def _masked_draws(spec, params, validate: bool):
    """(outputs or costs, gradient) of 200 replicated draws of ``spec`` at ``params``."""
    leaf = params.expand(200, *params.shape).clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, params.shape[-1], dtype=params.dtype)
    with dg.validate_args(validate):
        if spec.kind == "op":
            extra = {"tau": 0.5} if "tau" in spec.hyperparameters else {}
            out = spec.fn(leaf, generator=torch.Generator().manual_seed(0), **hp(spec, **extra))
            loss = (out * weights).sum()
        else:
            out = dg.surrogate(lambda z: (z * weights).sum(-1) ** 2, leaf, distribution=spec.distribution,
                               estimator=spec.name, n_samples=2, generator=torch.Generator().manual_seed(0),
                               **hp(spec))
            loss = out.sum()
        (grad,) = torch.autograd.grad(loss, leaf)
    return out, grad


@pytest.mark.parametrize("validate", [True, False], ids=["validate", "no-validate"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", MASKED, ids=sid)
def test_masked_entries_never_sampled_and_get_zero_gradient(spec, dtype, validate):
    c = case_for(spec.distribution)
    for params in c.masked_params(dtype):
        masked = torch.isneginf(params)
        out, grad = _masked_draws(spec, params, validate)
        assert torch.isfinite(out).all(), "non-finite output with masked entries"
        assert torch.isfinite(grad).all(), "non-finite gradient with masked entries"
        assert (grad[:, masked] == 0).all(), "a masked entry got a gradient"
        if spec.kind == "op":
            assert (out[:, masked] == 0).all(), "a masked category was sampled (or got relaxed mass)"
            if not spec.relaxed:
                assert c.is_valid(out.double())


def test_masked_family_law():
    """sample / log_prob / support / mean of the family with masks: zero mass on masked categories."""
    family = dg.get_family("categorical")
    logits = case_for("categorical").masked_params(torch.float64)[0]
    masked = torch.isneginf(logits)
    z = family.sample(logits.expand(500, *logits.shape), torch.Generator().manual_seed(0))
    assert (z[:, masked] == 0).all() and case_for("categorical").is_valid(z)
    leaf = logits.clone().requires_grad_(True)
    lp = family.log_prob(leaf, z)
    assert torch.isfinite(lp).all()
    (grad,) = torch.autograd.grad(lp.sum(), leaf)
    assert torch.isfinite(grad).all() and (grad[masked] == 0).all()
    atoms, log_table = family.support(logits)
    torch.testing.assert_close(log_table.exp().sum(-1), torch.ones(3, dtype=torch.float64))
    assert (log_table[masked] == -float("inf")).all()
    assert (family.mean(logits)[masked] == 0).all()
    with pytest.raises(ValueError, match="every entry -inf"):
        family.check(torch.tensor([[0.0, 1.0], [-float("inf"), -float("inf")]]))


def test_masked_exact_gradient_is_zero_on_masked_entries():
    logits = case_for("categorical").masked_params(torch.float64)[0].clone().requires_grad_(True)
    w = torch.linspace(-1, 1, 5, dtype=torch.float64)
    grad = dg.exact.gradient(lambda z: ((z * w).sum(-1) ** 2).sum(-1), logits, distribution="categorical")
    assert torch.isfinite(grad).all() and (grad[torch.isneginf(logits)] == 0).all()


# ----------------------------------------------------------------------------- dim=

@pytest.mark.parametrize("spec", CATEGORICAL_OPS, ids=sid)
def test_dim_argument(spec):
    """``op(x, dim=d)`` is ``op(x.movedim(d, -1)).movedim(-1, d)`` for the same generator state, values
    and gradients; ``dim`` is a calling convention, not a hyperparameter."""
    assert "dim" not in spec.hyperparameters
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for dim in (0, 1, -3):
        a_leaf, b_leaf = x.clone().requires_grad_(True), x.movedim(dim, -1).clone().requires_grad_(True)
        a = spec.fn(a_leaf, dim=dim, generator=torch.Generator().manual_seed(2), **hp(spec))
        b = spec.fn(b_leaf, generator=torch.Generator().manual_seed(2), **hp(spec))
        torch.testing.assert_close(a, b.movedim(-1, dim), rtol=0, atol=0)
        (ga,) = torch.autograd.grad((a * v).sum(), a_leaf)
        (gb,) = torch.autograd.grad((b * v.movedim(dim, -1)).sum(), b_leaf)
        torch.testing.assert_close(ga, gb.movedim(-1, dim))
    for bad in (3, -4, 1.0, True, "0"):
        with pytest.raises(ValueError, match="dim"):
            spec.fn(x, dim=bad, generator=torch.Generator().manual_seed(0), **hp(spec))
    with pytest.raises(ValueError, match="hyperparameters"):
        dg.surrogate(lambda z: z.sum((-1, -2)), x, distribution="categorical", estimator=spec.name, dim=0,
                     **hp(spec))


# ----------------------------------------------------------------------------- torch.func

def _vmapped(fn, randomness, *args):
    return torch.func.vmap(fn, randomness=randomness)(*args)


@pytest.mark.parametrize("spec", OPS, ids=sid)
def test_vmap_and_grad(spec):
    """``vmap(op)`` and ``vmap(grad(op))`` equal the per-element eager calls for the same generator
    state (``randomness="same"``); an op whose sampler draws with the input's shape (``torch.poisson``),
    which vmap cannot give the same randomness, is compared with the batched eager call under
    ``randomness="different"`` instead. ``grad`` alone equals ``torch.autograd.grad``."""
    c = case_for(spec.distribution)
    p = c.law_params().double()
    batch = torch.stack([p, 0.5 * p, 2.0 * p])
    v = torch.linspace(-1, 1, batch.numel(), dtype=batch.dtype).reshape(batch.shape)

    def op(x):
        return spec.fn(x, generator=gen, **hp(spec))

    def loss(x, w):
        return (op(x) * w).sum()

    def eager(x, w):
        leaf = x.clone().requires_grad_(True)
        out = spec.fn(leaf, generator=torch.Generator().manual_seed(0), **hp(spec))
        return out.detach(), torch.autograd.grad((out * w).sum(), leaf)[0]

    gen = torch.Generator().manual_seed(0)
    try:
        out = _vmapped(op, "same", batch)
        gen = torch.Generator().manual_seed(0)
        grads = _vmapped(torch.func.grad(loss), "same", batch, v)
        expected = [eager(batch[i], v[i]) for i in range(3)]
        exp_out = torch.stack([e[0] for e in expected])
        exp_grad = torch.stack([e[1] for e in expected])
    except RuntimeError as e:
        if "same randomness" not in str(e):
            raise
        gen = torch.Generator().manual_seed(0)
        out = _vmapped(op, "different", batch)
        gen = torch.Generator().manual_seed(0)
        grads = _vmapped(torch.func.grad(loss), "different", batch, v)
        exp_out, exp_grad = eager(batch, v)
    torch.testing.assert_close(out, exp_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads, exp_grad, rtol=1e-9, atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    g_func = torch.func.grad(loss)(batch, v)
    torch.testing.assert_close(g_func, eager(batch, v)[1], rtol=1e-9, atol=1e-12)


def test_value_checks_skipped_under_vmap_but_run_eagerly():
    bad = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(ValueError, match="logits"):
        dg.categorical.stgs(bad, generator=torch.Generator().manual_seed(0))
    out = torch.func.vmap(lambda x: dg.categorical.stgs(x, generator=torch.Generator().manual_seed(0)),
                          randomness="same")(bad)
    assert out.shape == bad.shape
    assert dg.get_default_validate_args()


def test_value_checks_skipped_under_torch_compile():
    """The data-dependent checks would break a full graph; under dynamo tracing they are skipped."""
    x = torch.tensor([[0.0, -float("inf"), 1.0]])

    def checked(t):
        return dg.categorical.check_logits(t).softmax(-1) + dg.poisson.check_rate(t.exp() + 1).sum()

    out = torch.compile(checked, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(out, checked(x))
    with pytest.raises(ValueError, match="logits"):
        checked(torch.tensor([[0.0, float("nan")]]))  # eagerly, the check runs
