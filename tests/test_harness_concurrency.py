"""Real processes on one store: two concurrent sweeps share the work (each run computed and
stored once, its files written by the process that stored it), and a store on a read-only
location is reported."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
from _harness_util import cli, cli_cmd, cli_env

pytestmark = pytest.mark.slow  # real CLI processes: seconds each (make test-quick skips them)


def test_two_concurrent_sweeps_compute_each_run_once(tmp_path):
    out = tmp_path / "sweep"
    # 2 estimators x 4 seeds; each run sleeps 0.3 s per epoch x 3 epochs: ~7 s of work for one sweep
    args = ["run", "toy", "--estimators", "stgs,st", "--seeds", "0-3", "--set", "lr=1.0", "--set", "sleep=0.3",
            "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(cli_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    finished = [int(re.search(r"(\d+) finished", stdout).group(1)) for stdout, _ in outs]
    assert sum(finished) == 8, outs  # every run computed by exactly one of the two
    assert all(f >= 1 for f in finished), outs  # and both did some of the work

    con = sqlite3.connect(out / "store.sqlite")
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute("SELECT run_id, status, attempts, started_at, environment FROM runs")]
        claims = con.execute("SELECT count(*) FROM claims").fetchone()[0]
    finally:
        con.close()
    assert len(rows) == 8 and all(r["status"] == "finished" and r["attempts"] == 1 for r in rows)
    assert {json.loads(r["environment"])["pid"] for r in rows} == {p.pid for p in procs}
    assert claims == 0
    for r in rows:  # the files are those of the stored row, written by the process that stored it
        d = out / "runs" / r["run_id"]
        assert json.loads((d / "metrics.json").read_text())["started_at"] == r["started_at"]
        assert json.loads((d / "env.json").read_text())["pid"] == json.loads(r["environment"])["pid"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["run_id"] for r in rows)


def _read_only_cmd(directory, argv):
    """``argv`` run with ``directory`` read-only: a bind mount in a private mount namespace for
    root (who may write anywhere), plain permissions for anyone else; ``None`` if impossible."""
    if os.geteuid() != 0:
        return argv, lambda: (os.chmod(directory / "store.sqlite", 0o444), os.chmod(directory, 0o555))
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{directory}' '{directory}'"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    script = f"mount --bind -o ro '{directory}' '{directory}' && exec \"$@\""
    return ["unshare", "-m", "sh", "-c", script, "sh", *argv], lambda: None


def test_a_store_on_a_read_only_location_is_reported(tmp_path):
    out = tmp_path / "sweep"
    r = cli("run", "toy", "--quick", "--estimators", "st", "--seeds", "0-1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    expected = cli("report", str(out), "--json")
    assert expected.returncode == 0, expected.stderr
    assert sorted(p.name for p in out.iterdir()) == ["runs", "store.sqlite"]  # closed cleanly

    for argv, code in ((["report", str(out), "--json"], 0), (["report", str(out)], 2)):
        made = _read_only_cmd(out, cli_cmd(*argv))
        if made is None:
            pytest.skip("cannot make a read-only location here (root without unshare/mount)")
        cmd, protect = made
        protect()
        try:
            got = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120)
        finally:
            os.chmod(out, 0o755)
            os.chmod(out / "store.sqlite", 0o644)
        assert got.returncode == code, got.stderr
        if code == 0:
            assert json.loads(got.stdout) == json.loads(expected.stdout)
        else:  # writing DIR/report/ is impossible there: one line, no traceback
            assert got.stderr.startswith("discretegrad: error: ") and got.stderr.count("\n") == 1
            assert "Read-only file system" in got.stderr or "Permission denied" in got.stderr
    assert sorted(p.name for p in out.iterdir()) == ["runs", "store.sqlite"]  # nothing written there


@pytest.mark.skipif(sys.platform != "linux", reason="kill test uses POSIX signals")
def test_the_kill_test_script_in_small(tmp_path):
    """The kill-test script (benchmarks/kill_test.py) in small: 3 kills of a 4-run sweep."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "kill_test.py")
    r = subprocess.run([sys.executable, script, "--kills", "3", "--seeds", "0", "--work", str(tmp_path), "--record",
                        str(tmp_path / "record.md")], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "record.md").read_text()
    assert "identical: yes" in text and len(re.findall(r"^\| kill \d+ \|", text, re.M)) == 3


def test_dry_run_says_which_runs_another_sweep_holds(tmp_path):
    """``--dry-run`` lists a run that a live claim of another sweep holds as ``running`` (not counted as to
    run), and one whose claim is void (its process is gone) as ``to run``."""
    import socket
    import time

    out = tmp_path / "sweep"
    base = ["run", "toy", "--estimators", "stgs", "--set", "lr=1.0", "--out", str(out), "--quiet"]
    assert cli(*base, "--seeds", "0").returncode == 0  # creates the store (with its claims table)
    plan = cli(*base, "--seeds", "0-2", "--dry-run")
    ids = {re.search(r" (seed=\d+)", line).group(1): line.split()[0] for line in plan.stdout.splitlines()[:-1]}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    now = time.time()
    con = sqlite3.connect(out / "store.sqlite")
    try:
        with con:
            con.execute("INSERT INTO claims VALUES (?,?,?,?,?,?)",
                        (ids["seed=1"], "other", os.getpid(), socket.gethostname(), now, now + 600))
            con.execute("INSERT INTO claims VALUES (?,?,?,?,?,?)",
                        (ids["seed=2"], "gone", dead.pid, socket.gethostname(), now, now + 600))
    finally:
        con.close()
    plan = cli(*base, "--seeds", "0-2", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    status = {line.split()[0]: line.split()[1] for line in plan.stdout.splitlines()[:-1]}
    assert status == {ids["seed=0"]: "finished", ids["seed=1"]: "running", ids["seed=2"]: "to"}  # "to run"
    assert plan.stdout.splitlines()[-1] == f"3 runs, 1 to run, 1 running in another sweep, into {out}"
