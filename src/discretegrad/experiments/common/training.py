"""The generic training loop: epochs of optimisation steps, divergence, per-epoch logging,
evaluation and checkpoint hooks, and the efficiency artifact.

It knows nothing about models or data: an experiment hands it ``batches(epoch)`` (any iterable
of batches, drawn from the experiment's own generators) and ``step(batch, index)`` (one
optimisation step, returning the detached training loss), plus hooks. A VAE, a ListOps
tree-LSTM or an NRI graph model fits the same shape; :mod:`.vae` is the VAEs' use of it.

Per epoch :func:`train` runs every step, averages the losses (weighted by ``weight(batch)``,
in float64) into ``train_loss``, raises :class:`~discretegrad.harness.contract.Diverged` on a
non-finite loss (after logging it), then calls ``evaluate(epoch)`` and every hook in order --
each returns extra metrics (an evaluation, a probe) or ``None`` (a checkpoint) -- and logs the
epoch's metrics with ``ctx.log_epoch``. The time of the training steps only (not evaluation or
hooks) goes into the ``efficiency`` artifact with the peak memory of one step
(:func:`~.profiling.step_peak_memory_mb`, measured on the third step, once Adam's state exists).

**Checkpoints.** With ``state`` (name -> every object whose state the run's future depends on:
modules, optimisers, schedulers, ``torch.Generator`` s, plain dicts of the experiment's own
bookkeeping, or anything with ``state_dict`` / ``load_state_dict``) the loop saves, at the end of an
epoch and at most every ``ctx.checkpoint_interval`` seconds (default 60), those states and its own (epochs done,
step index, logged metrics, timings, the best value) through the context
(``ctx.save_checkpoint``; the harness keeps it under ``DIR/runs/<run_id>/``). A later attempt of
the same run (after a kill) finds it (``ctx.load_checkpoint``), restores everything, re-logs the
finished epochs and goes on from the next one: the run ends as it would have without the kill, bit
for bit, provided ``state`` holds every object the remaining epochs read (each experiment's
resume test checks this). A context without those methods keeps no checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from discretegrad.experiments.common.profiling import step_peak_memory_mb
from discretegrad.harness.contract import EFFICIENCY, Diverged, RunContext

__all__ = ["train", "Best", "EpochHook", "every", "require_finite", "diverged_if_nonfinite", "CHECKPOINT_FORMAT"]

EpochHook = Callable[[int, Mapping[str, float]], "Mapping[str, float] | None"]
"""``hook(epoch, metrics so far) -> extra metrics or None``, called after each epoch."""

_MEMORY_STEP = 2  # measure the third step: after the optimiser's state exists
CHECKPOINT_FORMAT = 1
DEFAULT_CHECKPOINT_INTERVAL = 60.0
"""Seconds between checkpoints unless the context says otherwise (``ctx.checkpoint_interval``)."""


def require_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`Diverged` when ``t`` (e.g. an encoder's logits) has NaN/inf entries."""
    if not bool(torch.isfinite(t).all()):
        raise Diverged(f"{what} became non-finite")
    return t


@contextlib.contextmanager
def diverged_if_nonfinite(module: nn.Module, where: str) -> Iterator[None]:
    """Turn a ``ValueError`` raised while some parameter of ``module`` is NaN/inf (the library's
    input validation rejecting non-finite logits or rates) into :class:`Diverged`."""
    try:
        yield
    except ValueError as e:
        if all(bool(torch.isfinite(t).all()) for t in module.parameters()):
            raise
        raise Diverged(f"parameters became non-finite ({where}): {e}") from e


