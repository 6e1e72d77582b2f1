"""The result store: one SQLite database per output directory (the source of truth), plus a
plain-file copy of each run under ``DIR/runs/<run_id>/``.

Layout of ``DIR``::

    store.sqlite              WAL mode; tables runs, epochs, artifacts, experiments, sweeps
    runs/<run_id>/config.json the RunConfig (experiment, estimator, hparams, estimator defaults,
                          seed, params): its hash is the run id
    runs/<run_id>/env.json    versions, device, git commit, host, threads
    runs/<run_id>/metrics.json status, final metrics, per-epoch metrics, artifacts, error

A run is written once it has ended, in one transaction together with its per-epoch metrics
and artifacts, so a run that was interrupted leaves nothing behind and is simply redone. The
files are written (each atomically: temporary file + ``os.replace``) just before that
transaction; a run whose row is absent does not exist, whatever files it left. Only the sweep's
parent process writes (single writer); readers may read concurrently (WAL).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from discretegrad.harness.execute import STATUSES, RunResult

__all__ = ["Store", "STORE_FILE", "dumps", "atomic_write_text"]

STORE_FILE = "store.sqlite"
SCHEMA_VERSION = 2
"""Version 2: run ids hash the estimator's registry defaults too (``config.estimator_defaults``).
Version 1 stores (ids without them) are read unchanged but never written: their runs' estimator
defaults are unknown, so a resumed sweep could neither match them safely nor tell them apart."""
READABLE_VERSIONS = ("1", "2")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    estimator_label TEXT NOT NULL,
    estimator TEXT NOT NULL,
    hparams TEXT NOT NULL,
    grid TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN {STATUSES!r}),
    metrics TEXT NOT NULL,
    error TEXT,
    environment TEXT NOT NULL,
    config TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, status);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    experiment TEXT NOT NULL,
    command TEXT NOT NULL,
    n_runs INTEGER NOT NULL,
    n_todo INTEGER NOT NULL
);
"""


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same dir + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Store:
    """The SQLite store of one output directory.

    ``Store(dir)`` opens an existing store (``ValueError`` when ``dir`` has none);
    ``Store(dir, create=True)`` creates the directory and the database if needed.
    """

    def __init__(self, directory: str | os.PathLike[str], *, create: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STORE_FILE
        if not create and not self.path.is_file():
            raise ValueError(f"Expected a directory holding a discretegrad store ({STORE_FILE}), "
                             f"but got {str(self.dir)!r}")
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        existed = self.path.is_file()
        self.schema_version = SCHEMA_VERSION
        try:
            self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if existed:
                self._check_version()  # before any pragma that writes: never touch a foreign file
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            if create and existed:
                self.check_writable()
            if create and not existed:
                with self._transaction():
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        self.db.execute(stmt)
                    self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise ValueError(f"Expected {str(self.path)!r} to be a discretegrad store, but got {e}") from None
        except ValueError:
            self.db.close()
            raise

    def _check_version(self) -> None:
        try:
            version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:  # no meta table: some other SQLite file
            version = None
        if version is None or version[0] not in READABLE_VERSIONS:
            raise ValueError(f"Expected {str(self.path)!r} to be a discretegrad store (schema version "
                             f"{' or '.join(READABLE_VERSIONS)}), but got "
                             f"{'no version' if version is None else version[0]}")
        self.schema_version = int(version[0])

    def check_writable(self) -> None:
        """Raise ``ValueError`` unless new runs may be written here (a current-version store).

        A version-1 store holds runs whose ids do not include the estimator's defaults; a sweep
        resumed into it would re-run every one of them under a new id, or, matched by the old
        id, attribute them to defaults they may not have used. So it stays as it is (reports
        read it) and new sweeps go to another ``--out``."""
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"Expected --out to be a store of schema version {SCHEMA_VERSION} to add runs to, but got "
                f"{str(self.dir)!r}, a version-{self.schema_version} store whose run ids do not include the "
                "estimators' default hyperparameters (resuming could re-run or mis-attribute its runs); "
                "`discretegrad report` reads it as it is: write new sweeps to another --out")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def record_experiment(self, name: str, info: Mapping[str, Any]) -> None:
        """Keep the experiment's description (metrics, paper numbers) so reports need no plugin."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO experiments VALUES (?, ?)", (name, dumps(info)))

    def record_sweep(self, experiment: str, command: str, n_runs: int, n_todo: int) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO sweeps (started_at, experiment, command, n_runs, n_todo) VALUES (?,?,?,?,?)",
                       (time.time(), experiment, command, n_runs, n_todo))

    def write_run(self, result: RunResult, *, grid: Mapping[str, Any], label: str) -> bool:
        """Store one ended run (files, then one transaction). A run already stored as finished or
        diverged is kept as it is (returns ``False``); a failed one is replaced."""
        if result.status not in STATUSES:
            raise ValueError(f"Expected status to be one of {list(STATUSES)}, but got {result.status!r}")
        if self.status(result.run_id) in ("finished", "diverged"):
            return False
        self._write_files(result)
        cfg = result.config
        with self._transaction() as db:
            old = db.execute("SELECT status, attempts FROM runs WHERE run_id=?", (result.run_id,)).fetchone()
            if old is not None and old["status"] != "failed":
                return False  # another writer stored it meanwhile
            attempts = 1 + (old["attempts"] if old is not None else 0)
            db.execute("DELETE FROM runs WHERE run_id=?", (result.run_id,))  # cascades to epochs/artifacts
            db.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (result.run_id, cfg["experiment"], label, cfg["estimator"], dumps(cfg["estimator_hparams"]),
                 dumps(grid), dumps(cfg["params"]), int(cfg["seed"]), result.status, dumps(result.metrics),
                 result.error, dumps(result.environment), dumps(cfg), result.started_at, result.finished_at,
                 result.finished_at - result.started_at, attempts))
            db.executemany("INSERT INTO epochs VALUES (?,?,?)",
                           [(result.run_id, int(e), dumps(m)) for e, m in result.epochs])
            db.executemany("INSERT INTO artifacts VALUES (?,?,?)",
                           [(result.run_id, k, dumps(v)) for k, v in result.artifacts.items()])
        return True

    def _write_files(self, result: RunResult) -> None:
        d = self.dir / "runs" / result.run_id
        atomic_write_text(d / "config.json", dumps(result.config, indent=2) + "\n")
        atomic_write_text(d / "env.json", dumps(result.environment, indent=2) + "\n")
        atomic_write_text(d / "metrics.json", dumps({
            "status": result.status, "error": result.error, "final": result.metrics,
            "epochs": [{"epoch": e, **m} for e, m in result.epochs], "artifacts": result.artifacts,
            "started_at": result.started_at, "finished_at": result.finished_at}, indent=2) + "\n")

    # ------------------------------------------------------------------ reading

    def status(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def statuses(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        """``run_id -> status`` of stored runs (all of them, or those among ``run_ids``)."""
        rows = self.db.execute("SELECT run_id, status FROM runs").fetchall()
        out = {r[0]: r[1] for r in rows}
        if run_ids is None:
            return out
        return {i: out[i] for i in run_ids if i in out}

    def runs(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """Stored runs as dicts (JSON columns decoded), ordered by experiment, start time."""
        q = "SELECT * FROM runs" + (" WHERE experiment=?" if experiment else "") + " ORDER BY experiment, started_at"
        out = []
        for row in self.db.execute(q, (experiment,) if experiment else ()).fetchall():
            rec = dict(row)
            for k in ("hparams", "grid", "params", "metrics", "environment", "config"):
                rec[k] = json.loads(rec[k])
            out.append(rec)
        return out

    def epochs(self, run_id: str) -> list[tuple[int, dict[str, float | None]]]:
        rows = self.db.execute("SELECT epoch, metrics FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))
        return [(r[0], json.loads(r[1])) for r in rows.fetchall()]

    def artifacts(self, run_id: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT name, data FROM artifacts WHERE run_id=?", (run_id,)).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def experiment_info(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT name, info FROM experiments").fetchall()}

    def sweeps(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM sweeps ORDER BY id").fetchall()]
