"""The result store: one SQLite database per output directory (the source of truth), plus a
plain-file copy of each run under ``DIR/runs/<run_id>/``.

Layout of ``DIR``::

    store.sqlite              WAL mode; tables runs, epochs, artifacts, experiments, sweeps, claims
    runs/<run_id>/config.json the RunConfig (experiment, estimator, hparams, estimator defaults,
                          seed, params): its hash is the run id
    runs/<run_id>/env.json    versions, device, git commit, host, threads
    runs/<run_id>/metrics.json status, final metrics, per-epoch metrics, artifacts, error

A run is written once it has ended, in one transaction with its per-epoch metrics and
artifacts, so an interrupted run leaves no row behind and is redone (from its
``runs/<run_id>/checkpoint.pt`` where its training loop keeps one). Its files are written in
that transaction, by the process that commits the row, once it has seen that no other writer
stored the run; if the transaction fails they are put back (removed, or rewritten from an
earlier failed attempt's row). A run whose row is absent does not exist, whatever files it left.

Several sweeps may write one store: a sweep *claims* a run (a ``claims`` row: token, pid, host,
expiry; :mod:`discretegrad.harness.lease`) before computing it, so others skip it; the
committed row decides, so a run is stored once even if two sweeps computed it.

Every SQLite error (a corrupt page, a full disk, a failed ``COMMIT``) becomes a
:class:`StoreError` (a ``ValueError``: one message) after the transaction has been rolled back;
opening a store runs ``PRAGMA quick_check``. A store on a read-only location is opened
read-only, and immutably (``immutable=1``: SQLite needs no ``-shm`` file there) when it was
closed cleanly; one whose write-ahead log still holds data must be reported from a copy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from discretegrad.harness.execute import STATUSES, RunResult
from discretegrad.harness.files import atomic_write_text, dumps, restore_run_files, run_files, write_run_files

__all__ = ["Store", "StoreError", "STORE_FILE", "dumps", "atomic_write_text"]

STORE_FILE = "store.sqlite"
SCHEMA_VERSION = 2
"""Version 2: run ids hash the estimator's registry defaults too (``config.estimator_defaults``).
Version 1 stores (ids without them) are read unchanged but never written: their runs' estimator
defaults are unknown, so a resumed sweep could neither match them safely nor tell them apart.
(The ``claims`` table is added to a version-2 store when a sweep opens it; readers ignore it.)"""
READABLE_VERSIONS = ("1", "2")

_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
)"""

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
{_CLAIMS};
"""


class StoreError(ValueError):
    """A store that cannot be read or written (corrupt, full disk, read-only, locked): one message."""


def _connect(uri: str) -> sqlite3.Connection:
    """The one place the store opens SQLite (tests wrap it to inject a full disk)."""
    con = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Turn an ``sqlite3.Error`` raised by ``method`` into a :class:`StoreError` naming the store."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self._error(e) from None

    return wrapper  # type: ignore[return-value]


class Store:
    """The SQLite store of one output directory.

    ``Store(dir)`` opens an existing store for reading (``ValueError`` when ``dir`` has none; on
    a read-only location, read-only and immutably); ``Store(dir, create=True)`` creates the
    directory and the database if needed and opens it for writing. Both check the database (``PRAGMA quick_check``) and raise :class:`StoreError`
    on any SQLite error.
    """

    def __init__(self, directory: str | os.PathLike[str], *, create: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / STORE_FILE
        if not create and not self.path.is_file():
            raise ValueError(f"Expected a directory holding a discretegrad store ({STORE_FILE}), "
                             f"but got {str(self.dir)!r}")
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.schema_version = SCHEMA_VERSION
        self.db: Any = None
        try:
            self._open(create)
        except BaseException:
            if self.db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()
            raise

    @_guarded
    def _open(self, create: bool) -> None:
        existed = self.path.is_file()
        uri = "file:" + quote(str(self.path.absolute()))
        read_only_place = clean = False
        if not create and not os.access(self.dir, os.W_OK):
            wal = Path(f"{self.path}-wal")
            read_only_place = True
            clean = not wal.exists() or wal.stat().st_size == 0
            # A read-only location has no writer; with no write-ahead log left over, the main file
            # is the whole store and SQLite may skip locking (it could not create its -shm file).
            uri += "?mode=ro&immutable=1" if clean else "?mode=ro"
        self.db = _connect(uri)
        if existed:
            try:  # before any pragma that writes: never touch a foreign file
                self._check_version(empty_ok=create, wait=not create)
            except sqlite3.OperationalError as e:
                if create or not read_only_place or clean:
                    raise
                raise StoreError(f"Expected {str(self.path)!r} on a read-only location to have been closed "
                                 f"cleanly, but got sqlite3.OperationalError: {e}; its write-ahead log still "
                                 "holds data (its last writer was killed): report a writable copy of "
                                 f"{str(self.dir)!r}") from None
            self._quick_check()
        if create:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        if create:
            with self.transaction():  # one creator at a time: concurrent sweeps may start together
                if self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        self.db.execute(stmt)
                    self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                else:
                    self._check_version(empty_ok=False, wait=False)
                    self.check_writable()
                    self.db.execute(_CLAIMS)

    def _check_version(self, *, empty_ok: bool, wait: bool) -> None:
        """Read the schema version. An empty database is a store being created: fine for its
        creator (``empty_ok``), waited for (up to 5 s) by a reader (``wait``)."""
        deadline = time.monotonic() + 5.0
        while True:
            try:
                version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                break
            except sqlite3.OperationalError as e:
                if "no such table" not in str(e):
                    raise
                version = None  # no meta table: some other SQLite file, or one still empty
                if self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0:
                    break
                if empty_ok:
                    return
                if not wait or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except sqlite3.DatabaseError as e:
                raise ValueError(f"Expected {str(self.path)!r} to be a discretegrad store, but got {e}") from None
        if version is None or version[0] not in READABLE_VERSIONS:
            raise ValueError(f"Expected {str(self.path)!r} to be a discretegrad store (schema version "
                             f"{' or '.join(READABLE_VERSIONS)}), but got "
                             f"{'no version' if version is None else version[0]}")
        self.schema_version = int(version[0])

    def _quick_check(self) -> None:
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            problems = [f"{type(e).__name__}: {e}"]
        if problems != ["ok"]:
            raise StoreError(f"Expected {str(self.path)!r} to be an intact discretegrad store, but PRAGMA "
                             f"quick_check reported {len(problems)} problem(s), first: {problems[0]!r}")

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
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, e: sqlite3.Error) -> StoreError:
        return StoreError(f"Expected {str(self.path)!r} to be a readable and writable discretegrad store, "
                          f"but got sqlite3.{type(e).__name__}: {e}")

    @contextlib.contextmanager
    def transaction(self, undo: list[Callable[[], None]] | None = None) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (yields the connection). On any error, the ``COMMIT``'s
        included: the callables in ``undo`` (what the transaction did outside the database), then
        ``ROLLBACK``; an SQLite error is raised as :class:`StoreError`."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as e:
            for fn in undo or ():  # first, while this connection still holds the write lock
                with contextlib.suppress(OSError):
                    fn()
            if self.db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self._error(e) from None
            raise

    # ------------------------------------------------------------------ writing

    @_guarded
    def record_experiment(self, name: str, info: Mapping[str, Any]) -> None:
        """Keep the experiment's description (metrics, paper numbers) so reports need no plugin."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO experiments VALUES (?, ?)", (name, dumps(info)))

    @_guarded
    def record_sweep(self, experiment: str, command: str, n_runs: int, n_todo: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO sweeps (started_at, experiment, command, n_runs, n_todo) VALUES (?,?,?,?,?)",
                       (time.time(), experiment, command, n_runs, n_todo))

    @_guarded
    def write_run(self, result: RunResult, *, grid: Mapping[str, Any], label: str) -> bool:
        """Store one ended run: in one transaction, its files, its row, epochs and artifacts, and
        the release of its claim. A run already stored as finished or diverged is kept as it is
        (returns ``False``, writes nothing); a failed one is replaced."""
        if result.status not in STATUSES:
            raise ValueError(f"Expected status to be one of {list(STATUSES)}, but got {result.status!r}")
        cfg = result.config
        undo: list[Callable[[], None]] = []
        with self.transaction(undo) as db:
            old = db.execute("SELECT * FROM runs WHERE run_id=?", (result.run_id,)).fetchone()
            if old is not None and old["status"] != "failed":
                db.execute("DELETE FROM claims WHERE run_id=?", (result.run_id,))
                return False  # another writer stored it meanwhile
            attempts = 1 + (old["attempts"] if old is not None else 0)
            previous = self._files_of_row(old) if old is not None else None
            undo.append(lambda: restore_run_files(self.dir, result.run_id, previous))
            files = run_files(cfg, result.environment, result.status, result.error, result.metrics, result.epochs,
                              result.artifacts, result.started_at, result.finished_at)
            try:
                write_run_files(self.dir, result.run_id, files)
            except OSError as e:
                raise StoreError(f"Expected the run files of {result.run_id} under {str(self.dir)!r} to be "
                                 f"writable, but got {type(e).__name__}: {e}") from None
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
            db.execute("DELETE FROM claims WHERE run_id=?", (result.run_id,))
        return True

    def _files_of_row(self, row: Mapping[str, Any]) -> dict[str, str]:
        epochs = [(r[0], json.loads(r[1])) for r in self.db.execute(
            "SELECT epoch, metrics FROM epochs WHERE run_id=? ORDER BY epoch", (row["run_id"],)).fetchall()]
        arts = {r[0]: json.loads(r[1]) for r in self.db.execute(
            "SELECT name, data FROM artifacts WHERE run_id=?", (row["run_id"],)).fetchall()}
        return run_files(json.loads(row["config"]), json.loads(row["environment"]), row["status"], row["error"],
                      json.loads(row["metrics"]), epochs, arts, row["started_at"], row["finished_at"])

    # ------------------------------------------------------------------ reading

    @_guarded
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of one read-only query (errors as :class:`StoreError`)."""
        return self.db.execute(sql, params).fetchall()

    @_guarded
    def status(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    @_guarded
    def statuses(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        """``run_id -> status`` of stored runs (all of them, or those among ``run_ids``)."""
        rows = self.db.execute("SELECT run_id, status FROM runs").fetchall()
        out = {r[0]: r[1] for r in rows}
        if run_ids is None:
            return out
        return {i: out[i] for i in run_ids if i in out}

    @_guarded
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

    @_guarded
    def epochs(self, run_id: str) -> list[tuple[int, dict[str, float | None]]]:
        rows = self.db.execute("SELECT epoch, metrics FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))
        return [(r[0], json.loads(r[1])) for r in rows.fetchall()]

    @_guarded
    def artifacts(self, run_id: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT name, data FROM artifacts WHERE run_id=?", (run_id,)).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    @_guarded
    def experiment_info(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT name, info FROM experiments").fetchall()}

    @_guarded
    def sweeps(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM sweeps ORDER BY id").fetchall()]

