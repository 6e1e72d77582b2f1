"""Imports every experiment module (the one list of them)."""

from discretegrad.experiments import categorical_vae  # noqa: F401
