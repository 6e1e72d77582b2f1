"""Test plugin (subprocess tests only): registers a family other than the toy experiment's, with one
estimator, to check that ``--estimators`` rejects estimators of the wrong family. It is never
imported into the pytest process, so the registries seen by the generic suites stay clean."""

from torch.distributions import constraints

from discretegrad._validation import finite_float_tensor
from discretegrad.family import Family, Param
from discretegrad.registry import register, register_family


def _never(*args, **kwargs):
    raise AssertionError("the toy family's law is never used")


register_family(Family(name="toy_other_family", params=(Param("logits", constraints.real, lambda t, name: finite_float_tensor(name, t)),),
                       event_ndim=0, sample_fn=_never, log_prob_fn=_never, support_fn=_never, mean_fn=_never))


@register("toy_other_estimator", distribution="toy_other_family", reference="harness tests")
def toy_other_estimator(params, *, generator=None):
    """Identity (never called)."""
    return params
