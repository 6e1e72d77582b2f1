"""The SST graph-layout data (Paulus et al. 2020, NRI experiment): trajectories of a
force-directed layout algorithm on a latent random spanning tree.

Generation (the authors' protocol, ``reference/FACTS.md`` §3.5), vectorised over samples:

* the latent graph of a sample is the maximum spanning tree (Kruskal) of i.i.d. standard
  Gumbel weights on the ``n(n-1)/2`` edges of ``K_n`` (not uniform over trees);
* initial positions ``x_i ~ N(0, I_2)``; every frame is one Fruchterman-Reingold iteration
  (:func:`fr_step`) from the previous frame followed by :func:`recentre` (mean 0, largest
  ``|coordinate|`` 1); ``steps`` frames are kept (the Gaussian start is not one of them).

The Fruchterman-Reingold step is written here from its definition, with networkx's
``spring_layout(pos=..., iterations=1)`` conventions: ``k = 1/sqrt(n)``; temperature ``t`` =
0.1 x the larger side of the layout's bounding box; vertex ``i`` is pushed by
``F_i = sum_j (x_i - x_j) (k^2 / d_ij^2 - A_ij d_ij / k)`` (``d_ij`` clipped below at 0.01: a
repulsion between every pair, an attraction along edges) and moves by ``t F_i / |F_i|``, where a
force of length under 0.01 counts as length 0.1. networkx also draws (and discards) random
positions on each call; nothing here draws but the generator passed in.

Splits are generated in chunks of :data:`CHUNK` graphs, each from its own stream (``(seed, split,
chunk)`` hashed, so the first ``m`` graphs are the same whatever is loaded), stored once in the data
cache (``$DISCRETEGRAD_DATA/graph_layout`` or ``~/.cache/discretegrad/graph_layout``, or
``root=DIR``) as one ``torch.save`` file per chunk with a JSON sidecar holding its SHA-256 and the generation
parameters; a file whose checksum does not match is regenerated. :func:`load_graph_layout`
returns locations min-max normalised to ``[-1, 1]`` with the training split's extremes, as the
authors' loader does (every frame already has its largest ``|coordinate|`` at 1, so this is
nearly the identity).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from discretegrad.noise import symmetric_gumbel_like
from discretegrad.structures import kruskal
from discretegrad.experiments.common.seeding import derived_seed

__all__ = ["fr_step", "recentre", "layout_frame", "random_trees", "generate", "load_graph_layout",
           "graph_layout_cache_dir", "SPLIT_SIZES", "CHUNK", "MIN_DISTANCE", "MIN_FORCE"]

SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
MIN_DISTANCE = 0.01
"""Pairwise distances are clipped below at this value in the forces."""
MIN_FORCE = 0.01
"""A force shorter than this counts as length 0.1 (networkx's guard against a zero direction)."""
CHUNK = 1000
"""Graphs per generated (and cached) chunk; each chunk is drawn from its own ``(seed, split, chunk)`` stream."""
_FORMAT = 1


def fr_step(pos: torch.Tensor, adj: torch.Tensor, k: float | None = None) -> torch.Tensor:
    """One Fruchterman-Reingold move of positions ``pos [..., n, 2]`` on graphs ``adj [..., n, n]``
    (symmetric 0/1, zero diagonal), without the re-centring; ``k`` defaults to ``1/sqrt(n)``."""
    n = pos.shape[-2]
    k = 1.0 / math.sqrt(n) if k is None else k
    extent = (pos.amax(-2) - pos.amin(-2)).amax(-1)  # [...]
    t = 0.1 * extent
    delta = pos.unsqueeze(-2) - pos.unsqueeze(-3)  # [..., n, n, 2]: x_i - x_j
    dist = torch.linalg.vector_norm(delta, dim=-1).clamp_min(MIN_DISTANCE)
    coef = k * k / dist.square() - adj.to(pos.dtype) * dist / k
    force = (delta * coef.unsqueeze(-1)).sum(-2)  # the diagonal terms have delta = 0
    length = torch.linalg.vector_norm(force, dim=-1)
    length = torch.where(length < MIN_FORCE, torch.full_like(length, 0.1), length)
    return pos + force * (t.unsqueeze(-1) / length).unsqueeze(-1)


def recentre(pos: torch.Tensor) -> torch.Tensor:
    """Mean 0 over the vertices, then scaled so the largest ``|coordinate|`` is 1 (unless 0)."""
    pos = pos - pos.mean(-2, keepdim=True)
    lim = pos.abs().amax((-1, -2), keepdim=True)
    return torch.where(lim > 0, pos / torch.where(lim > 0, lim, torch.ones_like(lim)), pos)


def layout_frame(pos: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """The next frame: :func:`fr_step` then :func:`recentre`."""
    return recentre(fr_step(pos, adj))


def random_trees(n_samples: int, n_vertices: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[n_samples, n, n]`` symmetric 0/1 adjacencies: Kruskal on i.i.d. Gumbel edge weights."""
    shape = torch.zeros(n_samples, n_vertices, n_vertices, dtype=dtype)
    return kruskal(symmetric_gumbel_like(shape, generator=generator))


def generate(n_samples: int, n_vertices: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(locations float32 [N, steps, n, 2], edges uint8 [N, n, n])`` (computed in float64)."""
    for name, value, low in (("n_samples", n_samples, 1), ("n_vertices", n_vertices, 2), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Expected {name} to be an int >= {low}, but got {value!r}")
    adj = random_trees(n_samples, n_vertices, generator)
    pos = torch.randn(n_samples, n_vertices, 2, generator=generator, dtype=torch.float64)
    frames = []
    for _ in range(steps):
        pos = layout_frame(pos, adj)
        frames.append(pos)
    return torch.stack(frames, 1).float(), adj.to(torch.uint8)


def graph_layout_cache_dir() -> Path:
    """``$DISCRETEGRAD_DATA/graph_layout`` if the variable is set, else ``~/.cache/discretegrad/graph_layout``."""
    base = os.environ.get("DISCRETEGRAD_DATA")
    return (Path(base) if base else Path.home() / ".cache" / "discretegrad") / "graph_layout"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _chunk(split: str, index: int, steps: int, n_vertices: int, seed: int,
           directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk ``index`` (graphs ``index * CHUNK ...``) of a split: read from the cache if its
    checksum matches, else generated from its own stream and stored (data file, then sidecar)."""
    params = {"format": _FORMAT, "split": split, "chunk": index, "chunk_size": CHUNK, "steps": steps,
              "n_vertices": n_vertices, "seed": seed}
    stem = f"graph{n_vertices}_{steps}t_seed{seed}_{split}_{index:03d}"
    data, meta = directory / f"{stem}.pt", directory / f"{stem}.json"
    if data.is_file() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("params") == params and recorded.get("sha256") == _sha256(data):
            blob = torch.load(data, weights_only=True)
            return blob["locations"], blob["edges"]
    generator = torch.Generator().manual_seed(derived_seed(seed, f"graph-layout/{split}/{index}"))
    locations, edges = generate(CHUNK, n_vertices, steps, generator)
    directory.mkdir(parents=True, exist_ok=True)
    # per-process temporary names: concurrent runs may generate the same (deterministic) chunk
    tmp_data, tmp_meta = (directory / f".{stem}.{os.getpid()}.{ext}.partial" for ext in ("pt", "json"))
    torch.save({"locations": locations, "edges": edges}, tmp_data)
    tmp_meta.write_text(json.dumps({"params": params, "sha256": _sha256(tmp_data)}, indent=1))
    os.replace(tmp_data, data)  # the data first: a sidecar never names a file that is not there yet
    os.replace(tmp_meta, meta)
    return locations, edges


def _split(split: str, size: int, steps: int, n_vertices: int, seed: int,
           directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_chunk(split, i, steps, n_vertices, seed, directory) for i in range(math.ceil(size / CHUNK))]
    return torch.cat([p[0] for p in parts])[:size], torch.cat([p[1] for p in parts])[:size]


def load_graph_layout(split: str, steps: int = 10, root: str | os.PathLike[str] | None = None, *,
                      size: int | None = None, train_size: int | None = None, n_vertices: int = 10,
                      seed: int = 42) -> tuple[torch.Tensor, torch.Tensor]:
    """``(locations float32 [N, n, steps, 2] in [-1, 1], edges int64 [N, n, n])``: the first
    ``size`` graphs (default: all) of ``split`` (``"train"`` 50k, ``"valid"`` 10k, ``"test"``
    10k), from ``root`` or the data cache; normalised with the extremes of the first
    ``train_size`` (default: all) training graphs. A prefix is the same data whatever its length
    (chunks of :data:`CHUNK` graphs have their own streams), so a small run generates only what
    it reads."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"Expected split to be one of {sorted(SPLIT_SIZES)}, but got {split!r}")
    for name, value, limit in (("size", size, SPLIT_SIZES[split]), ("train_size", train_size, SPLIT_SIZES["train"])):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
            raise ValueError(f"Expected {name} to be an int in [1, {limit}] or None, but got {value!r}")
    directory = Path(root) if root is not None else graph_layout_cache_dir()
    size = SPLIT_SIZES[split] if size is None else size
    train_size = SPLIT_SIZES["train"] if train_size is None else train_size
    locations, edges = _split(split, size, steps, n_vertices, seed, directory)
    train = locations if split == "train" and size == train_size else \
        _split("train", train_size, steps, n_vertices, seed, directory)[0]
    lo, hi = train.amin(), train.amax()
    locations = (locations - lo) * 2 / (hi - lo) - 1
    return locations.transpose(1, 2).contiguous(), edges.long()
