"""ListOps data: the standard d20s test set (verified, cached), generated training and validation
splits, the paper code's preprocessing, encoding and length-bucketed batches.

* **Test set.** ``test_d20s.tsv`` of Nangia & Bowman (2018), 10,000 lines ``label<TAB>expression``,
  SHA-256 :data:`TEST_SHA256`. Read from ``root=DIR`` (then copied, verified, into the cache) or
  from the cache ``$DISCRETEGRAD_DATA/listops`` (default ``~/.cache/discretegrad/listops``). It is
  only evaluated on, never trained on; every line must parse and its label must equal the
  expression's value (:func:`~.listops_gen.value`), which checks the semantics against the file.
* **Training and validation** are generated (:mod:`.listops_gen`): ``train_size + valid_size``
  distinct trees for a data seed, none of them a test expression; the first ``valid_size`` of a
  seeded shuffle are the validation split (as the latent-tree-LSTM split takes the first 1,000
  lines of the shuffled training file).
* **Preprocessing** as GST's code: tokens of :func:`~.listops_gen.tokens`, the length filter
  (keep fewer than ``max_tokens`` = 100 tokens: 8,689 of the 10,000 test lines), a fixed
  vocabulary (``<unk>``, ``<pad>`` and the 16 tokens), and **11 output classes**: the label
  vocabulary of the paper's code holds ``<unk>`` next to the ten digits, so digit ``d`` is class
  ``d + 1`` and class 0 is never a target (the quirk is kept so the classifier has the paper's shape).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from discretegrad.experiments.data import listops_gen as G

__all__ = ["TEST_FILE", "TEST_SHA256", "VOCAB", "PAD", "N_CLASSES", "Example", "Batch", "listops_cache_dir",
           "read_test_lines", "load_test", "generated_splits", "encode", "bucket_batches", "MAX_TOKENS"]

TEST_FILE = "test_d20s.tsv"
TEST_SHA256 = "71335416e6896e8dd8dc69281c8ed9b37316382d05d3705d660461564e843840"
TEST_LINES = 10000
MAX_TOKENS = 100
VOCAB = ("<unk>", "<pad>", "[", "]", "min", "max", "med", "sm", *(str(d) for d in range(10)))
PAD = VOCAB.index("<pad>")
N_CLASSES = 11  # <unk> + 10 digits (the paper code's label vocabulary)
_INDEX = {t: i for i, t in enumerate(VOCAB)}


@dataclasses.dataclass(frozen=True)
class Example:
    """One preprocessed example: token ids, class (digit + 1) and the gold constituents."""

    ids: tuple[int, ...]
    label: int
    spans: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Batch:
    """Padded token ids ``[B, L]``, lengths ``[B]``, labels ``[B]`` and the examples themselves."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    examples: tuple[Example, ...]


def listops_cache_dir() -> Path:
    """``$DISCRETEGRAD_DATA/listops`` if the variable is set, else ``~/.cache/discretegrad/listops``."""
    base = os.environ.get("DISCRETEGRAD_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "discretegrad") / "listops"


def _verified_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TEST_SHA256:
        raise ValueError(f"Expected {path} to have SHA-256 {TEST_SHA256} (the ListOps d20s test set), but got {digest}")
    return data


def _install(data: bytes, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, delete=False) as f:
        f.write(data)
    os.replace(f.name, cache / TEST_FILE)


def read_test_lines(root: str | None = None) -> list[str]:
    """The verified lines of ``test_d20s.tsv``: from ``root`` (installed into the cache when the
    cache lacks it) or else from the cache. ``FileNotFoundError`` / ``ValueError`` with one line."""
    cache = listops_cache_dir()
    if root is not None:
        path = Path(root) / TEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"Expected {TEST_FILE} in data_root {root}, but it is not there")
        data = _verified_bytes(path)
        if not (cache / TEST_FILE).is_file():
            _install(data, cache)
    else:
        path = cache / TEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"Expected the ListOps test set {TEST_FILE} (SHA-256 {TEST_SHA256}) in the cache {cache} (set "
                f"$DISCRETEGRAD_DATA to change it), but it is not there: run once with --set data_root=DIR, DIR "
                "holding the file (e.g. the d20s release of nyu-mll/spinn), and it is verified and cached")
        data = _verified_bytes(path)
    lines = data.decode("utf-8").splitlines()
    if len(lines) != TEST_LINES:
        raise ValueError(f"Expected {TEST_LINES} lines in {TEST_FILE}, but got {len(lines)}")
    return lines


