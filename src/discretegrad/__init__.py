"""discretegrad: gradient estimators for discrete random variables in PyTorch.

Drop-in ops live in per-family modules (``dg.categorical.gst(logits, tau=0.5)``); every
estimator, including those that need the cost function, is reachable through one call,
:func:`surrogate`. :mod:`discretegrad.exact` enumerates exact expectations and
:mod:`discretegrad.diagnostics` compares estimators against them. ``dg.Categorical(logits=l,
estimator="gst", tau=0.5).rsample()`` and the other :mod:`discretegrad.distributions` objects are
``torch.distributions`` drop-ins; :mod:`discretegrad.nn` has the layers.

Importing the package registers every family and estimator, once: the family modules
imported below are the one list of them (each registers its family, its drop-in ops and the
generic score-function estimators that apply to it). Nothing else has import side effects.
"""

# The family modules: the one list of what is registered.
from discretegrad import bernoulli, binomial, categorical, categorical_sf, poisson, subsets, subsets_map, trees

from discretegrad import demo, diagnostics, distributions, exact, nn, noise, relax, schedules, score_function
from discretegrad.distributions import Arborescence, Bernoulli, Binomial, Categorical, Poisson, SpanningTree, TopK
from discretegrad._validation import get_default_validate_args, set_default_validate_args, validate_args
from discretegrad.family import Family
from discretegrad.registry import EstimatorSpec, estimators, families, register
from discretegrad.registry import get as get_estimator
from discretegrad.registry import get_family
from discretegrad.surrogate import surrogate

__version__ = "0.1.0"

__all__ = [
    "Arborescence",
    "Bernoulli",
    "Binomial",
    "Categorical",
    "Poisson",
    "SpanningTree",
    "TopK",
    "EstimatorSpec",
    "Family",
    "bernoulli",
    "binomial",
    "categorical",
    "categorical_sf",
    "demo",
    "diagnostics",
    "distributions",
    "estimators",
    "exact",
    "families",
    "get_default_validate_args",
    "get_estimator",
    "get_family",
    "nn",
    "noise",
    "poisson",
    "register",
    "relax",
    "schedules",
    "score_function",
    "set_default_validate_args",
    "subsets",
    "subsets_map",
    "surrogate",
    "trees",
    "validate_args",
]
