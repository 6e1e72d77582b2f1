"""Seeds derived by hashing ``(seed, stream name)``: every source of randomness of a run (its
initialisation, shuffling, estimator noise, binarisation, test sampling, probes) gets its own
generator, so adding a stream or switching a probe off does not change the others."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derived_seed", "derived_generator"]


def derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from ``(seed, name)`` by hashing: streams are independent, and adding
    a stream does not shift the others (DomainBed's ``seed_hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") >> 1


def derived_generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with :func:`derived_seed` ``(seed, name)``."""
    return torch.Generator(device=torch.device(device)).manual_seed(derived_seed(seed, name))
