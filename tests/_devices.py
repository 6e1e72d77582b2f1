"""``DEVICES``: parametrise a test over these to run it on the CPU everywhere and, through the
``cuda`` marker (skipped without CUDA, see ``conftest.py``), on the GPU where there is one."""

import pytest

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
