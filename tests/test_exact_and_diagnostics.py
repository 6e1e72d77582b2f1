"""The exact oracle against closed forms, the surrogate contract, diagnostics and the demo CLI."""

from __future__ import annotations

import math

import pytest
import torch

import discretegrad as dg
from _nets import linear
from discretegrad.cli import main


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_exact_linear_and_quadratic_closed_forms():
    theta = _logits(3, 2, 4).requires_grad_(True)
    w = _logits(2, 4, seed=1)
    pi = torch.softmax(theta, -1)
    lin = dg.exact.expectation(lambda z: (z * w).sum((-1, -2)), theta, distribution="categorical")
    torch.testing.assert_close(lin, (pi * w).sum((-1, -2)))
    # E[(Σ_v w_v·z_v)²] = Σ_v Var(w_v·z_v) + (Σ_v E[w_v·z_v])² for independent variables
    mean_v = (pi * w).sum(-1)
    var_v = (pi * w**2).sum(-1) - mean_v**2
    quad = dg.exact.expectation(lambda z: (z * w).sum((-1, -2)) ** 2, theta, distribution="categorical")
    torch.testing.assert_close(quad, var_v.sum(-1) + mean_v.sum(-1) ** 2)
    g_exact = dg.exact.gradient(lambda z: (z * w).sum((-1, -2)) ** 2, theta, distribution="categorical")
    (g_closed,) = torch.autograd.grad((var_v.sum(-1) + mean_v.sum(-1) ** 2).sum(), theta)
    torch.testing.assert_close(g_exact, g_closed)


def test_exact_batch_ndim_and_size_limit():
    theta = _logits(2, 3, 5)
    f = lambda z: (z[..., 0] * torch.arange(3.0, dtype=z.dtype)).sum(-1) ** 2  # noqa: E731
    a = dg.exact.expectation(f, theta, distribution="categorical")
    b = dg.exact.expectation(f, theta, distribution="categorical", batch_ndim=1)
    torch.testing.assert_close(a, b)
    per_var = dg.exact.expectation(lambda z: z[..., 0], theta, distribution="categorical")
    torch.testing.assert_close(per_var, torch.softmax(theta, -1)[..., 0])
    with pytest.raises(ValueError, match="max_configs=100.*5\\^3 = 125"):
        dg.exact.expectation(f, theta, distribution="categorical", max_configs=100)
    with pytest.raises(ValueError, match="batch_ndim"):
        dg.exact.expectation(f, theta, distribution="categorical", batch_ndim=5)


def test_exact_agrees_with_monte_carlo():
    """Enumeration vs a 200k-sample Monte Carlo mean, each against the other within 5 SE."""
    theta = _logits(1, 3, 3)
    f = lambda z: torch.sin(3 * (z * torch.arange(3.0, dtype=z.dtype)).sum((-1, -2)))  # noqa: E731
    exact = dg.exact.expectation(f, theta, distribution="categorical")
    z = dg.categorical.st(theta.expand(200000, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    vals = f(z)
    # 5 standard errors: two-sided false-failure rate 5.7e-7 (normal approximation, fixed seed)
    assert abs(vals.mean() - exact.item()) < 5 * vals.std() / math.sqrt(vals.numel())


def test_surrogate_batch_shape_prefixes_and_errors():
    theta = _logits(2, 3, 4)
    for keep in range(3):
        def f(z, keep=keep):
            return z[..., 0].sum(tuple(range(1 + keep, z.dim() - 1))) if keep < 2 else z[..., 0]
        out = dg.surrogate(f, theta, distribution="categorical", estimator="st", n_samples=5,
                           generator=torch.Generator().manual_seed(keep))
        assert out.shape == theta.shape[:keep]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with pytest.raises(ValueError, match="n_samples"):
        dg.surrogate(lambda z: z.sum((-1, -2, -3)), theta, distribution="categorical", estimator="st", n_samples=0,
                     generator=gen())
    with pytest.raises(TypeError, match="f to be callable"):
        dg.surrogate(None, theta, distribution="categorical", estimator="st", generator=gen())
    with pytest.raises(TypeError, match="f to return a torch.Tensor"):
        dg.surrogate(lambda z: 1.0, theta, distribution="categorical", estimator="st", generator=gen())
    with pytest.raises(ValueError, match="f to return costs"):
        dg.surrogate(lambda z: z, theta, distribution="categorical", estimator="st", generator=gen())


def test_surrogate_trains_a_decoder_and_encoder_together():
    g = torch.Generator().manual_seed(0)
    enc = linear(4, 3 * 5, g)
    dec = linear(15, 4, g)
    x = torch.randn(8, 4, generator=g)
    logits = enc(x).view(8, 3, 5)
    loss = dg.surrogate(lambda z: ((dec(z.flatten(-2)) - x) ** 2).sum(-1), logits,
                        distribution="categorical", estimator="gst", tau=0.5, gap="pi", generator=g).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*enc.parameters(), *dec.parameters()])


