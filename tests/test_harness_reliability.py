"""The harness under adversity, in-process: a page-corrupt store, a full disk (a failed COMMIT
included), invalid hyperparameter values, huge sweeps, claims of other sweeps, symbolic links
inside --out, unsafe experiment names and the git query. Each case gives one message and a
definite exit status, and nothing is written where it should not be."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import time
import tracemalloc

import pytest
import torch
import toy_experiment  # noqa: F401  (registers "toy")

import discretegrad as dg
from discretegrad import cli as cli_module
from discretegrad.harness.contract import EstimatorChoice, get_experiment, register_experiment
from discretegrad.harness.environment import git_info
from discretegrad.harness.execute import RunResult
from discretegrad.harness.grid import make_config
from discretegrad.harness.report import write_report
from discretegrad.harness.runner import experiment_info, plan_sweep, run_sweep
from discretegrad.harness.store import Store
from problems import case_for

TOY = ["--plugin", "toy_experiment"]


def _main(capsys, argv):
    code = cli_module.main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_line_error(err: str, needle: str) -> None:
    """One error line, the last of stderr (earlier lines may be the per-run progress lines a sweep
    prints when stderr is not a terminal), and no traceback."""
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("discretegrad: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and err.endswith("\n"), err
    assert all(ln.startswith("[") for ln in lines[:-1]), err  # progress lines only before it
    assert "Traceback" not in err and needle in errors[0], err


def _result(cfg, seed_offset=0.0, payload=""):
    return RunResult(run_id=cfg.run_id, config=cfg.to_json(), status="finished",
                     metrics={"final_loss": 1.0 + cfg.seed, "prob_target": 0.5},
                     epochs=[(e, {"train_loss": 1.0 / e}) for e in range(1, 4)], artifacts={"note": {"text": payload}},
                     error=None, environment={"torch": "t"}, started_at=100.0 + cfg.seed + seed_offset,
                     finished_at=101.0 + cfg.seed + seed_offset)


def _synthetic_store(directory, n=12, payload="x" * 300):
    exp = get_experiment("toy")
    with Store(directory, create=True) as st:
        st.record_experiment("toy", experiment_info(exp))
        for seed in range(n):
            cfg = make_config(exp, EstimatorChoice("st"), seed, {"lr": 1.0})
            st.write_run(_result(cfg, payload=payload), grid={"lr": 1.0}, label="st")


def _rows(directory):
    con = sqlite3.connect(directory / "store.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY run_id")]
    finally:
        con.close()


# ----------------------------------------------------------------------------- a page-corrupt store

def test_a_page_corrupt_store_is_refused_everywhere(tmp_path, capsys):
    """Bytes of the ``epochs`` table's root page overwritten in a real store file: ``report
    --json`` (which reads no epochs) used to print success, ``report`` a traceback; now every
    command finds it at open (``PRAGMA quick_check``), prints one line and exits 2."""
    _synthetic_store(tmp_path)
    assert not (tmp_path / "store.sqlite-wal").exists()  # closed cleanly: everything is in the main file
    con = sqlite3.connect(tmp_path / "store.sqlite")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='epochs'").fetchone()[0]
    con.close()
    with open(tmp_path / "store.sqlite", "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * 64)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["report", str(tmp_path), "--json"], ["report", str(tmp_path)],
                 ["run", "toy", "--quick", "--out", str(tmp_path), "--dry-run", *TOY],
                 ["run", "toy", "--quick", "--out", str(tmp_path), *TOY]):
        code, out, err = _main(capsys, argv)
        assert code == 2 and out == "", (argv, out, err)
        _one_line_error(err, "quick_check")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report/, nothing new


# ----------------------------------------------------------------------------- a full disk

class _FullDisk:
    """A connection to the store whose ``fail_at``-th COMMIT of a run row fails like a full
    disk (SQLite's own error, before anything was committed); every statement is logged."""

    def __init__(self, con, state):
        object.__setattr__(self, "_con", con)
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_pending", False)  # this connection's transaction inserted a run

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __setattr__(self, name, value):
        setattr(self._con, name, value)

    def execute(self, sql, *args):
        st = self._state
        words = sql.split()
        st["log"].append((id(self), " ".join(words[:3]).upper()))
        if sql.lstrip().upper().startswith("INSERT INTO RUNS"):
            object.__setattr__(self, "_pending", True)
        if words and words[0].upper() == "COMMIT" and self._pending:
            object.__setattr__(self, "_pending", False)
            st["commits"] += 1
            if st["commits"] == st["fail_at"]:
                st["log"].append((id(self), "<FAILED COMMIT>"))
                raise sqlite3.OperationalError("database or disk is full")
        return self._con.execute(sql, *args)

    def executemany(self, sql, *args):
        return self._con.executemany(sql, *args)


def _inject_full_disk(monkeypatch, directory, fail_at):
    state = {"log": [], "commits": 0, "fail_at": fail_at}
    real = sqlite3.connect

    def connect(database, *args, **kwargs):
        con = real(database, *args, **kwargs)
        return _FullDisk(con, state) if str(directory) in str(database) else con

    monkeypatch.setattr(sqlite3, "connect", connect)
    return state


@pytest.mark.parametrize("fail_at, code, stored", [(1, 2, 0), (2, 1, 1)])
def test_a_failed_commit_is_rolled_back_with_one_message(tmp_path, capsys, monkeypatch, fail_at, code, stored):
    """The COMMIT of the n-th run fails as on a full disk: one message; exit 2 when nothing was
    stored yet, 1 when some runs were (they are kept); the transaction is rolled back, the run's
    files are removed with it, and the rerun completes the sweep."""
    out = tmp_path / "out"
    argv = ["run", "toy", "--quick", "--estimators", "st", "--seeds", "0-2", "--out", str(out), *TOY]
    state = _inject_full_disk(monkeypatch, out, fail_at)
    got, _, err = _main(capsys, argv)
    assert got == code
    _one_line_error(err, "database or disk is full")
    if code == 1:
        assert "after storing 1 of 3 runs" in err
    (con, _), = [e for e in state["log"] if e[1] == "<FAILED COMMIT>"]
    mine = [text for c, text in state["log"] if c == con]  # that connection's statements
    assert mine[mine.index("<FAILED COMMIT>") + 1] == "ROLLBACK"
    monkeypatch.undo()
    ids = _rows(out)
    assert len(ids) == stored
    assert sorted(p.name for p in (out / "runs").iterdir()) == ids  # files only for committed rows
    con = sqlite3.connect(out / "store.sqlite")
    assert con.execute("SELECT count(*) FROM claims").fetchone()[0] == 0  # released
    con.close()
    got, stdout, err = _main(capsys, argv)
    assert got == 0, err
    assert f"{stored} already stored" in stdout and len(_rows(out)) == 3


def test_sqlite_full_is_a_store_error_and_the_store_stays_usable(tmp_path):
    """A real SQLITE_FULL (the database may not grow: ``max_page_count``) in the middle of a
    run's transaction: a ``ValueError`` naming the store, no transaction left open, no files."""
    exp = get_experiment("toy")
    cfg = make_config(exp, EstimatorChoice("st"), 0, {"lr": 1.0})
    with Store(tmp_path, create=True) as st:
        pages = st.db.execute("PRAGMA page_count").fetchone()[0]
        st.db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(ValueError, match="database or disk is full") as info:
            st.write_run(_result(cfg, payload="y" * 50_000), grid={}, label="st")
        assert "store.sqlite" in str(info.value)
        assert not st.db.in_transaction and st.statuses() == {}
        assert not (tmp_path / "runs" / cfg.run_id).exists()
        st.db.execute("PRAGMA max_page_count=1073741823")
        assert st.write_run(_result(cfg, payload="y" * 50_000), grid={}, label="st")
        assert st.status(cfg.run_id) == "finished"
        assert json.loads((tmp_path / "runs" / cfg.run_id / "metrics.json").read_text())["started_at"] == 100.0


# ----------------------------------------------------------------------------- hyperparameter values

@pytest.mark.parametrize("experiment, estimator, needle", [
    ("poisson-gan", "pwgf_mmd:bandwidth=-1", "Expected bandwidth"),
    ("toy", "stgs:tau=-1", "Expected tau"),
    ("toy", "gumbel_rao:mc_samples=0", "Expected mc_samples"),
])
def test_bad_hyperparameter_values_fail_the_dry_run(tmp_path, capsys, experiment, estimator, needle):
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        code, stdout, err = _main(capsys, ["run", experiment, "--quick", "--estimators", estimator, "--out", str(out),
                                           *TOY, *extra])
        assert code == 2 and stdout == ""
        _one_line_error(err, needle)
        assert not out.exists()


SPECS = dg.estimators()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.distribution}:{s.name}")
def test_the_value_check_refuses_every_listed_bad_value_and_accepts_the_defaults(spec):
    """Over the registry: the defaults pass the probe (no sweep is refused wrongly), and every
    invalid value the fixtures list for a hyperparameter that is not a family option (options
    depend on the experiment's shapes and are checked by the run) is refused, naming it."""
    from discretegrad.harness.grid import check_hparam_values

    check_hparam_values(spec.distribution, EstimatorChoice(spec.name, {}))
    options = set(dg.get_family(spec.distribution).option_names)
    bad = case_for(spec.distribution).bad_hparams
    for name in spec.hyperparameters:
        if name in options:
            continue
        for value in bad.get(name, []):
            with pytest.raises(ValueError, match=name):
                check_hparam_values(spec.distribution, EstimatorChoice(spec.name, {name: value}))


