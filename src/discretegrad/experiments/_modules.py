"""Imports every experiment module (the one list of them)."""

from discretegrad.experiments import bernoulli_vae, categorical_vae, poisson_gan  # noqa: F401
