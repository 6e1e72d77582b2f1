"""Helpers for the experiment tests: IDX fixtures and a small in-memory RunContext."""

from __future__ import annotations

import gzip
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from discretegrad.harness.contract import Diverged, EstimatorChoice, Experiment
from discretegrad.harness.grid import make_config


def idx_bytes(values: torch.Tensor) -> bytes:
    """IDX encoding of a uint8 tensor (magic 00 00 08 ndim, big-endian int32 dims, values)."""
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    return header + values.contiguous().numpy().tobytes()


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 28x28 uint8 images with some structure (a bright bar whose position depends on the label)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (torch.rand(n, 28, 28, generator=g) * 60).to(torch.uint8)
    for i, lab in enumerate(labels.tolist()):
        images[i, 2 + 2 * lab: 5 + 2 * lab, 4:24] = 250
    return images, labels


def write_idx_dataset(root: Path, *, n_train: int, n_test: int, gz: bool, seed: int):
    """Write the four MNIST-named IDX files (raw or gz) of synthetic data; return what was written."""
    root.mkdir(parents=True, exist_ok=True)
    images, labels = {}, {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        x, y = synthetic_images(n, seed + (split == "test"))
        images[split], labels[split] = x, y
        for name, values in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y.to(torch.uint8))):
            blob = idx_bytes(values)
            if gz:
                (root / (name + ".gz")).write_bytes(gzip.compress(blob))
            else:
                (root / name).write_bytes(blob)
    return images, labels


class RecordingContext:
    """A RunContext that keeps what the experiment logs; raises Diverged like the harness."""

    def __init__(self, divergence_metric: str = "train_loss", device: str = "cpu"):
        self.device = device
        self.divergence_metric = divergence_metric
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.artifacts: dict[str, Mapping[str, Any]] = {}
        self.progress_calls = 0

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self.epochs.append((epoch, metrics))
        value = metrics.get(self.divergence_metric)
        if value is not None and not math.isfinite(value):
            raise Diverged(f"{self.divergence_metric} = {value} at epoch {epoch}")

    def progress(self, epoch: int, total_epochs: int, metric: float | None = None, *, name: str | None = None) -> None:
        self.progress_calls += 1

    def log_artifact(self, name: str, data: Mapping[str, Any]) -> None:
        self.artifacts[name] = dict(data)


def run_tiny(exp: Experiment, estimator: str, hparams: Mapping[str, Any] | None = None, seed: int = 0,
             **params: Any) -> tuple[dict[str, float], RecordingContext]:
    """Run ``exp`` with its defaults overridden by ``params`` (validated like ``--set``); return
    (final metrics, context)."""
    config = make_config(exp, EstimatorChoice(estimator, dict(hparams or {})), seed, params)
    ctx = RecordingContext(exp.divergence_metric)
    return exp.run(config, ctx), ctx


class Killed(Exception):
    """What :class:`CheckpointingContext` raises to stand for a kill."""


class CheckpointingContext(RecordingContext):
    """A :class:`RecordingContext` that keeps checkpoints in ``slot`` (a dict shared between the
    attempts of one run), saving at every epoch end, and is "killed" (raises :class:`Killed`)
    when epoch ``kill_at`` is logged, before that epoch's checkpoint."""

    checkpoint_interval = 0.0

    def __init__(self, slot: dict, kill_at: int | None = None, divergence_metric: str = "train_loss"):
        super().__init__(divergence_metric)
        self.slot, self.kill_at, self.saves = slot, kill_at, 0

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        super().log_epoch(epoch, metrics)
        if epoch == self.kill_at:
            raise Killed(f"killed at epoch {epoch}")

    def save_checkpoint(self, data: bytes) -> bool:
        self.slot["data"], self.saves = data, self.saves + 1
        return True

    def load_checkpoint(self) -> bytes | None:
        return self.slot.get("data")


TIMING_ARTIFACTS = ("efficiency", "speed")
"""Artifacts that hold timings (they differ between any two runs)."""


def assert_resumes_bit_for_bit(exp: Experiment, estimator: str, kill_at: int, hparams: Mapping[str, Any] | None = None,
                               seed: int = 0, **params: Any) -> dict[str, float]:
    """Run ``exp`` once straight through and once killed at epoch ``kill_at`` and rerun: the rerun
    must resume from the checkpoint of epoch ``kill_at - 1`` (it trains only the remaining epochs)
    and end with the same final metrics, epochs and artifacts (the keys of all; the contents of
    those that hold no timings) as the straight run."""
    config = make_config(exp, EstimatorChoice(estimator, dict(hparams or {})), seed, params)
    straight = CheckpointingContext({}, divergence_metric=exp.divergence_metric)
    expected = exp.run(config, straight)
    slot: dict = {}
    first = CheckpointingContext(slot, kill_at=kill_at, divergence_metric=exp.divergence_metric)
    try:
        exp.run(config, first)
    except Killed:
        pass
    else:
        raise AssertionError(f"Expected the run to reach epoch {kill_at}, but it ended before")
    assert first.saves == kill_at - 1 >= 1, first.saves
    again = CheckpointingContext(slot, divergence_metric=exp.divergence_metric)
    final = exp.run(config, again)
    epochs = len(straight.epochs)
    assert again.saves == epochs - (kill_at - 1), (again.saves, epochs)  # resumed, not started over
    assert final == expected
    assert again.epochs == straight.epochs
    assert set(again.artifacts) == set(straight.artifacts)
    for name, data in straight.artifacts.items():
        if name not in TIMING_ARTIFACTS:
            assert again.artifacts[name] == data, name
    return final
