"""The IDX file format (LeCun et al.) of the MNIST-layout data sets: reading, checking, and the
four-file directory layout shared by every IDX data source.

Files are raw or gzip-compressed (detected by the gzip magic bytes, whatever the file name).
Every file is checked before use: IDX magic (unsigned bytes, expected number of dimensions),
declared sizes against the file length, images and labels of equal count, and, where the
canonical files are known, SHA-256 of the decompressed content. A bad file raises
``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import torch

from discretegrad import _validation as V

__all__ = ["SPLITS", "FILES", "parse_idx", "read_idx", "find_file", "load_pair", "check_split"]

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Per split: the image file's and the label file's base names (each may carry ``.gz``)."""

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


# ----------------------------------------------------------------------------- IDX format

def parse_idx(data: bytes, *, ndim: int, name: str = "IDX data") -> torch.Tensor:
    """Decode IDX bytes of unsigned bytes with ``ndim`` dimensions into a uint8 tensor.

    Layout: two zero bytes, type code ``0x08`` (unsigned byte), the number of dimensions, then
    one big-endian int32 per dimension, then the values in C order.
    """
    header = 4 + 4 * ndim
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] != ndim:
        raise ValueError(
            f"Expected {name} to start with the IDX magic 00 00 08 {ndim:02x} (unsigned bytes, {ndim} dims), "
            f"but got {data[:4].hex(' ') or 'an empty file'}"
        )
    if len(data) < header:
        raise ValueError(f"Expected {name} to hold a {header}-byte IDX header, but got {len(data)} bytes (truncated)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = 1
    for d in dims:
        size *= d
    if len(data) != header + size:
        raise ValueError(
            f"Expected {name} of shape {dims} to be {header + size} bytes, but got {len(data)} bytes "
            f"({'truncated' if len(data) < header + size else 'trailing data'})"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise ValueError(f"Expected {path} to be a valid gzip file, but decompression failed: {e}") from None


def read_idx(path: str | os.PathLike[str], *, ndim: int, sha256: str | None = None) -> torch.Tensor:
    """Read one IDX file (raw or gzip); check its SHA-256 (of the decompressed bytes) if given."""
    path = Path(path)
    data = _read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ValueError(
                f"Expected {path} to have SHA-256 {sha256}, but got {digest} (corrupt or different file; "
                "delete it to fetch or install it again)"
            )
    return parse_idx(data, ndim=ndim, name=str(path))


def find_file(root: Path, base: str) -> Path | None:
    for candidate in (root / base, root / (base + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_pair(root: Path, split: str, checksums: dict[str, str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    image_name, label_name = FILES[split]
    paths = [find_file(root, image_name), find_file(root, label_name)]
    missing = [n for n, p in zip((image_name, label_name), paths) if p is None]
    if missing:
        raise FileNotFoundError(f"Expected IDX files {missing} (raw or .gz) in {root}, but they are missing")
    images = read_idx(paths[0], ndim=3, sha256=checksums and checksums[image_name])
    labels = read_idx(paths[1], ndim=1, sha256=checksums and checksums[label_name])
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected as many labels as images in {root} ({split}), but got {images.shape[0]} images "
            f"and {labels.shape[0]} labels"
        )
    return images, labels.to(torch.int64)


def check_split(split: object) -> str:
    return V.choice("split", split, SPLITS)