def encode(tree: G.Tree) -> Example:
    toks = G.tokens(tree)
    return Example(tuple(_INDEX[t] for t in toks), G.value(tree) + 1, tuple(G.gold_spans(tree)))


@functools.lru_cache(maxsize=4)
def _test_trees(root: str | None) -> tuple[G.Tree, ...]:
    trees = []
    for i, line in enumerate(read_test_lines(root)):
        label, _, expr = line.partition("\t")
        tree = G.parse(expr)
        if not label.isdigit() or G.value(tree) != int(label):
            raise ValueError(f"Expected line {i + 1} of {TEST_FILE} to be labelled with its value "
                             f"{G.value(tree)}, but got {label!r}")
        trees.append(tree)
    return tuple(trees)


def _keep(examples: Sequence[Example], max_tokens: int) -> list[Example]:
    return [e for e in examples if len(e.ids) < max_tokens]


def load_test(root: str | None = None, max_tokens: int = MAX_TOKENS) -> list[Example]:
    """The test examples with fewer than ``max_tokens`` tokens (8,689 at the paper's 100)."""
    return _keep([encode(t) for t in _test_trees(root)], max_tokens)


@functools.lru_cache(maxsize=4)
def _generated(seed: int, train_size: int, valid_size: int, root: str | None,
               draw_max_tokens: int | None) -> tuple[tuple, tuple]:
    banned = {G.to_string(t) for t in _test_trees(root)}
    trees = G.generate_distinct(seed, train_size + valid_size, exclude=banned, max_tokens=draw_max_tokens)
    random.Random(seed + 1).shuffle(trees)
    return tuple(trees[valid_size:]), tuple(trees[:valid_size])


def generated_splits(seed: int, train_size: int, valid_size: int, root: str | None = None,
                     max_tokens: int = MAX_TOKENS,
                     draw_max_tokens: int | None = None) -> tuple[list[Example], list[Example]]:
    """``(train, valid)`` examples: ``train_size + valid_size`` distinct generated lines (never a
    test expression), split after a seeded shuffle, each split then length-filtered. With
    ``draw_max_tokens`` the lines are drawn from the distribution conditioned on fewer tokens
    (every one of the ``train_size + valid_size`` lines is that short; the filter then keeps all)."""
    train, valid = _generated(seed, train_size, valid_size, root, draw_max_tokens)
    return _keep([encode(t) for t in train], max_tokens), _keep([encode(t) for t in valid], max_tokens)


def collate(examples: Sequence[Example], device: str | torch.device = "cpu") -> Batch:
    n = max(len(e.ids) for e in examples)
    tokens = torch.full((len(examples), n), PAD, dtype=torch.long)
    for i, e in enumerate(examples):
        tokens[i, : len(e.ids)] = torch.tensor(e.ids)
    lengths = torch.tensor([len(e.ids) for e in examples])
    labels = torch.tensor([e.label for e in examples])
    return Batch(tokens.to(device), lengths.to(device), labels.to(device), tuple(examples))


def bucket_batches(examples: Sequence[Example], batch_size: int, generator: torch.Generator | None,
                   device: str | torch.device = "cpu", pool: int = 100) -> Iterator[Batch]:
    """Length-bucketed batches (as torchtext's BucketIterator): with a generator, shuffle, sort
    each chunk of ``pool`` batches by length, cut it into batches and shuffle their order;
    without one (evaluation), batches of sorted lengths in a fixed order."""
    if generator is None:
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
        for s in range(0, len(order), batch_size):
            yield collate([examples[i] for i in order[s:s + batch_size]], device)
        return
    perm = torch.randperm(len(examples), generator=generator).tolist()
    chunk = batch_size * pool
    batches = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s:s + chunk], key=lambda i: len(examples[i].ids))
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    for k in torch.randperm(len(batches), generator=generator).tolist():
        yield collate([examples[i] for i in batches[k]], device)


__all__ += ["collate", "TEST_LINES"]