def test_diagnostics_compare_records():
    theta = _logits(1, 2, 3)
    w = _logits(2, 3, seed=2)
    lin = lambda z: (z * w).sum((-1, -2))  # noqa: E731
    reports = dg.diagnostics.compare(lin, theta, distribution="categorical",
                                     estimators=["st", ("stgs", {"tau": 0.5})], draws=200,
                                     generator=torch.Generator().manual_seed(0))
    st, stgs = reports
    # for a linear f, ST at tau = 1 is exact and deterministic: d/dθ Σ π·w = J(π) w
    assert st.bias < 1e-12 and st.variance < 1e-24 and st.cosine == pytest.approx(1.0)
    assert stgs.estimator == "stgs(tau=0.5)" and stgs.variance > 0 and stgs.bias_se > 0
    assert stgs.mse == pytest.approx(stgs.bias**2 + stgs.variance * (199 / 200), rel=1e-6)
    table = dg.diagnostics.format_table(reports)
    assert "stgs(tau=0.5)" in table and "cos(mean, exact)" in table
    assert dg.diagnostics.to_markdown(reports).count("\n") == 3
    with pytest.raises(ValueError, match="estimator"):
        dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=["nope"], draws=10)
    with pytest.raises(ValueError, match="hyperparameters"):
        dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=[("st", {"gap": 1})], draws=10)
    with pytest.raises(ValueError, match="draws"):
        dg.diagnostics.compare(lin, theta, distribution="categorical", draws=1)
    # a given exact gradient is used as it is (the leaderboard computes it once per problem)
    exact = dg.exact.gradient(lin, theta, distribution="categorical")
    again = dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=["stgs"], draws=50, exact=exact,
                                   generator=torch.Generator().manual_seed(0))[0]
    fresh = dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=["stgs"], draws=50,
                                   generator=torch.Generator().manual_seed(0))[0]
    assert {**again.as_dict(), "seconds_per_draw": 0} == {**fresh.as_dict(), "seconds_per_draw": 0}
    shifted = dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=["stgs"], draws=50,
                                     exact=exact + 1.0, generator=torch.Generator().manual_seed(0))[0]
    assert shifted.exact_norm != fresh.exact_norm and shifted.bias != fresh.bias
    with pytest.raises(ValueError, match="Expected exact to have 6 entries"):
        dg.diagnostics.compare(lin, theta, distribution="categorical", estimators=["st"], draws=10, exact=exact[..., :2])


def test_demo_cli_writes_tables_and_plots(tmp_path, capsys):
    assert main(["demo", "--draws", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gst" in out and "reinmax" in out
    for problem in dg.demo.problems():
        assert (tmp_path / f"{problem.name}.md").read_text().count("|") > 10
        assert (tmp_path / f"{problem.name}.png").stat().st_size > 1000


def test_cli_bad_input_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--draws", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert main(["demo", "--draws", "1", "--out", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "draws" in err and err.count("\n") == 1
