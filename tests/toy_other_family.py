"""Test plugin (subprocess tests only): registers an estimator for a distribution other than the
toy experiment's, to check that ``--estimators`` rejects estimators of the wrong family. It is
never imported into the pytest process, so the registry seen by generic suites stays clean."""

from discretegrad.registry import register


@register("toy_other_estimator", distribution="toy_other_family", reference="harness tests")
def toy_other_estimator(params, *, generator=None):
    """Identity (never called)."""
    return params
