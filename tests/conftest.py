import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A fresh CPU generator with a fixed seed per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _validation_on():
    import discretegrad as dg

    dg.set_default_validate_args(True)
    yield
    dg.set_default_validate_args(True)
