"""A search whose workdir is in object storage (`--workdir gs://...` with `--storage`;
experiments/search_trial.py): each trial a workdir of its own there, uploaded as it runs, and the
tables beside them. `file://` URLs run the same mirror as `gs://` (tests/train/test_mirror.py)."""

import json

import pytest

from experiments import search_results
from experiments import search_study as search
from tests.conftest import load_experiment
from train import object_lock, workdir_mirror
from train.config import ConfigError


def test_a_search_on_a_url_uploads_each_trial_and_its_tables(data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("STRATA_CACHE", str(tmp_path / "cache"))
  config = load_experiment("mnist1d_logreg", "tiny", data_dir)
  url = f"file://{tmp_path}/bucket/search"
  s = search.Search(config=config, config_arg="experiments/mnist1d_logreg.py:tiny",
                    space="optim.learning_rate=[0.1,0.01]", workdir=url, metric="accuracy",
                    sampler="grid", storage=f"sqlite:///{tmp_path}/study.db")
  logs = []
  search.work(s, log=logs.append)
  study = search.open_study(s)
  search_results.write(s, study)
  bucket = tmp_path / "bucket" / "search"
  assert sorted(t.user_attrs["workdir"] for t in study.trials) == ["trials/trial_0000",
                                                                   "trials/trial_0001"]
  for t in study.trials:
    run = bucket / t.user_attrs["workdir"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 20
    assert (run / "checkpoints" / "20" / workdir_mirror.MARKER).exists()
    assert not (run / object_lock.KEY).exists()  # each trial's lock, released
  assert any(f"in {url}/trials/trial_0000" in line for line in logs)
  table = json.loads((bucket / "results.json").read_text())
  assert table["counts"]["complete"] == 2 and (bucket / "results.md").exists()


def test_a_search_on_a_url_without_storage_is_refused(data_dir):
  config = load_experiment("mnist1d_logreg", "tiny", data_dir)
  with pytest.raises(ConfigError, match="default study is a SQLite file in its workdir"):
    search.Search(config=config, config_arg="x", space="optim.learning_rate=[0.1]",
                  workdir="gs://bucket/search", metric="accuracy", sampler="grid")


def test_a_trial_held_by_a_dead_workers_lock_waits_for_it_to_expire(data_dir, tmp_path,
                                                                     monkeypatch):
  import os
  import threading
  import time

  monkeypatch.setenv("STRATA_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(object_lock, "EXPIRY_SECS", 2.0)
  trial = tmp_path / "bucket" / "search" / "trials" / "trial_0000"
  trial.mkdir(parents=True)
  waiting = threading.Event()

  def other_worker():
    """A worker on another host: alive (renewing its heartbeat) until this worker has seen its
    lock and waits, then gone. A heartbeat written once at the start could expire before this
    worker first looks on a loaded machine (CI: set-up past 2 s), and the wait went untested."""
    deadline = time.monotonic() + 60
    while not waiting.is_set() and time.monotonic() < deadline:
      (tmp_path / "renew.tmp").write_text(json.dumps(  # outside the trial's workdir
          {"owner": "other-host:1:x", "heartbeat": time.time()}))
      os.replace(tmp_path / "renew.tmp", trial / object_lock.KEY)
      waiting.wait(0.2)

  def log(line: str) -> None:
    logs.append(line)
    if "waiting for the lock of" in line:
      waiting.set()

  (trial / object_lock.KEY).write_text(json.dumps(
      {"owner": "other-host:1:x", "heartbeat": time.time()}))
  renewer = threading.Thread(target=other_worker, daemon=True)
  renewer.start()
  config = load_experiment("mnist1d_logreg", "tiny", data_dir)
  s = search.Search(config=config, config_arg="experiments/mnist1d_logreg.py:tiny",
                    space="optim.learning_rate=[0.1]", workdir=f"file://{tmp_path}/bucket/search",
                    metric="accuracy", sampler="grid", storage=f"sqlite:///{tmp_path}/study.db")
  logs = []
  try:
    search.work(s, log=log)
  finally:
    waiting.set()
    renewer.join()
  assert any("waiting for the lock of" in line and "other-host:1:x" in line for line in logs)
  assert [t.state.name for t in search.open_study(s).trials] == ["COMPLETE"]
  assert json.loads((trial / "summary.json").read_text())["steps"] == 20
