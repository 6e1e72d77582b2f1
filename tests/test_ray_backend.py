"""The Ray backend on a real (local, 2-CPU) Ray cluster: a small toy sweep gives the same run ids and
metrics as the local backend, progress events stream back, a dying worker is retried and then
recorded failed, and a driver killed mid-sweep resumes without losing or repeating finished runs.

The cluster is started with ``ray start --head --block`` in a subprocess (its own process group,
ended at teardown) whose environment does *not* have tests/ on the path: the toy plugin reaches
the workers only the way it reaches a real cluster's, through the job's ``runtime_env``. Without
the ray extra these tests are skipped (the CLI checks at the end run anyway). The cluster tests are
``slow`` (``make test`` runs them, ``make test-quick`` does not).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _harness_util import cli, cli_cmd, cli_env

from discretegrad import cli as cli_module

NO_RAY = "the ray extra is not installed (pip install 'discretegrad[ray]')"
TOY = ["toy", "--estimators", "stgs,st", "--set", "lr=1.0", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray head on this machine, stopped after the module: (address, environment variables
    a driver needs: the cluster's token, written under tmp, not in ~/.ray)."""
    pytest.importorskip("ray", reason=NO_RAY)
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    (tmp / "token").write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp / "token"), "RAY_USAGE_STATS_ENABLED": "0"}
    env = {k: v for k, v in cli_env(**auth).items() if k not in ("PYTHONPATH", "DISCRETEGRAD_PLUGINS")}
    ports = {f"--{name}": str(_free_port()) for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                         "metrics-export-port", "runtime-env-agent-port")}
    # its own temp dir (short: Ray puts sockets there), so that no other Ray user on this machine
    # finds this cluster in /tmp/ray/ray_current_cluster
    temp_dir = tempfile.mkdtemp(prefix="dgray")
    log = open(tmp / "head.log", "w")
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           *(f"{k}={v}" for k, v in ports.items())]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    address = f"127.0.0.1:{port}"
    probe = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); ray.shutdown()"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}; see {log.name}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray head did not start in 120 s; see {log.name}")
                time.sleep(0.2)
        p = subprocess.run([sys.executable, "-c", probe, address], env=env, timeout=120, capture_output=True,
                           text=True)
        if p.returncode != 0:
            pytest.fail(f"could not connect to the Ray head at {address}: {p.stderr[-2000:]}")
        yield address, auth
    finally:
        try:  # the head and every process it started (raylet, GCS, workers) share its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _runs(out: Path) -> dict[str, dict]:
    db = sqlite3.connect(f"file:{out / 'store.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT run_id, status, metrics, started_at, error, estimator, seed FROM runs").fetchall()
        threads = dict(db.execute("SELECT run_id, data FROM artifacts WHERE name='threads'").fetchall())
    finally:
        db.close()
    return {r[0]: {"status": r[1], "metrics": json.loads(r[2] or "{}"), "started_at": r[3], "error": r[4],
                   "key": f"{r[5]}:{r[6]}", "threads": json.loads(threads.get(r[0], "null"))} for r in rows}


