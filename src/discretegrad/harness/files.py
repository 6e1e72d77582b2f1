"""Files the harness writes under an output directory: strict JSON, atomic writes, and
directories that are never reached through a symbolic link.

Everything a sweep or a report writes lies under ``--out``. A ``runs/`` or ``report/``
directory (or one below it) that is a symbolic link would send those writes elsewhere, so
:func:`safe_dir` refuses it with one message instead of following it. The check is made with
``lstat`` just before the directory is used; it protects against a mistaken or planted link,
not against a concurrent adversary who can rewrite ``--out`` between the check and the write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_FILES = ("config.json", "env.json", "metrics.json")
"""The per-run files under ``DIR/runs/<run_id>/`` (a convenience copy of the run's row)."""

CHECKPOINT_FILE = "checkpoint.pt"
"""A running run's last checkpoint, ``DIR/runs/<run_id>/checkpoint.pt`` (removed once the run is stored)."""

__all__ = ["dumps", "atomic_write_text", "safe_dir", "check_no_links", "path_component", "RUN_FILES", "run_files",
           "write_run_files", "restore_run_files", "CHECKPOINT_FILE", "write_checkpoint", "read_checkpoint",
           "has_checkpoint", "remove_checkpoint"]


def _clean(x: Any) -> Any:
    """Replace non-finite floats by None (strict JSON), recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def dumps(x: Any, **kw: Any) -> str:
    """Strict JSON (NaN/inf stored as null; keys sorted), the store's one serialisation."""
    return json.dumps(_clean(x), sort_keys=True, allow_nan=False, default=str, **kw)


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` atomically: a temporary file in the same directory
    (which must exist), fsync, ``os.replace`` (which replaces a link at ``path`` instead of
    following it), fsync of the directory."""
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut once the directory is synced
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _is_link(p: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(p).st_mode)
    except FileNotFoundError:
        return False


def check_no_links(base: Path, *parts: str) -> Path:
    """``base / parts...`` after checking that none of ``parts`` (each a directory below ``base``)
    is a symbolic link or a non-directory; ``ValueError`` otherwise. Creates nothing."""
    p = Path(base)
    for part in parts:
        p = p / part
        if _is_link(p):
            raise ValueError(f"Expected {str(p)!r} to be a directory inside {str(base)!r}, but got a symbolic "
                             f"link to {os.readlink(p)!r} (refusing to write through it; remove the link)")
        if p.exists() and not p.is_dir():
            raise ValueError(f"Expected {str(p)!r} to be a directory, but got a file")
    return p


def safe_dir(base: Path, *parts: str) -> Path:
    """Create (if needed) and return the directory ``base / parts...``, never through a link."""
    check_no_links(base, *parts)
    p = Path(base)
    for part in parts:
        p = p / part
        with contextlib.suppress(FileExistsError):
            p.mkdir()
        check_no_links(base, *parts)  # created by someone else meanwhile: check again
    return p


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def path_component(name: str, limit: int = 80) -> str:
    """``name`` as one safe path component: runs of other characters become ``_``, no ``..``,
    no leading dot (never ``.``, ``..`` or a hidden name), at most ``limit`` characters."""
    s = re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", str(name)))
    s = s.strip("_").lstrip(".")
    return s[:limit] or "default"


def run_files(config: Mapping[str, Any], env: Mapping[str, Any], status: str, error: str | None,
              metrics: Mapping[str, Any], epochs: Iterable[tuple[int, Mapping[str, Any]]],
              artifacts: Mapping[str, Any], started_at: float, finished_at: float) -> dict[str, str]:
    """The texts of a run's three files (:data:`RUN_FILES`)."""
    return {
        "config.json": dumps(config, indent=2) + "\n",
        "env.json": dumps(env, indent=2) + "\n",
        "metrics.json": dumps({"status": status, "error": error, "final": metrics,
                               "epochs": [{"epoch": e, **m} for e, m in epochs], "artifacts": artifacts,
                               "started_at": started_at, "finished_at": finished_at}, indent=2) + "\n",
    }


def write_run_files(out: Path, run_id: str, files: Mapping[str, str]) -> None:
    """Write ``files`` (name -> text) into ``out/runs/<run_id>/``, each atomically, never through a
    link; temporary files a killed writer left there are removed first."""
    d = safe_dir(out, "runs", path_component(run_id))
    for stale in d.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    for name, text in files.items():
        atomic_write_text(d / name, text)


def restore_run_files(out: Path, run_id: str, previous: Mapping[str, str] | None) -> None:
    """Undo :func:`write_run_files` after a failed transaction: the files of the committed state
    (``previous``: those of an earlier attempt still stored) or none."""
    if previous is not None:
        write_run_files(out, run_id, previous)
        return
    d = check_no_links(out, "runs", path_component(run_id))
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (d / name).unlink()
    with contextlib.suppress(OSError):
        d.rmdir()


def write_checkpoint(out: Path, run_id: str, data: bytes) -> None:
    """Replace the run's checkpoint by ``data``, atomically (a killed writer leaves the old one)."""
    atomic_write_text(safe_dir(out, "runs", path_component(run_id)) / CHECKPOINT_FILE, data)


def _checkpoint_path(out: Path, run_id: str) -> Path:
    """Where the run's checkpoint is (``ValueError`` if a directory on the way is a link); creates nothing."""
    return check_no_links(out, "runs", path_component(run_id)) / CHECKPOINT_FILE


def read_checkpoint(out: Path, run_id: str) -> bytes | None:
    """The run's checkpoint, or ``None`` when it has none."""
    try:
        return _checkpoint_path(out, run_id).read_bytes()
    except FileNotFoundError:
        return None


def has_checkpoint(out: Path, run_id: str) -> bool:
    """Whether an earlier attempt of the run left a checkpoint (creates nothing)."""
    try:
        return _checkpoint_path(out, run_id).is_file()
    except ValueError:
        return False


def remove_checkpoint(out: Path, run_id: str) -> None:
    """Remove the run's checkpoint, if any (once its result is stored); a checkpoint that cannot
    be removed is left (it is never read again: the stored run is not rerun)."""
    with contextlib.suppress(OSError, ValueError):
        _checkpoint_path(out, run_id).unlink()
