"""Experiment harness and the papers' experiments (import submodules explicitly)."""
