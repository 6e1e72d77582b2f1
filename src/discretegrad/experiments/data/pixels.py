"""Pixel variants of a uint8 image batch that the protocols need: small pure functions.

:func:`continuous` (grey levels in [0, 1], the GST protocol), :func:`threshold`
(``pixel/255 > 0.5``, the ARM/pWGF protocol) and :func:`dynamic_binarize` (a fresh
``Bernoulli(pixel/255)`` draw each call, through an explicit generator: the DisARM protocol).
"""

from __future__ import annotations

import torch

__all__ = ["continuous", "threshold", "dynamic_binarize"]


def continuous(images: torch.Tensor) -> torch.Tensor:
    """Grey levels in [0, 1]: ``images / 255`` flattened to ``[N, 784]`` (float32)."""
    return images.reshape(images.shape[0], -1).to(torch.float32) / 255.0


def threshold(images: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Static binarisation ``1[pixel/255 > level]`` as float32 ``[N, 784]``."""
    return (continuous(images) > level).to(torch.float32)


def dynamic_binarize(grey: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh ``Bernoulli(grey)`` draw of grey levels in [0, 1] (call once per batch drawn)."""
    return torch.bernoulli(grey, generator=generator)
