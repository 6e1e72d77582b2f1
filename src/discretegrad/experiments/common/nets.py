"""Network builders: PyTorch's default ``nn.Linear`` initialisation drawn from an explicit
generator, and MLPs with a named activation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["init_linear", "linear", "ACTIVATIONS", "mlp"]


def init_linear(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """PyTorch's default ``nn.Linear`` initialisation (uniform ±1/√fan_in for weight and bias,
    i.e. Kaiming-uniform with a = √5), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """An ``nn.Linear`` with :func:`init_linear`'s initialisation (never torch's global RNG)."""
    return init_linear(nn.utils.skip_init(nn.Linear, in_features, out_features), generator)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "none": nn.Identity,
}


def mlp(sizes: Sequence[int], activation: str, generator: torch.Generator, final_activation: str = "none") -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with ``activation`` between them and
    ``final_activation`` after the last (GST's ReLU on the encoder logits)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        # skip_init: build the layer without its own initialisation (which would draw from torch's global RNG)
        layers.append(init_linear(nn.utils.skip_init(nn.Linear, a, b), generator))
        last = i == len(sizes) - 2
        layers.append(ACTIVATIONS[final_activation if last else activation]())
    return nn.Sequential(*layers)
