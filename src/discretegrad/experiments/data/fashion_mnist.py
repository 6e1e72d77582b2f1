"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.

The package installs the gzip IDX files under ``/usr/share/datasets/fashion-mnist/``; they are
verified against the SHA-256 of their decompressed content. ``root=DIR`` reads a directory of
the four IDX files instead (structural checks only).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from discretegrad.experiments.data.idx import FILES, check_split, find_file, load_pair

__all__ = ["load_fashion_mnist", "FASHION_MNIST_DIR", "FASHION_MNIST_SHA256"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the decompressed content of the Debian package's files
# (dataset-fashion-mnist 0.0~git20200523.55506a9-1), measured with `zcat FILE | sha256sum`.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST, same contract as :func:`load_mnist` (default files: Debian ``dataset-fashion-mnist``)."""
    split = check_split(split)
    if root is not None:
        return load_pair(Path(root), split, None)
    if not all(find_file(FASHION_MNIST_DIR, base) for base in FILES[split]):
        raise FileNotFoundError(
            f"Fashion-MNIST is not available in {FASHION_MNIST_DIR}. Install it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root=DIR with the four IDX files "
            "(raw or .gz)"
        )
    return load_pair(FASHION_MNIST_DIR, split, FASHION_MNIST_SHA256)
