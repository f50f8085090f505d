"""Sweeps (`experiments.sweep_runs`, `python -m experiments.sweep`), reproduction tables and run
comparison: spec parsing and its errors, a killed sweep that finishes only what is missing, and
what `experiments.compare` reports."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import compare, reproduce
from experiments import sweep_runs as sweep
from tests.conftest import ROOT, load_experiment
from train.config import ConfigError


def test_spec_parses_literals_tuples_and_bare_words():
  axes = sweep.parse_spec("optim.learning_rate=[1e-3, 3e-3]; model.features=[(8,8),(16,)];"
                          "optim.name=[adam,'sgd']")
  assert [a.field for a in axes] == ["optim.learning_rate", "model.features", "optim.name"]
  assert axes[0].values == (1e-3, 3e-3)
  assert axes[1].values == ((8, 8), (16,))
  assert axes[2].values == ("adam", "sgd")
  grid = sweep.points(axes)
  assert len(grid) == 8 and grid[1] == {"optim.learning_rate": 1e-3, "model.features": (8, 8),
                                        "optim.name": "sgd"}
  assert sweep.point_name(grid[1]) == "optim.learning_rate=0.001,model.features=8-8,optim.name=sgd"


def test_values_that_differ_only_in_unsafe_characters_get_distinct_directories():
  axes = sweep.parse_spec("data.eval_split=['train[:3500]','train[3500:]',test]")
  names = [sweep.point_name(p) for p in sweep.points(axes)]
  assert names[2] == "data.eval_split=test"  # safe values keep their plain names
  assert len(set(names)) == 3 and all(n.startswith("data.eval_split=train3500-") for n in names[:2])
  assert all(not set(n) & set("[]:'/ ") for n in names)


@pytest.mark.parametrize("spec, message", [
    ("optim.learning_rate=[]", "empty list"),
    ("optim.learning_rate", "expected FIELD="),
    ("optim.learning_rate=1e-3", "expected a list"),
    ("optim.learning_rate=[1,2];optim.learning_rate=[3]", "appears twice"),
    ("optim.learning_rate=[1,1]", "repeats a value"),
    ("optim.learning_rate=loguniform(0,1)", "0 < low"),
    ("optim.learning_rate=uniform(2,1)", "low < high"),
    ("optim.learning_rate=[1e-3,$x]", "cannot read the value"),
])
def test_bad_specs_name_the_problem(spec, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("$", r"\$")):
    sweep.parse_spec(spec)


def test_random_points_are_seeded_in_range_and_rounded():
  axes = sweep.parse_spec("optim.learning_rate=loguniform(1e-4,1e-1);train.steps=randint(5,9);"
                          "optim.name=[adam,sgd]")
  a, b = sweep.points(axes, samples=20, seed=3), sweep.points(axes, samples=20, seed=3)
  assert a == b and len(a) == 20
  lr = np.array([p["optim.learning_rate"] for p in a])
  assert np.all((lr >= 1e-4) & (lr <= 1e-1)) and lr.min() < 1e-3 < lr.max()
  assert all(float(f"{v:.4g}") == v for v in lr)
  assert {p["train.steps"] for p in a} <= set(range(5, 10))
  with pytest.raises(ConfigError, match="needs random sampling"):
    sweep.points(axes)
  lists = sweep.parse_spec("optim.name=[adam,sgd];seed_free=[1,2,3]")
  picked = sweep.points(lists, samples=6, seed=0)
  assert len({json.dumps(p) for p in picked}) == 6
  with pytest.raises(ConfigError, match="only 6 distinct points"):
    sweep.points(lists, samples=7)


@pytest.mark.parametrize("spec, message", [
    ("optimizer.learning_rate=[1e-3]", "no field 'optimizer.learning_rate'; did you mean "
     "optim.learning_rate"),
    ("optim.learning_rate=[1e-3,fast]", "optim.learning_rate='fast' is a str; expected a float"),
    ("train.steps=[10,2.5]", "train.steps=2.5 is a float; expected an int"),
    ("optim.name=[adam,adamax]", "optim.name='adamax'; expected one of"),
    ("optim=[1]", "'optim' is a section"),
    ("seed=[1,2]", "set by --seeds"),
])
def test_bad_points_fail_before_anything_runs(spec, message, tmp_path):
  base = load_experiment("mnist1d_logreg", "tiny")
  with pytest.raises(ConfigError, match=message):
    sweep.plan(base, sweep.parse_spec(spec), str(tmp_path))
  assert os.listdir(tmp_path) == []


def _sweep_command(workdir, data_dir):
  return [sys.executable, "-m", "experiments.sweep", "--config",
          "experiments/mnist1d_logreg.py:tiny", "--sweep", "optim.learning_rate=[0.01,0.003,0.001]",
          "--workdir", workdir, f"--config.data.data_dir={data_dir}", "--config.train.steps=3000",
          "--config.train.eval_every=0", "--config.train.checkpoint_every=500",
          "--config.train.log_every=500", "--compilation_cache="]


@pytest.fixture(scope="module")
def killed_sweep(data_dir, tmp_path_factory):
  """A three-point sweep killed (SIGKILL) once its second point has a checkpoint, then started
  again with the same command; returns (workdir, first point's summary mtime, restart output)."""
  workdir = str(tmp_path_factory.mktemp("sweep"))
  command = _sweep_command(workdir, data_dir)
  first = os.path.join(workdir, "optim.learning_rate=0.01", "seed_0")
  second_ckpt = os.path.join(workdir, "optim.learning_rate=0.003", "seed_0", "checkpoints", "500")
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 240
  while not os.path.isdir(second_ckpt) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.exists(os.path.join(first, "summary.json")), proc.stderr.read().decode()[-2000:]
  assert not os.path.exists(os.path.join(workdir, "results.csv"))
  mtime = os.path.getmtime(os.path.join(first, "summary.json"))
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  return workdir, mtime, again


@pytest.mark.slow
def test_killed_sweep_restarts_only_what_is_missing(killed_sweep):
  workdir, mtime, again = killed_sweep
  first = os.path.join(workdir, "optim.learning_rate=0.01", "seed_0")
  assert "1/3 optim.learning_rate=0.01 seed 0: done already, skipped" in again.stderr
  assert "2/3 optim.learning_rate=0.003 seed 0: resuming" in again.stderr
  assert "3/3 optim.learning_rate=0.001 seed 0: running" in again.stderr
  assert os.path.getmtime(os.path.join(first, "summary.json")) == mtime
  with open(os.path.join(workdir, "optim.learning_rate=0.003", "seed_0", "summary.json")) as f:
    assert json.load(f)["resumed_from"] >= 500
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = f.read().splitlines()
  assert rows[0].startswith("optim.learning_rate,accuracy_mean,accuracy_std,loss_mean")
  assert [r.split(",")[0] for r in rows[1:]] == ["0.01", "0.003", "0.001"]
  assert all(r.split(",")[-3:-1] == ["1", "0"] for r in rows[1:])  # one seed, none diverged
  assert os.path.getsize(os.path.join(workdir, "results.png")) > 0
  with open(os.path.join(workdir, "results.md")) as f:
    assert "| optim.learning_rate | accuracy | loss | seeds | time per run |" in f.read()


@pytest.fixture(scope="module")
def two_runs(data_dir, tmp_path_factory):
  """A finished two-point sweep of the logistic regression's tiny mode (learning rates 0.01 and
  0.001): its workdir."""
  workdir = str(tmp_path_factory.mktemp("two_runs"))
  base = load_experiment("mnist1d_logreg", "tiny", data_dir)
  sweep.execute(sweep.plan(base, sweep.parse_spec("optim.learning_rate=[0.01,0.001]"), workdir),
                log=lambda *_: None)
  return workdir


def test_compare_names_the_differences_of_two_runs(two_runs):
  workdir = two_runs
  a = os.path.join(workdir, "optim.learning_rate=0.01", "seed_0")
  b = os.path.join(workdir, "optim.learning_rate=0.001", "seed_0")
  result = compare.compare(a, b)
  assert result["config"] == [("optim.learning_rate", 0.01, 0.001)]
  assert result["data"] == [] and result["code"] == [] and result["environment"] == []
  with open(os.path.join(a, "summary.json")) as f:
    accuracy_a = json.load(f)["final_eval"]["accuracy"]
  assert ("accuracy", accuracy_a) == result["metrics"][0][:2]
  with open(os.path.join(a, "lineage.json")) as f:
    lineage = json.load(f)
  assert lineage["dataset"]["fingerprint"] and lineage["libraries"]["jax"]
  if lineage["code"]["commit"] is not None:  # a git checkout: commit and dirty flag
    assert len(lineage["code"]["commit"]) == 40 and isinstance(lineage["code"]["dirty"], bool)
  text = compare.markdown(result)
  assert "| optim.learning_rate | 0.01 | 0.001 |" in text and "## data: identical" in text
  with pytest.raises(ValueError, match="not a run directory"):
    compare.compare(workdir, a)


def test_restarting_over_a_changed_config_is_refused(two_runs, data_dir):
  workdir = two_runs
  base = load_experiment("mnist1d_logreg", "tiny", data_dir)
  base.train.steps = 30  # the finished runs took 20
  with pytest.raises(ConfigError, match="holds a run of another config"):
    sweep.plan(base, sweep.parse_spec("optim.learning_rate=[0.01]"), workdir)


def test_reproduce_runs_a_table_and_prints_the_published_figures(data_dir, tmp_path):
  logs = []
  rows, text = reproduce.reproduce("mnist1d", 2, str(tmp_path), tiny=True,
                                   only=["mnist1d_logreg"], data_dir=data_dir, log=logs.append)
  (row,) = rows
  values = row["metrics"]["accuracy"]["values"]
  assert row["finished"] == 2 and len(values) == 2
  assert f"| logistic regression | {np.mean(values) * 100:.1f} ± " in text and "| 32% |" in text
  assert os.path.exists(os.path.join(tmp_path, "mnist1d", "results.md"))
  with pytest.raises(ConfigError, match="expected one of"):
    reproduce.reproduce("imagenet", 1, str(tmp_path))
  with pytest.raises(ConfigError, match="not in table 'mnist1d'"):
    reproduce.reproduce("mnist1d", 1, str(tmp_path), only=["mnist1d_resnet"])


def test_shards_are_disjoint_and_cover_the_sweep():
  base = load_experiment("mnist1d_logreg", "tiny")
  runs = sweep.plan(base, sweep.parse_spec("optim.learning_rate=[0.1,0.01,0.001]"), "/tmp/x",
                    seeds=2)
  parts = [sweep.shard(runs, i, 4) for i in range(4)]
  names = [r.workdir for p in parts for r in p]
  assert sorted(names) == sorted(r.workdir for r in runs) and len(set(names)) == len(runs)
  assert sweep.parse_shard("3/4") == (3, 4)
  for bad in ("4/4", "-1/2", "1", "a/b"):
    with pytest.raises(ValueError, match=f"--shard='{bad}'; expected I/N"):
      sweep.parse_shard(bad)


@pytest.mark.slow  # three command-line sweeps of two tiny runs
def test_shards_then_collect_write_the_combined_tables(data_dir, tmp_path):
  workdir = str(tmp_path / "sharded")
  command = [sys.executable, "-m", "experiments.sweep", "--config",
             "experiments/mnist1d_logreg.py:tiny", "--sweep", "optim.learning_rate=[0.01,0.001]",
             "--workdir", workdir, f"--config.data.data_dir={data_dir}", "--compilation_cache="]
  first = subprocess.run(command + ["--shard", "0/2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
  assert first.returncode == 0, first.stderr[-2000:]
  done = lambda lr: os.path.exists(  # noqa: E731
      os.path.join(workdir, f"optim.learning_rate={lr}", "seed_0", "summary.json"))
  assert done(0.01) and not done(0.001)
  second = subprocess.run(command + ["--shard", "1/2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
  assert second.returncode == 0 and done(0.001), second.stderr[-2000:]
  os.remove(os.path.join(workdir, "results.csv"))
  collect = subprocess.run(command + ["--collect"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
  assert collect.returncode == 0, collect.stderr[-2000:]
  assert "ran 0" in collect.stderr
  with open(os.path.join(workdir, "results.csv")) as f:
    assert len(f.read().strip().splitlines()) == 3  # a header and both points
