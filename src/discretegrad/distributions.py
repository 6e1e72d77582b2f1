"""Distribution families by name: the lookup the public API offers.

The :class:`~discretegrad.family.Family` objects are defined next to their estimators (one
module per family: :mod:`discretegrad.categorical`, :mod:`discretegrad.bernoulli`, ...) and kept in
:mod:`discretegrad.registry`; this module is where users look them up
(``discretegrad.distributions.get_distribution("topk")``), as ``dg.families()`` lists them.
"""

from __future__ import annotations

from discretegrad.family import Family
from discretegrad.registry import families, get_family

__all__ = ["Family", "families", "get_distribution"]


def get_distribution(name: str) -> Family:
    """The family called ``name``; ``ValueError`` listing the known names otherwise."""
    return get_family(name)
