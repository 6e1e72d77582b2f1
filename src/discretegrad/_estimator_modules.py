"""Imports every module that registers estimators or distributions (the one list of them)."""

from discretegrad import categorical  # noqa: F401
from discretegrad import bernoulli  # noqa: F401
from discretegrad import poisson  # noqa: F401
from discretegrad import score_function  # noqa: F401
from discretegrad import subsets, trees  # noqa: F401
