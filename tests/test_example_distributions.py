"""examples/categorical_vae_distributions.py on a tiny config: the ELBO of the VAE written only with
dg.Categorical / kl_divergence improves, for a pathwise estimator of each kind."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "categorical_vae_distributions.py"


def _load():
    spec = importlib.util.spec_from_file_location("categorical_vae_distributions", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("estimator", ["gst", "stgs", "reinmax"])
def test_tiny_vae_learns(estimator):
    example = _load()
    out = example.train(example.Config(estimator=estimator, steps=200, pixels=48, latents=4, classes=5,
                                       hidden=32, batch=32, lr=3e-3))
    # synthetic data: 10 prototypes with 5% flipped pixels; the untrained decoder is at ~48 log 2 nats
    assert out["last_elbo"] > out["first_elbo"] + 3.0, out  # measured: +8.2 (gst), +7.4 (stgs), +6.2 (reinmax)
