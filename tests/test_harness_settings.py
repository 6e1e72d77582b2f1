"""Typed settings (validated once against the dataclass), `list` printing them, run ids that hash
the estimators' defaults, the old-store policy, contract-declared artifacts, the generic
training loop and the import layering of harness / experiments / core."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
import toy_experiment
import torch

import discretegrad as dg
from discretegrad import cli as cli_module
from discretegrad.harness import settings
from discretegrad.harness.contract import EFFICIENCY, EstimatorChoice, Experiment, get_experiment, setting
from discretegrad.harness.execute import RunResult
from discretegrad.harness.grid import expand, make_config
from discretegrad.harness.report import efficiency, load_groups, summarize
from discretegrad.harness.runner import experiment_info, plan_sweep, run_sweep
from discretegrad.harness.store import Store, dumps

SRC = Path(__file__).resolve().parents[1] / "src" / "discretegrad"
RESULTS = Path(__file__).resolve().parents[1] / "results"
Toy = toy_experiment.ToySettings


# ----------------------------------------------------------------------------- typed settings

def test_settings_validation_unknown_type_choice_bounds_and_coercion():
    assert settings.coerce(Toy, "lr", 1) == 1.0 and isinstance(settings.coerce(Toy, "lr", 1), float)
    assert settings.coerce(Toy, "epochs", 4) == 4
    with pytest.raises(ValueError, match=r"Expected --set key to be one of \[.*'lr'.*\], but got 'nope'"):
        settings.coerce(Toy, "nope", 1)
    with pytest.raises(ValueError, match=r"Expected --set epochs to be of type int \(like 3\), but got 2.5"):
        settings.coerce(Toy, "epochs", 2.5)
    with pytest.raises(ValueError, match="Expected --set epochs to be of type int"):
        settings.coerce(Toy, "epochs", True)  # a bool is not an int here
    with pytest.raises(ValueError, match=r"Expected --set diverge_mode to be one of \['nan', 'raise'\], but got 'x'"):
        settings.coerce(Toy, "diverge_mode", "x")
    with pytest.raises(ValueError, match=r"Expected --set lr to be float > 0, but got 0.0"):
        settings.coerce(Toy, "lr", 0.0)
    with pytest.raises(ValueError, match="Expected --set lr to be finite"):
        settings.coerce(Toy, "lr", math.inf)
    cat = get_experiment("bernoulli-vae").settings
    assert settings.coerce(cat, "tau", None) is None and settings.coerce(cat, "tau", 1) == 1.0  # T | None


def test_experiments_read_typed_settings_and_the_grid_validates_once():
    exp = get_experiment("toy")
    cfg = expand(exp, overrides={"lr": 1}, seeds="0")[0]
    assert isinstance(cfg.settings, Toy) and cfg.settings.lr == 1.0 and cfg.params["lr"] == 1.0
    assert cfg.settings == Toy(lr=1.0)  # defaults included
    with pytest.raises(ValueError, match="Expected --set target to be int >= 0, but got -1"):
        expand(exp, overrides={"target": -1})


def test_a_bad_declaration_is_refused_at_registration():
    @dataclasses.dataclass(frozen=True)
    class S:
        epochs: int = setting(3, "epochs", ge=1)

    base = dict(name="bad", distribution="categorical", paper="", description="", settings=S, grid={},
                estimators=(EstimatorChoice("st"),), quick_estimators=(EstimatorChoice("st"),), seeds=(0,),
                quick_seeds=(0,), run=lambda c, x: {}, metrics={})
    with pytest.raises(ValueError, match="bad quick setting epochs to be int >= 1, but got 0"):
        Experiment(**base, quick={"epochs": 0}).validate()
    with pytest.raises(ValueError, match="Expected --set key to be one of"):
        Experiment(**{**base, "grid": {"lr": [0.1]}}, quick={}).validate()

    @dataclasses.dataclass(frozen=True)
    class Plain:
        epochs: int = 3  # not made with setting(): no help, no constraints

    with pytest.raises(TypeError, match="made with setting"):
        settings.fields(Plain)


@pytest.mark.parametrize("args, needle", [
    (["--set", "nope=1"], "Expected --set key to be one of"),
    (["--set", "epochs=2.5"], "Expected --set epochs to be of type int"),
    (["--set", "diverge_mode=boom"], "Expected --set diverge_mode to be one of ['nan', 'raise'], but got 'boom'"),
    (["--set", "steps=0"], "Expected --set steps to be int >= 1, but got 0"),
])
def test_bad_settings_through_the_cli(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code = cli_module.main(["run", "toy", *args, "--out", str(out), "--plugin", "toy_experiment"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


def test_list_prints_settings_from_the_dataclass(capsys):
    assert cli_module.main(["list", "--plugin", "toy_experiment"]) == 0
    text = capsys.readouterr().out
    assert "settings (--set key=value; name: type = default  [allowed]  help):" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("lr: float = 0.5"))
    assert "[float > 0]" in line and line.endswith("SGD step size")
    assert any("diverge_mode: str = 'nan'" in x and "[one of ['nan', 'raise']]" in x for x in text.splitlines())
    assert any("tau: float | None = None" in x and "[float > 0 or None]" in x for x in text.splitlines())
    assert cli_module.main(["list", "--json", "--plugin", "toy_experiment"]) == 0
    toy = next(e for e in json.loads(capsys.readouterr().out)["experiments"] if e["name"] == "toy")
    assert toy["settings"][0] == {"name": "epochs", "type": "int", "default": 3, "constraint": "int >= 1",
                                  "choices": None, "help": "epochs"}


# ----------------------------------------------------------------------------- run identity

def test_run_id_hashes_resolved_estimator_defaults(monkeypatch):
    exp = get_experiment("toy")
    cfg = make_config(exp, "stgs", 0)
    spec = dg.get_estimator("stgs", distribution="categorical")
    assert cfg.estimator_defaults == {"tau": spec.hyperparameters["tau"]}
    assert cfg.to_json()["estimator_defaults"] == {"tau": spec.hyperparameters["tau"]}
    assert make_config(exp, "stgs", 0).run_id == cfg.run_id  # deterministic
    monkeypatch.setitem(spec.hyperparameters, "tau", 2.0)  # the registry's default changes
    changed = make_config(exp, "stgs", 0)
    assert changed.run_id != cfg.run_id and changed.estimator.label == cfg.estimator.label
    # a changed setting default (a settings dataclass edit) changes the id too
    assert make_config(exp, "stgs", 0, {"steps": 6}).run_id != changed.run_id


@dataclasses.dataclass(frozen=True)
class _Before:
    lr: float = setting(0.5, "step size", gt=0)


@dataclasses.dataclass(frozen=True)
class _AfterNeutral:  # _Before with a setting added later, its default the old behaviour
    lr: float = setting(0.5, "step size", gt=0)
    init: str = setting("plain", "initialisation", choices=("plain", "tied"), in_id_at_default=False)


@dataclasses.dataclass(frozen=True)
class _AfterKeyed:  # the same addition without the declaration
    lr: float = setting(0.5, "step size", gt=0)
    init: str = setting("plain", "initialisation", choices=("plain", "tied"))


def test_a_setting_added_with_in_id_at_default_false_keeps_stored_ids():
    from discretegrad.harness.contract import RunConfig

    def rid(obj):
        return RunConfig("toy", EstimatorChoice("stgs"), 0, obj, {"tau": 1.0}).run_id

    before = rid(_Before())
    assert rid(_AfterNeutral()) == before and rid(_AfterNeutral(init="plain")) == before
    assert settings.identity(_AfterNeutral()) == {"lr": 0.5}
    assert settings.identity(_AfterNeutral(init="tied")) == {"lr": 0.5, "init": "tied"}
    assert rid(_AfterNeutral(init="tied")) != before  # changing it is a new run
    assert rid(_AfterNeutral(lr=0.25)) == rid(_Before(lr=0.25))  # whatever the other settings
    assert rid(_AfterKeyed()) != before  # without the declaration every stored run would be orphaned
    assert [f.in_id_at_default for f in settings.fields(_AfterNeutral)] == [True, False]
    with pytest.raises(TypeError, match="Expected in_id_at_default to be a bool"):
        setting(1, "x", in_id_at_default=1)


# the stores that later sessions extend (resume into): re-planning every stored run must give its id
_EXTENDED_STORES = ("categorical-vae-fig3", "categorical-vae-table2", "categorical-vae-table3", "categorical-vae-table7",
                    "listops",
                    "nri-graph-layout", "nri-graph-layout-20k", "nri-graph-layout-50k", "nri-graph-layout-tied",
                    "poisson-gan-fidelity", "bernoulli-vae-arm/linear-50",
                    "poisson-gan-full")


@pytest.mark.parametrize("name", _EXTENDED_STORES)
def test_stored_runs_keep_their_ids_under_the_current_settings(name):
    con = sqlite3.connect(f"file:{RESULTS / name / 'store.sqlite'}?mode=ro", uri=True)
    rows = con.execute("SELECT run_id, config FROM runs").fetchall()
    con.close()
    assert rows
    for stored_id, text in rows:
        cfg = json.loads(text)
        again = make_config(get_experiment(cfg["experiment"]), EstimatorChoice(cfg["estimator"], cfg["estimator_hparams"]),
                            cfg["seed"], cfg["params"])
        assert again.run_id == stored_id, (name, cfg["estimator"], cfg["seed"], sorted(
            k for k in {**again.params, **cfg["params"]} if again.params.get(k) != cfg["params"].get(k)))


def test_resume_reruns_a_run_whose_estimator_default_changed(tmp_path, monkeypatch):
    kw = dict(out=tmp_path, estimators=["stgs"], seeds=[0], quick=True)
    assert run_sweep(plan_sweep("toy", **kw), progress=False).finished == 1
    assert run_sweep(plan_sweep("toy", **kw), progress=False).skipped == 1
    monkeypatch.setitem(dg.get_estimator("stgs", distribution="categorical").hyperparameters, "tau", 2.0)
    again = run_sweep(plan_sweep("toy", **kw), progress=False)
    assert (again.skipped, again.finished) == (0, 1)  # not silently taken for the old run
    with Store(tmp_path) as st:
        groups, _ = load_groups(st)
    labels = sorted(g.estimator for g in groups)
    assert labels == ["stgs [tau=1.0]", "stgs [tau=2.0]"]  # never pooled; the label says which default


# ----------------------------------------------------------------------------- old (schema 1) stores

def _make_v1_store(path: Path) -> str:
    exp = get_experiment("toy")
    cfg = make_config(exp, "stgs", 0, {"lr": 1.0})
    old_config = {k: v for k, v in cfg.to_json().items() if k != "estimator_defaults"}  # the old run-id scheme
    from discretegrad.harness.contract import run_id

    rid = run_id(old_config)
    result = RunResult(rid, old_config, "finished", {"final_loss": 0.5, "prob_target": 0.9},
                       [(1, {"train_loss": 0.5})], {"efficiency": {"seconds_per_epoch": 1.0, "peak_memory_mb": 2.0}},
                       None, {"torch": "t"}, 1.0, 2.0)
    info = experiment_info(exp)
    del info["artifacts"]  # stored before the contract declared artifacts
    with Store(path, create=True) as st:
        st.record_experiment("toy", info)
        st.write_run(result, grid={"lr": 1.0}, label="stgs")
    con = sqlite3.connect(path / "store.sqlite")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    return rid


def test_old_store_is_reported_unchanged_and_never_resumed_into(tmp_path, capsys):
    rid = _make_v1_store(tmp_path)
    before = (tmp_path / "store.sqlite").read_bytes()
    with Store(tmp_path) as st:
        assert st.schema_version == 1
        recs = {(r["estimator"], r["metric"]): r for r in summarize(st)}
        eff = efficiency(st)  # baseline from the registered experiment's declaration
    assert recs[("stgs", "final_loss")]["mean"] == 0.5
    assert eff[0]["baseline"] == "stgs" and eff[0]["seconds_per_epoch_ratio"] == 1.0
    assert cli_module.main(["report", str(tmp_path)]) == 0
    capsys.readouterr()
    for extra in ([], ["--dry-run"]):  # the same sweep against it: refused, not re-run or mis-attributed
        code = cli_module.main(["run", "toy", "--estimators", "stgs", "--seeds", "0", "--set", "lr=1.0",
                                "--out", str(tmp_path), "--plugin", "toy_experiment", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "version-1 store" in err and "discretegrad report" in err
    with Store(tmp_path) as st:
        assert list(st.statuses()) == [rid] and len(st.sweeps()) == 0
    assert (tmp_path / "store.sqlite").read_bytes() == before


@pytest.mark.parametrize("name", sorted(p.parent.name for p in RESULTS.glob("*/store.sqlite")))
def test_committed_stores_are_still_reported(tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(RESULTS / name, copy, ignore=shutil.ignore_patterns("report"))
    with Store(copy) as st:
        records = summarize(st)
    old = json.loads((RESULTS / name / "report" / "summary.json").read_text())
    assert json.loads(dumps(records)) == old  # the committed summary, record for record


# ----------------------------------------------------------------------------- declared artifacts

def test_efficiency_baseline_comes_from_the_contract(tmp_path):
    exp = get_experiment("toy")
    assert exp.artifacts == (EFFICIENCY.with_baseline("stgs"),)
    info = experiment_info(exp)
    info["artifacts"] = [EFFICIENCY.with_baseline("st").to_json()]  # an experiment declaring another baseline
    with Store(tmp_path, create=True) as st:
        st.record_experiment("toy", info)
        for name, seconds in (("stgs", 2.0), ("st", 4.0)):
            cfg = make_config(exp, name, 0)
            st.write_run(RunResult(cfg.run_id, cfg.to_json(), "finished", {"final_loss": 1.0}, [],
                                   {"efficiency": {"seconds_per_epoch": seconds, "peak_memory_mb": 10.0}}, None, {},
                                   0.0, 1.0), grid={"lr": 0.5}, label=name)
        rows = {r["estimator"]: r for r in efficiency(st)}
    assert rows["stgs"]["baseline"] == "st" and rows["stgs"]["seconds_per_epoch_ratio"] == 0.5
    assert rows["st"]["seconds_per_epoch_ratio"] == 1.0
    assert cli_module.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Efficiency (mean over finished runs; ratios to `st` at this setting):" in md


# ----------------------------------------------------------------------------- the generic training loop

class _Ctx:
    device = "cpu"

    def __init__(self):
        self.epochs, self.artifacts = [], {}

    def log_epoch(self, epoch, metrics):
        self.epochs.append((epoch, dict(metrics)))

    def progress(self, epoch, total, metric=None, *, name=None):
        pass

    def log_artifact(self, name, data):
        self.artifacts[name] = data


def test_generic_training_loop_with_evaluation_and_checkpoint_hooks(gen):
    """A non-VAE model (least squares) through ``train``: evaluation and probe hooks add
    metrics, a checkpoint hook every 2 epochs adds none, ``best_*`` is tracked."""
    from discretegrad.experiments.common.nets import init_linear
    from discretegrad.experiments.common.training import Best, every, train

    x = torch.randn(40, 3, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    model = init_linear(torch.nn.utils.skip_init(torch.nn.Linear, 3, 1), gen)  # no global RNG draw
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    saved = []

    def step(batch, index):
        xb, yb = batch
        opt.zero_grad()
        loss = ((model(xb).squeeze(-1) - yb) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    def evaluate(epoch):
        with torch.no_grad():
            return {"test_mse": float(((model(x).squeeze(-1) - y) ** 2).mean())}

    ctx = _Ctx()
    final = train(ctx=ctx, epochs=4, batches=lambda e: [(x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)],
                  step=step, module=model, weight=lambda b: len(b[0]), evaluate=evaluate,
                  hooks=[lambda e, m: {"twice": 2 * m["test_mse"]},
                         every(2, lambda e: saved.append({k: v.clone() for k, v in model.state_dict().items()}))],
                  best=Best("test_mse"))
    assert [e for e, _ in ctx.epochs] == [1, 2, 3, 4] and len(saved) == 2
    assert all(m["twice"] == 2 * m["test_mse"] for _, m in ctx.epochs)
    assert final["best_test_mse"] == min(m["test_mse"] for _, m in ctx.epochs) < ctx.epochs[0][1]["test_mse"]
    assert set(ctx.artifacts["efficiency"]) >= {name for name, _ in EFFICIENCY.columns}


# ----------------------------------------------------------------------------- layering

def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("discretegrad")}


def test_imports_point_down():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        mods = _imports(path)
        if rel.startswith("harness/"):  # the framework: never the experiments (their list is imported by name)
            assert not {m for m in mods if m.startswith("discretegrad.experiments")}, rel
        elif rel.startswith("experiments/"):  # the experiments: the harness contract only
            harness = {m for m in mods if m.startswith("discretegrad.harness")}
            assert harness <= {"discretegrad.harness.contract"} | {f"discretegrad.harness.contract.{n}" for n in
                                                                   ("Artifact", "EFFICIENCY", "Diverged", "EstimatorChoice",
                                                                    "Experiment", "RunConfig", "RunContext",
                                                                    "Selection", "register_experiment", "setting")}, rel
        elif rel != "cli.py":  # the core library: neither
            assert not {m for m in mods if m.startswith(("discretegrad.harness", "discretegrad.experiments"))}, rel


def test_no_module_over_400_lines():
    for path in list((SRC / "harness").rglob("*.py")) + list((SRC / "experiments").rglob("*.py")):
        assert len(path.read_text().splitlines()) <= 400, path
