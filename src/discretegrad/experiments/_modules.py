"""Imports every experiment module (the one list of them; the harness imports this module by
name, ``discretegrad.harness.contract.BUILTIN_EXPERIMENTS``)."""

from discretegrad.experiments import (  # noqa: F401
    bernoulli_vae,
    categorical_vae,
    l2x,
    l2x_aspect,
    listops,
    nri_graph_layout,
    poisson_gan,
)
