import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (the GPU-meaningful ones) are skipped where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker cuda; run with pytest -m cuda on a GPU)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


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


@pytest.fixture(autouse=True)
def _no_global_rng(request):
    """Every random draw in a test goes through an explicit generator: a test that draws from (or
    reseeds) torch's, NumPy's or Python's global RNG fails. The states are restored either way."""
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    changed = [name for name, same in [
        ("torch", torch.equal(torch.random.get_rng_state(), states[0])),
        ("numpy", _same_numpy_state(np.random.get_state(), states[1])),
        ("random", random.getstate() == states[2])] if not same]
    torch.random.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    if changed:
        pytest.fail(f"{request.node.nodeid} used the global RNG of {changed}; pass an explicit generator")


def _same_numpy_state(a, b) -> bool:
    return a[0] == b[0] and bool(np.array_equal(a[1], b[1])) and tuple(a[2:]) == tuple(b[2:])


def _repo_files() -> set[str]:
    """Tracked-but-modified and untracked (not ignored) files of the checkout; empty outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line[3:] for line in out.splitlines()}


@pytest.fixture(scope="session", autouse=True)
def _writes_stay_in_temporary_directories():
    """No test writes into the checkout: the set of modified/untracked files is the same after the
    session as before it (tests write under pytest's tmp_path)."""
    before = _repo_files()
    yield
    new = sorted(_repo_files() - before)
    assert not new, f"tests wrote into the checkout: {new[:10]}"