def _assert_same_metrics(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert sorted(a) == sorted(b)  # the same run ids
    for run_id in a:
        ma, mb = a[run_id]["metrics"], b[run_id]["metrics"]
        assert sorted(ma) == sorted(mb)
        for k in ma:  # the same float64 computation on the same CPU: equal up to summation order
            assert ma[k] == pytest.approx(mb[k], rel=1e-9, abs=1e-12), (run_id, k)


@pytest.mark.slow  # a Ray cluster and real CLI processes: seconds each
@pytest.mark.xdist_group("ray")
def test_ray_sweep_matches_local_backend(cluster, tmp_path):
    head, auth = cluster
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    r = cli("run", *TOY, "--seeds", "0-1", "--out", str(ray_out), "--backend", "ray", "--address", head,
            timeout=300, **auth)
    assert r.returncode == 0, r.stderr
    r = cli("run", *TOY, "--seeds", "0-1", "--out", str(local_out), timeout=120)
    assert r.returncode == 0, r.stderr
    ray_runs, local_runs = _runs(ray_out), _runs(local_out)
    assert len(ray_runs) == 4 and {v["status"] for v in ray_runs.values()} == {"finished"}
    _assert_same_metrics(ray_runs, local_runs)
    # the thread budget: cpus-per-run (default 1) threads, also in OMP_NUM_THREADS
    assert all(v["threads"] == {"torch": 1, "omp": "1"} for v in ray_runs.values())


_EVENTS_DRIVER = """
import json, sys
from discretegrad.harness.execute import Task
from discretegrad.harness.ray_backend import RayBackend
from discretegrad.harness.runner import plan_sweep
import ray

plan = plan_sweep("toy", out=sys.argv[2], estimators=["stgs"], seeds="0-1", overrides={"lr": 1.0},
                  plugins=["toy_experiment"])
order = []
for res in RayBackend(sys.argv[1]).map([Task(c, "cpu", plan.plugins, {}) for c in plan.configs],
                                       lambda ev: order.append(["event", ev.run_id, ev.epoch, ev.started])):
    order.append(["result", res.run_id, res.status, None])
print(json.dumps({"order": order, "ids": [c.run_id for c in plan.configs], "connected": ray.is_initialized()}))
"""


@pytest.mark.slow  # a Ray cluster and real CLI processes: seconds each
@pytest.mark.xdist_group("ray")
def test_progress_events_stream_back(cluster, tmp_path):
    """Through the Python API: every run's epoch events reach ``on_event``, before its result."""
    head, auth = cluster
    r = subprocess.run([sys.executable, "-c", _EVENTS_DRIVER, head, str(tmp_path / "s")], capture_output=True,
                       text=True, env=cli_env(**auth), timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    order, ids = out["order"], out["ids"]
    assert not out["connected"]  # the backend connected, so it disconnected
    assert sorted(o[1] for o in order if o[0] == "result") == sorted(ids)
    for run_id in ids:
        mine = [i for i, o in enumerate(order) if o[1] == run_id]
        events = [order[i] for i in mine if order[i][0] == "event"]
        assert {e[2] for e in events if e[2] is not None} == {1, 2, 3}  # every epoch
        assert any(e[3] for e in events)  # the start
        assert order[mine[-1]] == ["result", run_id, "finished", None]  # no event after the result


@pytest.mark.slow  # a Ray cluster and real CLI processes: seconds each
@pytest.mark.xdist_group("ray")
def test_dying_worker_is_retried_then_recorded_failed(cluster, tmp_path):
    head, auth = cluster
    out, attempts = tmp_path / "s", tmp_path / "attempts.txt"
    r = cli("run", "toy", "--estimators", "st", "--seeds", "0-1", "--set", "lr=1.0", "--set", "crash_seed=1",
            "--set", f"attempt_log={attempts}", "--out", str(out), "--quiet", "--backend", "ray", "--address", head,
            "--max-retries", "1", timeout=300, **auth)
    assert r.returncode == 1, r.stderr
    runs = _runs(out)
    by_status = sorted(v["status"] for v in runs.values())
    assert by_status == ["failed", "finished"]
    failed = next(v for v in runs.values() if v["status"] == "failed")
    assert "lost in each of 2 attempt(s)" in failed["error"]
    assert sorted(attempts.read_text().split()) == ["st:0", "st:1", "st:1"]  # seed 1 ran 1 + max_retries times
    assert "1 run(s) failed" in r.stderr


@pytest.mark.slow  # a Ray cluster and real CLI processes: seconds each
@pytest.mark.xdist_group("ray")
def test_driver_sigkill_then_resume(cluster, tmp_path):
    head, auth = cluster
    out, attempts = tmp_path / "s", tmp_path / "attempts.txt"
    # 2 estimators x 3 seeds; each run sleeps 0.3 s per epoch x 3 epochs; 2 CPUs: 2 runs at a time
    args = ["run", *TOY, "--seeds", "0-2", "--set", "sleep=0.3", "--set", f"attempt_log={attempts}",
            "--out", str(out), "--backend", "ray", "--address", head]
    proc = subprocess.Popen(cli_cmd(*args), env=cli_env(**auth), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    before: dict[str, dict] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "store.sqlite").exists():
            try:
                before = {k: v for k, v in _runs(out).items() if v["status"] == "finished"}
            except sqlite3.OperationalError:  # tables not created yet
                before = {}
            if before:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = {k: v for k, v in _runs(out).items() if v["status"] == "finished"}
    assert 1 <= len(before) < 6, f"kill landed too late or too early: {len(before)} finished"
    time.sleep(1.0)  # the dead driver's workers start nothing new (it owned their tasks); let them settle
    first = attempts.read_text().split()  # the run starts of the killed driver

    r = cli(*args, timeout=300, **auth)  # the same command resumes
    assert r.returncode == 0, r.stderr
    assert f"{len(before)} already stored" in r.stdout
    after = _runs(out)
    assert len(after) == 6 and {v["status"] for v in after.values()} == {"finished"}
    for run_id, v in before.items():  # kept, not re-executed
        assert after[run_id]["started_at"] == v["started_at"]
    # nothing stored ran again: the killed driver started each run at most once (no retry), and the
    # resumed one started exactly the runs the store did not hold, once each. (How many of those the
    # killed driver had started is a race: in flight on the 2 CPUs, or finished with the result not yet
    # stored, so it is not bounded here.)
    starts = attempts.read_text().split()
    assert starts[:len(first)] == first and len(set(first)) == len(first)
    assert {v["key"] for v in before.values()} <= set(first)
    assert sorted(starts[len(first):]) == sorted(v["key"] for k, v in after.items() if k not in before)
    local = tmp_path / "local"  # the same sweep on the local backend: the same run ids and metrics
    r = cli(*args[:args.index("--out")], "--out", str(local), "--workers", "2", timeout=300)
    assert r.returncode == 0, r.stderr
    _assert_same_metrics(after, _runs(local))


@pytest.mark.slow  # a Ray cluster and real CLI processes: seconds each
@pytest.mark.xdist_group("ray")
def test_infeasible_resources_are_one_message(cluster, tmp_path):
    head, auth = cluster
    r = cli("run", *TOY, "--seeds", "0", "--out", str(tmp_path / "s"), "--backend", "ray", "--address", head,
            "--gpus-per-run", "1", timeout=120, **auth)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("discretegrad: error: Expected a Ray node with 1 CPU and 1 GPU "
                                                 "(--cpus-per-run / --gpus-per-run), but got nodes with "
                                                 "2 CPU / 0 GPU")
    assert "Traceback" not in r.stderr


# --- the CLI's checks, with or without Ray installed ------------------------------------------------

def test_missing_extra_is_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = cli_module.main(["run", *TOY, "--out", str(tmp_path / "s"), "--backend", "ray", "--plugin",
                            "toy_experiment"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'discretegrad[ray]'" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv, message", [
    (["--address", "127.0.0.1:1"], "Expected --backend ray with --address, but got --backend local"),
    (["--gpus-per-run", "1"], "Expected --backend ray with --gpus-per-run, but got --backend local"),
    (["--backend", "ray", "--workers", "2"], "Expected no --workers with --backend ray"),
    (["--backend", "ray", "--device", "cuda"], "Expected --gpus-per-run > 0 with --device cuda"),
    (["--backend", "ray", "--device", "cuda:1", "--gpus-per-run", "1"], "Expected --gpus-per-run > 1"),
    (["--backend", "ray", "--cpus-per-run", "0"], "Expected --cpus-per-run to be a number >= 1, but got 0.0"),
    (["--backend", "ray", "--max-retries", "-1"], "Expected --max-retries to be an int >= 0, but got -1"),
])
def test_bad_backend_options(tmp_path, capsys, argv, message):
    code = cli_module.main(["run", *TOY, "--out", str(tmp_path / "s"), "--plugin", "toy_experiment", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_dry_run_needs_no_ray(tmp_path, capsys, monkeypatch):
    """A GPU plan for a cluster can be listed on a driver with neither Ray nor a GPU."""
    monkeypatch.setitem(sys.modules, "ray", None)
    code = cli_module.main(["run", *TOY, "--seeds", "0", "--out", str(tmp_path / "s"), "--plugin", "toy_experiment",
                            "--backend", "ray", "--device", "cuda", "--gpus-per-run", "1", "--dry-run"])
    assert code == 0
    assert "2 runs, 2 to run" in capsys.readouterr().out
