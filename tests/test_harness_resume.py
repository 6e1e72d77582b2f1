"""Kill -9 a sweep mid-way, rerun the same command: finished runs are kept exactly once (not
re-executed) and the rest complete."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from _harness_util import cli, cli_cmd, cli_env

pytestmark = pytest.mark.slow  # real CLI processes: seconds each (make test-quick skips them)


def _finished(db_path: Path) -> dict[str, float]:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT run_id, started_at FROM runs WHERE status='finished'").fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        db.close()


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_then_resume(tmp_path, workers):
    if workers == "2" and not Path("/proc/self/stat").exists():
        pytest.skip("orphan check reads /proc")
    out = tmp_path / "sweep"
    # 2 estimators x 3 seeds; each run sleeps 0.25 s per epoch x 3 epochs
    args = ["run", "toy", "--estimators", "stgs,st", "--seeds", "0-2", "--set", "lr=1.0", "--set", "sleep=0.25",
            "--out", str(out), "--workers", workers]
    proc = subprocess.Popen(cli_cmd(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = out / "store.sqlite"
    deadline = time.monotonic() + 60
    before: dict[str, float] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        before = _finished(db)
        if before:
            break
        time.sleep(0.05)
    workers_pids = _children(proc.pid) if workers == "2" else []
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = _finished(db)  # what the store holds after the kill
    assert 1 <= len(before) < 6, f"kill landed too late or too early: {len(before)} finished"

    if workers_pids:  # orphaned workers notice the parent is gone and exit (no CPU burnt for nobody)
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end and any(_alive(p) for p in workers_pids):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers_pids)

    r = cli(*args[:-2], "--workers", "1")  # the same sweep (the backend is not part of a run's identity)
    assert r.returncode == 0, r.stderr
    assert f"{len(before)} already stored" in r.stdout
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT run_id, status, started_at, attempts FROM runs").fetchall()
        n_epochs = dict(con.execute("SELECT run_id, count(*) FROM epochs GROUP BY run_id").fetchall())
    finally:
        con.close()
    ids = [r[0] for r in rows]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(r[1] == "finished" and r[3] == 1 for r in rows)
    started = {r[0]: r[2] for r in rows}
    assert all(started[i] == t for i, t in before.items())  # kept, not re-executed
    assert n_epochs == {i: 3 for i in ids}
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(ids)


def test_python_api_skip_and_retry_failed(tmp_path):
    import toy_experiment  # noqa: F401  (registers "toy" in this process)

    from discretegrad.harness.runner import plan_sweep, run_sweep
    from discretegrad.harness.store import Store

    kw = dict(out=tmp_path, estimators=["stgs"], seeds=[0, 1], quick=True)
    s1 = run_sweep(plan_sweep("toy", overrides={"fail_seed": 1}, **kw), progress=False)
    assert (s1.finished, s1.failed, s1.skipped) == (1, 1, 0) and not s1.ok
    assert s1.failures[0][2] == "RuntimeError: toy failure at epoch 2"
    with Store(tmp_path) as st:
        runs = {r["seed"]: r for r in st.runs()}
    assert runs[1]["status"] == "failed" and "Traceback" in runs[1]["error"]
    assert runs[1]["metrics"] == {}
    # the same sweep again retries only the failed run (here it fails again: attempts counts)
    s2 = run_sweep(plan_sweep("toy", overrides={"fail_seed": 1}, **kw), progress=False)
    assert (s2.finished, s2.failed, s2.skipped) == (0, 1, 1)
    with Store(tmp_path) as st:
        again = {r["seed"]: r for r in st.runs()}
        assert again[1]["attempts"] == 2 and again[0]["started_at"] == runs[0]["started_at"]
        assert len(st.epochs(again[1]["run_id"])) == 1  # the failed attempt's epoch, not two copies


def test_a_dying_worker_fails_its_run_only(tmp_path):
    import toy_experiment  # noqa: F401

    from discretegrad.harness.backends import LocalProcessBackend
    from discretegrad.harness.runner import plan_sweep, run_sweep
    from discretegrad.harness.store import Store

    plan = plan_sweep("toy", out=tmp_path, estimators=["st"], seeds="0-2", quick=True, overrides={"crash_seed": 1},
                      plugins=["toy_experiment"])
    s = run_sweep(plan, progress=False, backend=LocalProcessBackend(2))
    assert (s.finished, s.failed) == (2, 1)
    assert s.failures[0][1] == "st seed=1" and "exited with code 7" in s.failures[0][2]
    with Store(tmp_path) as st:
        assert sorted((r["seed"], r["status"]) for r in st.runs()) == [(0, "finished"), (1, "failed"), (2, "finished")]


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """kill -9 in the middle of a run whose training loop keeps checkpoints (``toy-loop``): the
    rerun continues from the last finished epoch (``resumed_from_epoch`` in its environment), ends
    where an uninterrupted run ends, and the spent checkpoint is removed."""
    import json

    import torch

    args = ["--estimators", "stgs", "--seeds", "0", "--set", "lr=1.0", "--set", "epochs=6", "--set", "sleep=0.2",
            "--workers", "1"]
    env = {"DISCRETEGRAD_CHECKPOINT_INTERVAL": "0"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli_cmd("run", "toy-loop", *args, "--out", str(out)), env=cli_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, saved_epoch = time.monotonic() + 60, 0
    while time.monotonic() < deadline and proc.poll() is None and saved_epoch < 2:
        for ckpt in (out / "runs").glob("*/checkpoint.pt") if (out / "runs").is_dir() else ():
            try:
                saved_epoch = torch.load(ckpt, weights_only=True)["loop"]["epoch"]
            except Exception:  # noqa: BLE001 - replaced while we read it
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert 2 <= saved_epoch < 6 and not _finished(out / "store.sqlite"), saved_epoch
    plan = cli("run", "toy-loop", *args, "--out", str(out), "--dry-run", **env)  # says which runs resume
    assert plan.returncode == 0 and " resumes " in plan.stdout
    assert plan.stdout.splitlines()[-1] == f"1 runs, 1 to run (1 from a checkpoint), into {out}"
    r = cli("run", "toy-loop", *args, "--out", str(out), **env)
    assert r.returncode == 0, r.stderr
    straight = tmp_path / "straight"
    assert cli("run", "toy-loop", *args, "--out", str(straight), **env).returncode == 0

    def row(d: Path):
        con = sqlite3.connect(d / "store.sqlite")
        try:
            run_id, status, metrics, envir, attempts = con.execute(
                "SELECT run_id, status, metrics, environment, attempts FROM runs").fetchone()
            epochs = con.execute("SELECT epoch, metrics FROM epochs ORDER BY epoch").fetchall()
        finally:
            con.close()
        return run_id, status, json.loads(metrics), json.loads(envir), attempts, epochs

    rid, status, metrics, envir, attempts, epochs = row(out)
    rid2, _, metrics2, envir2, _, epochs2 = row(straight)
    assert (rid, status, attempts) == (rid2, "finished", 1)
    assert envir["resumed_from_epoch"] >= saved_epoch and "resumed_from_epoch" not in envir2
    assert metrics == metrics2 and epochs == epochs2 and len(epochs) == 6
    assert not list((out / "runs").glob("*/checkpoint.pt")) and not list((straight / "runs").glob("*/checkpoint.pt"))
