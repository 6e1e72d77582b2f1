"""Network builders: PyTorch's default ``nn.Linear`` initialisation (or TensorFlow's Glorot-uniform
with zero bias) drawn from an explicit generator, and MLPs with a named activation."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["INITS", "init_linear", "linear", "ACTIVATIONS", "mlp"]

INITS = ("torch", "glorot")


def init_linear(layer: nn.Linear, generator: torch.Generator, init: str = "torch") -> nn.Linear:
    """Initialise ``layer`` from ``generator``: ``"torch"``, PyTorch's default ``nn.Linear``
    initialisation (uniform ±1/√fan_in for weight and bias, i.e. Kaiming-uniform with a = √5);
    ``"glorot"``, TensorFlow's default for dense layers (weights uniform ±√(6/(fan_in + fan_out)),
    bias 0), the ARM code's."""
    if init not in INITS:
        raise ValueError(f"Expected init to be one of {INITS}, but got {init!r}")
    with torch.no_grad():
        if init == "glorot":
            bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
            layer.weight.uniform_(-bound, bound, generator=generator)
            if layer.bias is not None:
                layer.bias.zero_()
            return layer
        bound = 1.0 / math.sqrt(layer.in_features)
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


def mlp(sizes: Sequence[int], activation: str, generator: torch.Generator, final_activation: str = "none",
        init: str = "torch") -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with ``activation`` between them and
    ``final_activation`` after the last (GST's ReLU on the encoder logits), initialised by
    :func:`init_linear` (``init``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        # skip_init: build the layer without its own initialisation (which would draw from torch's global RNG)
        layers.append(init_linear(nn.utils.skip_init(nn.Linear, a, b), generator, init))
        last = i == len(sizes) - 2
        layers.append(ACTIVATIONS[final_activation if last else activation]())
    return nn.Sequential(*layers)
