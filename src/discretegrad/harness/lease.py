"""Claims on runs, so that several sweeps can share one ``--out``.

Before a sweep computes a run it *claims* it: a row of the store's ``claims`` table with the
sweep's token, its process id and host name and an expiry time (now + ``lease_s``). A sweep
skips a run that another sweep has claimed while that claim is *live*; a claim is dead, and
the run free to take over, when

* it has expired (its sweep renews its claims every ``lease_s / 4`` seconds from a background
  thread; one that was killed, lost power or hangs in the kernel stops renewing), or
* its host is this host and its process no longer runs (a killed sweep's runs are taken over
  at once, without waiting for the expiry).

The claim only avoids duplicate work; correctness does not rest on it. The run's row decides:
:meth:`Store.write_run <discretegrad.harness.store.Store.write_run>` stores a run only if no
finished or diverged row exists, writes the run's files in that same transaction and deletes
the claim with it. So if a claim lapses while its sweep still computes (a machine suspended for
longer than the lease), two sweeps may compute the run, but it is stored, and its files
written, exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from discretegrad.harness.store import Store, StoreError

__all__ = ["DEFAULT_LEASE_S", "Claimant", "claim", "renew", "release", "claims", "is_live", "pid_alive",
           "keep_alive"]

DEFAULT_LEASE_S = 120.0
"""Seconds a claim lasts without renewal (renewed every quarter of that while the sweep lives)."""


@dataclasses.dataclass(frozen=True)
class Claimant:
    """Who claims: a random token per sweep, and its process id and host name."""

    token: str
    pid: int
    host: str

    @classmethod
    def here(cls) -> Claimant:
        return cls(secrets.token_hex(8), os.getpid(), socket.gethostname())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_live(row: Mapping[str, Any], *, now: float | None = None, host: str | None = None) -> bool:
    """Whether a ``claims`` row still holds its run (see the module docstring)."""
    now = time.time() if now is None else now
    if row["expires_at"] <= now:
        return False
    if row["host"] == (host if host is not None else socket.gethostname()):
        return pid_alive(int(row["pid"]))
    return True


def claim(store: Store, run_id: str, who: Claimant, lease_s: float = DEFAULT_LEASE_S) -> str:
    """Claim ``run_id`` for ``who``: ``"claimed"``; ``"stored"`` when it is stored as finished or
    diverged; ``"busy"`` when another sweep's claim on it is live. One transaction."""
    with store.transaction() as db:
        row = db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is not None and row[0] in ("finished", "diverged"):
            return "stored"
        held = db.execute("SELECT * FROM claims WHERE run_id=?", (run_id,)).fetchone()
        if held is not None and held["token"] != who.token and is_live(dict(held)):
            return "busy"
        now = time.time()
        db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?)",
                   (run_id, who.token, who.pid, who.host, now, now + lease_s))
    return "claimed"


def renew(store: Store, who: Claimant, lease_s: float = DEFAULT_LEASE_S) -> int:
    """Extend every claim of ``who`` to ``lease_s`` from now; returns how many it holds."""
    with store.transaction() as db:
        cur = db.execute("UPDATE claims SET expires_at=? WHERE token=?", (time.time() + lease_s, who.token))
        return cur.rowcount


def release(store: Store, who: Claimant) -> None:
    """Drop every claim of ``who`` (its runs were stored, or the sweep stops)."""
    with store.transaction() as db:
        db.execute("DELETE FROM claims WHERE token=?", (who.token,))


def claims(store: Store) -> list[dict[str, Any]]:
    """The ``claims`` rows (none for a store no sweep has opened since claims exist)."""
    if not store.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='claims'"):
        return []
    return [dict(r) for r in store.query("SELECT * FROM claims ORDER BY run_id")]


@contextlib.contextmanager
def keep_alive(directory: Path, who: Claimant, lease_s: float = DEFAULT_LEASE_S) -> Iterator[None]:
    """Renew ``who``'s claims every ``lease_s / 4`` seconds from a thread (with its own
    connection) while the block runs. A renewal that fails (a full disk) is retried at the next
    tick; should the claims lapse meanwhile, another sweep may duplicate work, never a row."""
    stop = threading.Event()

    def loop() -> None:
        with contextlib.suppress(StoreError, ValueError), Store(directory, create=True) as store:
            while not stop.wait(lease_s / 4):
                with contextlib.suppress(StoreError):
                    renew(store, who, lease_s)

    thread = threading.Thread(target=loop, name="discretegrad-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