def every(n: int, fn: Callable[[int], None]) -> EpochHook:
    """A hook that calls ``fn(epoch)`` every ``n`` epochs and adds no metric (e.g. a checkpoint)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n to be an int >= 1, but got {n!r}")

    def hook(epoch: int, metrics: Mapping[str, float]) -> None:
        if epoch % n == 0:
            fn(epoch)

    return hook


@dataclasses.dataclass(frozen=True)
class Best:
    """Also report the best value over epochs of ``metric`` as ``best_<metric>``."""

    metric: str
    lower_is_better: bool = True


@dataclasses.dataclass
class _Loop:
    """The loop's own state: what a checkpoint saves besides the run's objects (as a dict of these fields)."""

    epoch: int = 0  # epochs done
    index: int = 0  # steps done
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    memory: tuple[float, str] | None = None  # the peak step memory and how it was measured
    final: dict[str, float] = dataclasses.field(default_factory=dict)  # the metrics train() returns
    logged: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)  # every epoch's metrics
    best_value: float = math.inf


def train(
    *,
    ctx: RunContext,
    epochs: int,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any, int], torch.Tensor],
    module: nn.Module,
    weight: Callable[[Any], float] = lambda batch: 1,
    evaluate: Callable[[int], Mapping[str, float]] | None = None,
    hooks: Sequence[EpochHook] = (),
    progress_metric: str | None = None,
    best: Best | None = None,
    measure_efficiency: bool = True,
    state: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Run ``epochs`` epochs; return the final metrics (the last epoch's, plus ``best_*``).

    Args:
        ctx: the run's context (logging, progress, artifacts).
        batches: ``batches(epoch)`` -> the epoch's batches, in order.
        step: ``step(batch, index)`` -> detached scalar loss; does the backward pass and the
            optimiser update itself. ``index`` counts steps from 0 over the whole run.
        module: holds the trained parameters (a ``ValueError`` raised while one of them is
            non-finite becomes :class:`Diverged`).
        weight: the batch's weight in ``train_loss`` (e.g. its size; default: 1).
        evaluate: called after each epoch (before ``hooks``); its metrics are logged.
        hooks: called after ``evaluate``, in order, with the epoch's metrics; theirs are logged.
        progress_metric: the metric shown by the progress bar (default: ``train_loss``).
        best: also report ``best_<metric>`` over epochs.
        measure_efficiency: log the ``efficiency`` artifact (:data:`EFFICIENCY` fields).
        state: the objects a checkpoint saves and a resumed attempt restores (module docstring);
            ``None``: no checkpoints.
    """
    device = next(iter(module.parameters())).device
    loop = _Loop(best_value=math.inf if best is None or best.lower_is_better else -math.inf)
    save = getattr(ctx, "save_checkpoint", None) if state is not None else None
    if save is not None and (data := getattr(ctx, "load_checkpoint", lambda: None)()) is not None:
        saved = _decode(data, state)  # None: unreadable, or another version's: the run starts over
        if saved is not None:
            loop = _restore(saved, state)
            getattr(ctx, "note_resumed", lambda epoch: None)(loop.epoch)
        for e, m in loop.logged:
            ctx.log_epoch(e, m)
        if loop.logged:
            ctx.progress(loop.epoch, epochs)
    interval = float(getattr(ctx, "checkpoint_interval", DEFAULT_CHECKPOINT_INTERVAL))
    last_save = time.monotonic()
    for epoch in range(loop.epoch + 1, epochs + 1):
        start = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64, device=device)
        count, excluded = 0.0, 0.0
        for batch in batches(epoch):
            with diverged_if_nonfinite(module, f"epoch {epoch}, step {loop.index}"):
                if measure_efficiency and loop.memory is None and loop.index == _MEMORY_STEP:
                    t0 = time.perf_counter()
                    loop.memory, loss = step_peak_memory_mb(lambda: step(batch, loop.index), device)
                    excluded = time.perf_counter() - t0
                else:
                    loss = step(batch, loop.index)
            w = weight(batch)
            total += loss.double() * w
            count += w
            loop.index += 1
        train_loss = float(total) / count  # synchronises the device
        loop.epoch_seconds.append(time.perf_counter() - start - excluded)
        if not math.isfinite(train_loss):
            ctx.log_epoch(epoch, {"train_loss": train_loss})
            raise Diverged(f"train_loss = {train_loss} at epoch {epoch}")
        metrics: dict[str, float] = {"train_loss": train_loss}
        if evaluate is not None:
            metrics.update(evaluate(epoch))
        for hook in hooks:
            metrics.update(hook(epoch, dict(metrics)) or {})
        ctx.log_epoch(epoch, metrics)
        shown = progress_metric or "train_loss"
        ctx.progress(epoch, epochs, metrics.get(shown), name=shown)
        loop.final = dict(metrics)
        if best is not None:
            value = metrics[best.metric]
            loop.best_value = min(loop.best_value, value) if best.lower_is_better else max(loop.best_value, value)
            loop.final[f"best_{best.metric}"] = loop.best_value
        loop.logged.append((epoch, {k: float(v) for k, v in metrics.items()}))
        loop.epoch = epoch
        if save is not None and time.monotonic() - last_save >= interval:
            if not save(_snapshot(loop, state)):
                save = None  # the context keeps none after all
            last_save = time.monotonic()
    if measure_efficiency:
        memory = loop.memory
        ctx.log_artifact(EFFICIENCY.name, {
            "seconds_per_epoch": sum(loop.epoch_seconds) / len(loop.epoch_seconds),
            "peak_memory_mb": memory[0] if memory else float("nan"),
            "memory_measure": memory[1] if memory else "not measured (fewer than 3 steps)",
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "epochs_timed": len(loop.epoch_seconds),
        })
    return loop.final


def _snapshot(loop: _Loop, state: Mapping[str, Any]) -> bytes:
    objects = {}
    for name, obj in state.items():
        if isinstance(obj, torch.Generator):
            objects[name] = obj.get_state()
        elif isinstance(obj, dict):
            objects[name] = obj
        elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            objects[name] = obj.state_dict()
        else:
            raise TypeError(f"Expected state[{name!r}] to be a torch.Generator, a dict or to have state_dict and "
                            f"load_state_dict, but got {type(obj).__name__}")
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "loop": dataclasses.asdict(loop), "objects": objects}, buf)
    return buf.getvalue()


def _decode(data: bytes, state: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        saved = torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is no checkpoint
        return None
    ok = isinstance(saved, dict) and saved.get("format") == CHECKPOINT_FORMAT and \
        set(saved.get("objects", {})) == set(state)
    return saved if ok else None


def _restore(saved: Mapping[str, Any], state: Mapping[str, Any]) -> _Loop:
    for name, obj in state.items():
        value = saved["objects"][name]
        if isinstance(obj, torch.Generator):
            obj.set_state(value)
        elif isinstance(obj, dict):
            obj.clear()
            obj.update(value)
        else:
            obj.load_state_dict(value)
    loop = _Loop(**saved["loop"])
    loop.logged = [(int(e), dict(m)) for e, m in loop.logged]
    loop.memory = tuple(loop.memory) if loop.memory is not None else None
    return loop