# ----------------------------------------------------------------------------- the run cap

def test_a_huge_seed_range_is_refused_without_allocating(tmp_path, capsys):
    out = tmp_path / "out"
    tracemalloc.start()
    t0 = time.perf_counter()
    code, _, err = _main(capsys, ["run", "toy", "--seeds", "0-100000000000", "--out", str(out), "--dry-run", *TOY])
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2
    _one_line_error(err, "at most 10000 seeds")
    assert elapsed < 10 and peak < 20e6, (elapsed, peak)
    assert not out.exists()


def test_the_run_cap_counts_runs_and_can_be_raised(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["run", "toy", "--out", str(out), "--dry-run", *TOY]  # toy: 2 estimators x 2 learning rates
    code, _, err = _main(capsys, [*base, "--seeds", "0-4", "--max-runs", "19"])
    assert code == 2
    _one_line_error(err, "at most 19 runs (the run cap; raise it with --max-runs), but got 2 estimators x "
                         "2 grid points x 5 seeds = 20 runs")
    code, stdout, _ = _main(capsys, [*base, "--seeds", "0-4", "--max-runs", "20"])
    assert code == 0 and stdout.splitlines()[-1] == f"20 runs, 20 to run, into {out}"
    code, _, err = _main(capsys, [*base, "--max-runs", "0"])
    assert code == 2
    _one_line_error(err, "Expected --max-runs to be an int >= 1, but got 0")
    with pytest.raises(ValueError, match="at most 10000 seeds"):
        plan_sweep("toy", out=out, seeds=range(20_001))  # the Python API: counted before it is expanded
    assert len(plan_sweep("toy", out=out, seeds=range(3000), max_runs=12_000).configs) == 12_000
    assert not out.exists()


# ----------------------------------------------------------------------------- claims

def test_claims_of_other_sweeps_are_respected_until_dead_or_expired(tmp_path):
    """Runs 0-3: run 0 claimed by a live sweep on another host (skipped), run 1 by one whose
    lease expired, run 2 by a process of this host that is gone (both taken over), run 3 free."""
    from discretegrad.harness import lease

    plan = plan_sweep("toy", out=tmp_path, estimators=["st"], seeds="0-3", quick=True)
    ids = [c.run_id for c in plan.configs]
    dead = subprocess.Popen(["true"])
    dead.wait()
    now = time.time()
    with Store(tmp_path, create=True) as st, st.transaction() as db:
        db.executemany("INSERT INTO claims VALUES (?,?,?,?,?,?)", [
            (ids[0], "other", 1, "elsewhere", now, now + 3600),
            (ids[1], "other", 1, "elsewhere", now - 7200, now - 3600),
            (ids[2], "gone", dead.pid, lease.Claimant.here().host, now, now + 3600)])
    s = run_sweep(plan, progress=False)
    assert (s.finished, s.busy, s.skipped) == (3, 1, 0)
    assert "1 left to another sweep that claimed them" in s.describe()
    with Store(tmp_path) as st:
        assert set(st.statuses()) == set(ids[1:])
        assert [(c["run_id"], c["token"]) for c in lease.claims(st)] == [(ids[0], "other")]
    with Store(tmp_path, create=True) as st, st.transaction() as db:  # that sweep's lease runs out
        db.execute("UPDATE claims SET expires_at=?", (time.time() - 1,))
    s = run_sweep(plan, progress=False)
    assert (s.finished, s.busy, s.skipped) == (1, 0, 3)
    with Store(tmp_path) as st:
        assert len(st.statuses()) == 4 and lease.claims(st) == []


def test_claims_are_renewed_while_the_sweep_lives(tmp_path):
    from discretegrad.harness import lease

    plan = plan_sweep("toy", out=tmp_path / "x", estimators=["st"], seeds="0", quick=True)
    for bad in (0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="Expected lease_s to be a finite number of seconds > 0"):
            run_sweep(plan, lease_s=bad)
    assert not (tmp_path / "x").exists()
    _synthetic_store(tmp_path, n=1)
    who = lease.Claimant.here()
    with Store(tmp_path, create=True) as st:
        assert lease.claim(st, "r1", who, lease_s=0.4) == "claimed"
        with lease.keep_alive(tmp_path, who, lease_s=0.4):
            time.sleep(1.0)
            (row,) = lease.claims(st)
            assert lease.is_live(row, host="elsewhere")  # renewed: its expiry is still ahead
        time.sleep(0.5)
        (row,) = lease.claims(st)
        assert not lease.is_live(row, host="elsewhere")  # no longer renewed: expired
        assert lease.claim(st, "r1", lease.Claimant("t2", 1, "elsewhere"), lease_s=10) == "claimed"


# ----------------------------------------------------------------------------- symlinks and names

@pytest.mark.parametrize("link", ["runs", "report"])
def test_links_inside_out_are_refused(tmp_path, capsys, link):
    out, target = tmp_path / "out", tmp_path / "elsewhere"
    target.mkdir()
    argv = ["run", "toy", "--quick", "--estimators", "st", "--seeds", "0", "--out", str(out), *TOY]
    if link == "report":
        assert _main(capsys, argv)[0] == 0
    else:
        out.mkdir()
    (out / link).symlink_to(target)
    for cmd in ([*argv, "--dry-run"], argv, ["report", str(out)]):
        if link == "runs" and cmd[0] == "report":
            continue
        code, _, err = _main(capsys, cmd)
        assert code == 2, (cmd, err)
        _one_line_error(err, "symbolic link")
    assert list(target.iterdir()) == []


def test_links_below_report_are_not_followed(tmp_path, capsys):
    out, target = tmp_path / "out", tmp_path / "elsewhere"
    target.mkdir()
    assert _main(capsys, ["run", "toy", "--quick", "--estimators", "st", "--seeds", "0", "--out", str(out), *TOY])[0] == 0
    assert _main(capsys, ["report", str(out)])[0] == 0
    png = next((out / "report").rglob("*_curves.png"))
    png.unlink()
    (target / "victim.png").write_bytes(b"keep")
    png.symlink_to(target / "victim.png")  # a file link is replaced, not written through
    assert _main(capsys, ["report", str(out)])[0] == 0
    assert (target / "victim.png").read_bytes() == b"keep" and not png.is_symlink()
    shutil.rmtree(png.parent)
    png.parent.symlink_to(target)  # a directory link is refused
    code, _, err = _main(capsys, ["report", str(out)])
    assert code == 2
    _one_line_error(err, "symbolic link")
    assert sorted(p.name for p in target.iterdir()) == ["victim.png"]


def test_experiment_names_are_safe_path_components(tmp_path):
    toy = get_experiment("toy")
    for bad in ("../evil", "..", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(ValueError, match="Expected experiment name"):
            register_experiment(dataclasses.replace(toy, name=bad))
    # a store written by something else may still carry any name: the report sanitises it
    cfg = make_config(toy, EstimatorChoice("st"), 0, {"lr": 1.0})
    result = _result(cfg)
    result.config = {**result.config, "experiment": ".."}
    with Store(tmp_path, create=True) as st:
        st.record_experiment("..", {**experiment_info(toy), "name": ".."})
        st.write_run(result, grid={"lr": 1.0}, label="st")
    write_report(tmp_path)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "runs" not in p.relative_to(tmp_path).parts]
    assert written and all(p.relative_to(tmp_path).parts[0] in ("report", "store.sqlite") for p in written), written


# ----------------------------------------------------------------------------- the git query

def test_the_git_state_query_writes_nothing(tmp_path):
    """``git status`` refreshes a stale index and rewrites ``.git/index``; the query must not."""
    if shutil.which("git") is None:
        pytest.skip("no git")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("commit", "-qm", "a")
    index = tmp_path / ".git" / "index"
    st = os.stat(tmp_path / "a.txt")
    os.utime(tmp_path / "a.txt", (st.st_atime + 100, st.st_mtime + 100))  # stale stat data, same content
    before = (index.read_bytes(), os.stat(index).st_mtime_ns)
    assert git_info(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.txt").write_text("changed\n")
    assert git_info(tmp_path)["dirty"] is True
    assert (index.read_bytes(), os.stat(index).st_mtime_ns) == before


def test_runs_flush_denormals_unless_told_to_keep_them(tmp_path, monkeypatch):
    """The harness runs every run with subnormal floats flushed to zero (the environment says so),
    ``--keep-denormals`` (``flush_denormal=False``) keeps them, and the process's flag is reset after."""
    from discretegrad.harness import contract

    def flushed() -> bool:
        return float(torch.tensor([1e-39]) * 1.5) == 0.0  # 1e-39 is subnormal in float32

    seen = []

    def probe(config, ctx):
        seen.append(flushed())
        return {"final_loss": 0.0}

    monkeypatch.setitem(contract._EXPERIMENTS, "toy", dataclasses.replace(get_experiment("toy"), run=probe))
    args = ["run", "toy", "--estimators", "stgs", "--seeds", "0", "--set", "lr=1.0", "--quiet"]
    assert cli_module.main([*args, "--out", str(tmp_path / "flush")]) == 0
    assert cli_module.main([*args, "--out", str(tmp_path / "keep"), "--keep-denormals"]) == 0
    assert seen == [True, False] and not flushed()
    for name, expected in (("flush", True), ("keep", False)):
        with Store(tmp_path / name) as st:
            (run,) = st.runs()
        assert run["environment"]["flush_denormal"] is expected
    with pytest.raises(TypeError, match="Expected flush_denormal to be a bool"):
        plan_sweep("toy", estimators=["stgs"], seeds=[0], out=tmp_path / "x", flush_denormal=1)
