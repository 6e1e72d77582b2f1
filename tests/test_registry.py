"""The registry and its coverage: no estimator or distribution escapes the generic suite."""

from __future__ import annotations

import importlib
import inspect
import re
import sys

import pytest

import discretegrad as dg
from problems import case_for


def test_every_distribution_has_fixtures():
    for name in dg.families():
        assert case_for(name) is not None, f"add tests/problems/{name}.py for distribution {name!r}"


def test_every_estimator_is_covered():
    """Biased estimators need an independent gradient reference or a named dedicated test;
    every hyperparameter needs invalid values; unbiased ones are checked against dg.exact."""
    for spec in dg.estimators():
        case = case_for(spec.distribution)
        assert case is not None
        if not spec.unbiased:
            assert spec.name in case.references or spec.name in case.covered_by, (
                f"biased estimator {spec.distribution}:{spec.name} has no gradient reference "
                f"(tests/problems/{spec.distribution}.py: references or covered_by)")
        if spec.name in case.covered_by:
            module, func = case.covered_by[spec.name].split("::")
            test = getattr(importlib.import_module(module), func, None)
            assert test is not None, f"{case.covered_by[spec.name]} does not exist"
            assert _calls_estimator(test, spec), (
                f"{case.covered_by[spec.name]} does not call {spec.distribution}:{spec.name} "
                f"(its function {spec.fn.__name__}, the public op it wraps, or estimator={spec.name!r})")
        missing = [h for h in spec.hyperparameters if h not in case.bad_hparams and h not in case.test_hparams]
        assert not missing, f"{spec.distribution}:{spec.name}: no invalid values listed for {missing}"


def _calls_estimator(test, spec) -> bool:
    """Whether the source of ``test`` uses the estimator: calls (or passes, as ``dg.categorical.gumbel_rao``)
    its function or a public function of its module that it wraps (``_l2x`` wraps ``l2x``), or
    names it as ``estimator="<name>"``."""
    source = inspect.getsource(test)
    module = sys.modules[spec.fn.__module__]
    names = {spec.fn.__name__} | {n for n in spec.fn.__code__.co_names
                                  if not n.startswith("_") and inspect.isfunction(getattr(module, n, None))}
    if any(re.search(rf"\.{re.escape(n)}\b|\b{re.escape(n)}\s*\(", source) for n in names):
        return True
    return re.search(rf"estimator\s*=\s*['\"]{re.escape(spec.name)}['\"]", source) is not None


def _uses_stgs_only():
    return dg.categorical.stgs(dg_logits())


def test_covered_by_check_can_fail():
    assert _calls_estimator(_uses_stgs_only, dg.get_estimator("stgs", distribution="categorical"))
    assert not _calls_estimator(_uses_stgs_only, dg.get_estimator("gumbel_rao", distribution="categorical"))
    assert not _calls_estimator(_uses_stgs_only, dg.get_estimator("st", distribution="categorical"))


def test_listing_records():
    specs = dg.estimators("categorical")
    names = [s.name for s in specs]
    assert names == sorted(names)
    assert {"st", "stgs", "gumbel_softmax", "gumbel_rao", "gst", "nz_gst", "reinmax"} <= set(names)
    gst = dg.get_estimator("gst", distribution="categorical")
    rec = gst.describe()
    assert rec["hyperparameters"] == {"tau": 1.0, "gap": 1.0}
    assert rec["unbiased"] is False and rec["needs_f"] is False and "Fan" in rec["reference"]
    assert gst.fn is dg.categorical.gst
    assert dg.get_estimator("gumbel_rao", distribution="categorical").hyperparameters["mc_samples"] == 100
    rloo = dg.get_estimator("rloo", distribution="bernoulli")
    assert rloo.min_samples == 2 and rloo.describe()["min_samples"] == 2 and gst.min_samples == 1
    with pytest.raises(ValueError, match="n_samples to be an int >= 2"):
        dg.surrogate(lambda z: z.sum(-1), dg_logits(), distribution="bernoulli", estimator="rloo", n_samples=1)


def test_unknown_names_list_known_ones():
    with pytest.raises(ValueError, match=r"estimator.*\[.*'gst'.*but got 'nope'"):
        dg.surrogate(lambda z: z.sum(-1), dg_logits(), distribution="categorical", estimator="nope")
    with pytest.raises(ValueError, match=r"distribution.*categorical.*but got 'gaussian'"):
        dg.surrogate(lambda z: z.sum(-1), dg_logits(), distribution="gaussian", estimator="st")
    with pytest.raises(ValueError, match="distribution"):
        dg.estimators("gaussian")


def dg_logits():
    import torch

    return torch.zeros(2, 3)


def test_register_is_one_decorator(monkeypatch):
    from discretegrad import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @dg.register("my_st", distribution="categorical", reference="test")
    def my_st(logits, *, tau: float = 2.0, generator=None):
        """My estimator."""
        return dg.categorical.st(logits, tau=tau, generator=generator)

    spec = dg.get_estimator("my_st", distribution="categorical")
    assert spec.hyperparameters == {"tau": 2.0} and spec.summary == "My estimator."
    with pytest.raises(ValueError, match="already registered"):
        dg.register("my_st", distribution="categorical")(my_st)
    with pytest.raises(TypeError, match="needs a default"):
        dg.register("bad", distribution="categorical")(lambda logits, *, tau, generator=None: logits)


def test_families_are_listed_and_the_distributions_module_is_importable():
    import types

    import discretegrad.distributions as module

    assert isinstance(module, types.ModuleType)  # no function of the package shadows it
    assert dg.families() == sorted(dg.families())
    assert {"bernoulli", "binomial", "categorical", "poisson", "topk", "spanning_tree", "arborescence"} <= set(
        dg.families())
    assert module.get_distribution("topk") is dg.get_family("topk")
