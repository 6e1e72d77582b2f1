"""What only a GPU can show (marker ``cuda``: run with ``pytest -m cuda`` on a machine with CUDA;
skipped elsewhere): every registered op runs on the input's device with a generator of that
device, returns a valid sample in the input's dtype and a finite gradient on that device, refuses a
generator of another device, and compiles with inductor (Triton) to the eager result.

The fused categorical ops are also pinned to their autograd references on CUDA
(``tests/test_fused.py``, parametrised over ``_devices.DEVICES``).
"""

from __future__ import annotations

import pytest
import torch

import discretegrad as dg
from problems import case_for

pytestmark = pytest.mark.cuda
OPS = [s for s in dg.estimators() if s.kind == "op"]


def sid(spec):
    return f"{spec.distribution}:{spec.name}"


def _hp(spec):
    c = case_for(spec.distribution)
    return {k: v for k, v in c.test_hparams.items() if k in spec.hyperparameters}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", OPS, ids=sid)
def test_op_on_cuda(spec, dtype):
    c = case_for(spec.distribution)
    params = c.law_params().to("cuda", torch.float32)
    params = params.to(dtype) if spec.distribution == "categorical" else params
    leaf = params.clone().requires_grad_(True)
    out = spec.fn(leaf, generator=torch.Generator("cuda").manual_seed(0), **_hp(spec))
    assert out.device == leaf.device and out.dtype == leaf.dtype
    assert spec.relaxed or c.is_valid(out.float().cpu(), **_hp(spec))
    (grad,) = torch.autograd.grad(out.float().sum(), leaf)
    assert grad.device == leaf.device and torch.isfinite(grad.float()).all()
    with pytest.raises(ValueError, match="generator"):
        spec.fn(leaf, generator=torch.Generator().manual_seed(0), **_hp(spec))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.parametrize("name", ["st", "stgs", "gst", "reinmax", "gumbel_rao"])
def test_inductor_on_cuda_matches_eager(name):
    import torch._inductor.config as inductor_config

    op = dg.registry.get(name, distribution="categorical").fn
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(64, 8, 10, device="cuda", generator=g)
    v = torch.randn(64, 8, 10, device="cuda", generator=g)

    def run(f):
        leaf = x.clone().requires_grad_(True)
        out = f(leaf)
        return out.detach(), torch.autograd.grad((out * v).sum(), leaf)[0]

    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True), torch.random.fork_rng(devices=[0]):
        compiled = torch.compile(lambda t: op(t), fullgraph=True)
        torch.manual_seed(0)
        eager = run(op)
        torch.manual_seed(0)
        traced = run(compiled)
    torch.testing.assert_close(traced[0], eager[0])
    torch.testing.assert_close(traced[1], eager[1], rtol=1e-4, atol=1e-5)
