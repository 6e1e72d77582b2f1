"""discretegrad: gradient estimators for discrete random variables in PyTorch.

Drop-in ops live in per-distribution modules (``dg.categorical.gst(logits, tau=0.5)``); every
estimator, including those that need the cost function, is reachable through one call,
:func:`surrogate`. :mod:`discretegrad.exact` enumerates exact expectations and
:mod:`discretegrad.diagnostics` compares estimators against them. Importing the package has no
side effects beyond filling the registry.
"""

from discretegrad import categorical, demo, diagnostics, exact, noise
from discretegrad import bernoulli, poisson, score_function
from discretegrad import subsets, trees
from discretegrad._validation import get_default_validate_args, set_default_validate_args, validate_args
from discretegrad.distributions import distributions
from discretegrad.registry import EstimatorSpec, estimators, register
from discretegrad.registry import get as get_estimator
from discretegrad.surrogate import surrogate

__version__ = "0.1.0"

__all__ = [
    "EstimatorSpec",
    "bernoulli",
    "poisson",
    "score_function",
    "categorical",
    "demo",
    "diagnostics",
    "distributions",
    "estimators",
    "exact",
    "get_default_validate_args",
    "get_estimator",
    "noise",
    "register",
    "set_default_validate_args",
    "surrogate",
    "validate_args",
    "subsets",
    "trees",
]
