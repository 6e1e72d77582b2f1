"""Test helpers for small networks whose initialisation never touches the global RNG."""

from __future__ import annotations

import math

import torch


def linear(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.nn.Linear:
    """``torch.nn.Linear`` with its default initialisation drawn from ``generator`` instead of the
    global RNG (same draws, in the same order, as ``Linear.reset_parameters``)."""
    lin = torch.nn.utils.skip_init(torch.nn.Linear, fan_in, fan_out)
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(fan_in)
        lin.bias.uniform_(-bound, bound, generator=generator)
    return lin
