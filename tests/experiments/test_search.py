"""Search on an Optuna study (`experiments.search_study`, `python -m experiments.search`): trials are runs
with their own workdirs, pruned and failed trials are recorded, the grid covers its points, a
training-step budget stops a search, a study of other settings is refused, and (slow) two worker
processes share one SQLite study while one is killed mid-trial."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from experiments import search_results
from experiments import search_study as search
from tests.conftest import ROOT, load_experiment
from train.config import ConfigError


def _search(data_dir, workdir, space, **kw):
  config = load_experiment("mnist1d_logreg", "tiny", data_dir)
  with config.unlocked():
    config.train.eval_every = 5  # four evaluations in the tiny mode's 20 steps
  return search.Search(config=config, config_arg="experiments/mnist1d_logreg.py:tiny",
                       space=space, workdir=str(workdir), metric="accuracy", **kw)


@pytest.fixture(scope="module")
def asha(data_dir, tmp_path_factory):
  """Eight trials of random learning rates under ASHA (halving at every evaluation)."""
  s = _search(data_dir, tmp_path_factory.mktemp("asha"),
              "optim.learning_rate=loguniform(1e-6,1.0)", sampler="random", pruner="asha",
              trials=8, reduction_factor=2, overrides={"train.eval_every": "5"})
  logs = []
  search.work(s, log=logs.append)
  study = search.open_study(s)
  return s, study, search_results.write(s, study), logs


def test_trials_are_runs_and_pruned_ones_are_kept(asha):
  s, study, text, logs = asha
  states = [t.state.name for t in study.trials]
  assert len(states) == 8 and "PRUNED" in states and "COMPLETE" in states, states
  for t in study.trials:
    workdir = os.path.join(s.workdir, t.user_attrs["workdir"])
    with open(os.path.join(workdir, "trial.json")) as f:
      assert json.load(f)["point"] == {"optim.learning_rate": t.params["optim.learning_rate"]}
    with open(os.path.join(workdir, "config.json")) as f:
      assert json.load(f)["optim"]["learning_rate"] == t.params["optim.learning_rate"]
    evals = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
             if json.loads(line)["split"] == "eval"]
    # every evaluation reached the study, at its step
    assert {e["step"]: e["accuracy"] for e in evals} == t.intermediate_values
    if t.state.name == "PRUNED":
      with open(os.path.join(workdir, "pruned.json")) as f:
        step = json.load(f)["step"]
      assert step == t.user_attrs["steps"] == max(t.intermediate_values) < 20
      assert not os.path.exists(os.path.join(workdir, "summary.json"))
    else:
      with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["final_eval"]["accuracy"] == pytest.approx(t.value)
      assert t.user_attrs["steps"] == 20
  spent = sum(t.user_attrs["steps"] for t in study.trials)
  assert spent < 8 * 20 and f"{spent} training steps in all" in text
  assert any("pruned" in line for line in logs)


def test_results_name_the_best_trial_and_its_command(asha):
  s, study, text, _ = asha
  with open(os.path.join(s.workdir, "results.json")) as f:
    results = json.load(f)
  best = study.best_trial
  assert results["best"]["trial"] == best.number and results["best"]["value"] == best.value
  lr = best.params["optim.learning_rate"]
  assert (f"python -m train --config experiments/mnist1d_logreg.py:tiny --workdir runs/best "
          f"--config.train.eval_every=5 --config.optim.learning_rate={lr!r}") in text
  # the history is the best value so far against the cumulative steps, ending at the best
  steps, values = zip(*results["history"])
  assert list(steps) == sorted(steps) and steps[-1] == results["steps"]
  finite = [v for v in values if v == v]  # nan before the first completed trial
  assert values[-1] == best.value and finite == sorted(finite)
  assert search_results.best_value_at(results["history"], steps[-1]) == best.value
  assert search_results.steps_to_reach(results["history"], best.value, maximize=True) == min(
      s for s, v in results["history"] if v == best.value)
  assert os.path.getsize(os.path.join(s.workdir, "results.png")) > 0
  rows = open(os.path.join(s.workdir, "results.csv")).read().splitlines()
  assert rows[0] == "trial,state,value,steps,resumes,point" and len(rows) == 9


@pytest.mark.slow  # seven short runs
def test_a_grid_runs_each_point_once_and_a_budget_stops_a_search(data_dir, tmp_path):
  s = _search(data_dir, tmp_path / "grid", "optim.learning_rate=[0.1,0.01]; optim.name=[adam,sgd]",
              sampler="grid")
  search.work(s, log=lambda *_: None)
  points = {(t.params["optim.learning_rate"], t.params["optim.name"])
            for t in search.open_study(s).trials}
  assert points == {(0.1, "adam"), (0.1, "sgd"), (0.01, "adam"), (0.01, "sgd")}
  s = _search(data_dir, tmp_path / "budget", "optim.learning_rate=loguniform(1e-3,1e-1)",
              sampler="random", trials=50, max_steps=50)
  search.work(s, log=lambda *_: None)
  assert len(search.open_study(s).trials) == 3  # 20 + 20 + 20 >= 50


def test_refused_points_fail_and_the_search_goes_on(data_dir, tmp_path):
  s = _search(data_dir, tmp_path, "optim.name=[adamx,adam]", sampler="grid")
  logs = []
  search.work(s, log=logs.append)
  study = search.open_study(s)
  by_name = {t.params["optim.name"]: t for t in study.trials}
  assert by_name["adamx"].state.name == "FAIL" and by_name["adam"].state.name == "COMPLETE"
  assert "optim.name='adamx'; expected one of" in by_name["adamx"].user_attrs["error"]
  assert any("the experiment refuses" in line for line in logs)
  assert "1 complete, 0 pruned, 1 failed" in search_results.write(s, study)


def test_a_study_of_other_settings_is_refused(data_dir, tmp_path):
  search.open_study(_search(data_dir, tmp_path, "optim.learning_rate=[0.1]", sampler="grid"))
  other = _search(data_dir, tmp_path, "optim.learning_rate=[0.2]", sampler="grid")
  with pytest.raises(ConfigError, match=r"other settings \(\['space'\] differ\)"):
    search.open_study(other)
  # a config field the codebase gained since the study began, at its default, is no change
  first = _search(data_dir, tmp_path, "optim.learning_rate=[0.1]", sampler="grid")
  study = search.open_study(first)
  settings = study.user_attrs["settings"]
  del settings["experiment"]["data"]["synthetic"]
  study.set_user_attr("settings", settings)
  search.open_study(first)
  first.config.train.steps = 30
  with pytest.raises(ConfigError, match=r"\['experiment: train.steps'\] differ"):
    search.open_study(first)
  with pytest.raises(ConfigError, match="1 <= heartbeat < grace"):
    _search(data_dir, tmp_path, "optim.learning_rate=[0.1]", heartbeat=5, grace=5)


def _open_together(s, workdirs, barrier, results):
  """One of the processes of the next test: opens each new study the moment all are ready."""
  for workdir in workdirs:
    s.workdir, s.storage = workdir, "sqlite:///" + os.path.join(workdir, "study.db")
    barrier.wait(timeout=120)
    try:
      search.open_study(s)
      results.put("ok")
    except Exception as e:  # noqa: BLE001 -- the parent reports what a worker met
      results.put(f"{type(e).__name__}: {str(e).splitlines()[0]}")


@pytest.mark.slow  # 17-23 s: four spawned interpreters import JAX
def test_workers_started_together_all_open_a_new_sqlite_study(data_dir, tmp_path):
  """Four processes open each of four new SQLite studies at the same instant. Each used to
  create the schema, and all but one could fail ("table studies already exists", "UNIQUE
  constraint failed: alembic_version"; 3 of 5 rounds at e1811e7); the lock beside the file
  lets one create it and the others find it."""
  import multiprocessing

  s = _search(data_dir, tmp_path / "unused", "optim.learning_rate=[0.1,0.2]")
  workdirs = [str(tmp_path / f"study{i}") for i in range(4)]
  for workdir in workdirs:
    os.makedirs(workdir)
  ctx = multiprocessing.get_context("spawn")
  barrier, results = ctx.Barrier(4), ctx.Queue()
  workers = [ctx.Process(target=_open_together, args=(s, workdirs, barrier, results))
             for _ in range(4)]
  for w in workers:
    w.start()
  outcomes = [results.get(timeout=300) for _ in range(16)]
  for w in workers:
    w.join(timeout=60)
  assert outcomes == ["ok"] * 16, [o for o in outcomes if o != "ok"]
  for workdir in workdirs:
    s.workdir, s.storage = workdir, "sqlite:///" + os.path.join(workdir, "study.db")
    assert len(optuna.get_all_study_summaries(s.storage)) == 1


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_workers_trial_resumes(data_dir, tmp_path):
  """Two processes run one SQLite study; one is killed (SIGKILL) once its trial has a
  checkpoint. The other marks that trial failed when its heartbeat is stale, runs its point
  again in the same workdir from the checkpoint, and finishes the study: nothing is lost."""
  workdir = str(tmp_path / "study")
  command = [sys.executable, "-m", "experiments.search", "--config",
             "experiments/mnist1d_logreg.py:tiny", "--space",
             "optim.learning_rate=loguniform(1e-3,1e-1)", "--sampler", "random", "--trials", "4",
             "--workdir", workdir, "--heartbeat", "1", "--grace", "3",
             f"--config.data.data_dir={data_dir}", "--config.train.steps=4000",
             "--config.train.checkpoint_every=500", "--config.train.eval_every=1000",
             "--config.train.log_every=1000", "--compilation_cache="]
  keep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  time.sleep(2)  # the first worker creates the study
  victim = subprocess.Popen(command + ["--worker_index=1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  killed, deadline = None, time.time() + 300
  while killed is None and time.time() < deadline and victim.poll() is None:
    for folder in sorted(os.listdir(os.path.join(workdir, "trials"))
                         if os.path.isdir(os.path.join(workdir, "trials")) else []):
      trial_dir = os.path.join(workdir, "trials", folder)
      try:
        with open(os.path.join(trial_dir, "trial.json")) as f:
          info = json.load(f)
      except (OSError, ValueError):
        continue
      checkpoints = os.path.join(trial_dir, "checkpoints")
      if (info["worker"].endswith(f":{victim.pid}") and os.path.isdir(checkpoints)
          and any(name.isdigit() for name in os.listdir(checkpoints))  # a finished save
          and not os.path.exists(os.path.join(trial_dir, "summary.json"))):
        victim.send_signal(signal.SIGKILL)
        killed = info["trial"]
        break
    time.sleep(0.05)
  victim.wait()
  assert killed is not None, "the second worker finished no checkpoint before the deadline"
  out, err = keep.communicate(timeout=600)
  assert keep.returncode == 0, err[-3000:]

  storage = f"sqlite:///{workdir}/study.db"
  study = optuna.load_study(study_name="study", storage=storage)
  trials = {t.number: t for t in study.trials}
  assert trials[killed].state.name == "FAIL"
  (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed]
  assert retry.state.name == "COMPLETE" and retry.user_attrs["resumes"] == killed
  assert retry.params == trials[killed].params
  assert retry.user_attrs["workdir"] == trials[killed].user_attrs["workdir"]
  assert f"[search] trial {retry.number} (resumes {killed})" in err
  with open(os.path.join(workdir, "trials", f"trial_{killed:04d}", "summary.json")) as f:
    assert json.load(f)["resumed_from"] >= 500  # from the killed worker's checkpoint
  states = [t.state.name for t in trials.values()]
  assert states.count("COMPLETE") >= 4 and "RUNNING" not in states and "WAITING" not in states
  assert "4 complete" in out or f"{states.count('COMPLETE')} complete" in out


@pytest.mark.slow  # 6-9 s: the default suite keeps ASHA's pruning (the first test here)
def test_hyperband_prunes_on_the_evaluations_as_asha_does(data_dir, tmp_path):
  s = _search(data_dir, tmp_path, "optim.learning_rate=loguniform(1e-6,1.0)", sampler="random",
              pruner="hyperband", trials=6, reduction_factor=2)
  assert isinstance(search._pruner(s), optuna.pruners.HyperbandPruner)
  search.work(s, log=lambda *_: None)
  study = search.open_study(s)
  states = {t.state.name for t in study.trials}
  assert len(study.trials) == 6 and states == {"COMPLETE", "PRUNED"}, states
  for t in study.trials:  # every evaluation reached the study
    assert sorted(t.intermediate_values)[:1] == [5]


def test_workers_sharing_a_study_draw_different_points(data_dir, tmp_path):
  def draws(worker):
    s = _search(data_dir, tmp_path, "optim.learning_rate=loguniform(1e-6,1.0)", sampler="random",
                worker=worker)
    study = optuna.create_study(sampler=search._sampler(s))
    return [study.ask().suggest_float("x", 0, 1) for _ in range(5)]

  assert draws(0) == draws(0) and draws(1) == draws(1)  # each worker repeats itself
  assert not set(draws(0)) & set(draws(1))
  assert search.sampler_seed(_search(data_dir, tmp_path, "optim.learning_rate=[0.1]")) == 0


@pytest.mark.slow  # a search in a fresh interpreter, stopped and continued
def test_a_preempted_search_exits_0_marks_its_trial_and_continues_without_repeats(
    data_dir, tmp_path):
  workdir = str(tmp_path / "study")
  command = [sys.executable, "-m", "experiments.search", "--config",
             "experiments/mnist1d_logreg.py:tiny", "--space",
             "optim.learning_rate=loguniform(1e-3,1e-1)", "--sampler", "random", "--trials", "3",
             "--workdir", workdir, f"--config.data.data_dir={data_dir}",
             "--config.train.steps=3000", "--config.train.checkpoint_every=500",
             "--config.train.eval_every=1000", "--config.train.log_every=1000",
             "--compilation_cache="]
  first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
  checkpoints = os.path.join(workdir, "trials", "trial_0001", "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and first.poll() is None and not (
      os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))):
    time.sleep(0.05)
  first.send_signal(signal.SIGTERM)
  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  assert "[search] stopped: trial 1 stopped with a checkpoint" in err
  study = optuna.load_study(study_name="study", storage=f"sqlite:///{workdir}/study.db")
  assert study.trials[1].user_attrs["preempted"] is True
  again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "1 preempted and resumed" in again.stdout
  study = optuna.load_study(study_name="study", storage=f"sqlite:///{workdir}/study.db")
  points = [t.params["optim.learning_rate"] for t in study.trials
            if "retry_of" not in t.user_attrs]
  assert len(points) == len(set(points)) == 3  # the continued search drew no point twice
