"""Hyper-parameter and architecture search on an Optuna study held in a relational database.

Each trial is an ordinary strata run in `WORKDIR/trials/trial_NNNN` (config.json, lineage,
checkpoints, metrics.jsonl, summary.json) of the experiment with the trial's point of the space
(`experiments.search_space`) set. Its evaluations (`data.eval_split`, every `train.eval_every`
steps) are reported to the study as intermediate values at their step, so a pruner (ASHA,
Hyperband) can stop it early; the trial's value is its final evaluation's metric.

What is never lost:
- a pruned trial is PRUNED in the study and keeps its workdir (`pruned.json` says at which step);
- a trial whose loss became non-finite, or whose point the experiment refuses (ConfigError), is
  FAIL with the reason in its user attribute "error", and the search goes on;
- a worker killed mid-trial (SIGKILL, a lost machine) stops sending heartbeats; once they are
  `grace` seconds stale, the next worker to start a trial marks it FAIL and queues the same
  point again, marked `resumes` = the first trial of that point, which resumes from the
  checkpoints in that first trial's workdir (at most `MAX_RETRIES` times);
- a worker stopped by SIGTERM (preemption) saves a checkpoint, queues its trial the same way and
  exits; the same command resumes the search.
Several workers (processes, or machines sharing a PostgreSQL or MySQL URL) run one study; each
worker stops creating trials once `trials` (or the `max_steps` training budget) is reached, so
with W workers up to W - 1 more trials may start. With `--workdir gs://...` (and `--storage`),
each trial is a workdir of its own in the bucket (experiments/search_trial.py), so workers on
machines that share no disk each run and resume trials; the tables go up beside them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import time
import warnings
from typing import Any, Callable, Sequence

import ml_collections as mlc
import numpy as np

from experiments import search_space
from experiments.search_trial import MAX_RETRIES as MAX_RETRIES  # re-exported
from experiments.search_trial import Preempted as Preempted  # re-exported
from experiments.search_trial import objective, requeue
from experiments.sweep_results import HIGHER_IS_BETTER
from train import files, loop, progress, remote_workdir, resumable
from train.errors import ConfigError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("asha", "hyperband", "none")


@dataclasses.dataclass
class Search:
  """Everything a worker needs: the experiment, the space, where runs and the study live."""
  config: mlc.ConfigDict
  config_arg: str
  space: str
  workdir: str
  metric: str
  sampler: str = "tpe"
  pruner: str = "none"
  trials: int = 20
  max_steps: int = 0
  seed: int = 0
  storage: str = ""
  study_name: str = ""
  min_resource: int = 0
  reduction_factor: int = 3
  heartbeat: int = 10
  grace: int = 30
  overrides: dict[str, str] = dataclasses.field(default_factory=dict)  # --config.FIELD=VALUE
  worker: int = 0  # this worker's index among those sharing the study: its sampler's own seed

  def __post_init__(self):
    self.items = search_space.parse(self.space)
    search_space.check(self.items, self.config)
    if self.sampler not in SAMPLERS:
      raise ConfigError(f"--sampler={self.sampler!r}; expected one of {list(SAMPLERS)}")
    if self.pruner not in PRUNERS:
      raise ConfigError(f"--pruner={self.pruner!r}; expected one of {list(PRUNERS)}")
    if self.sampler == "grid":
      search_space.grid(self.items)  # refuses a space that is not a flat grid
    if self.trials < 1 and self.sampler != "grid":
      raise ConfigError(f"--trials={self.trials}; expected at least 1")
    if self.max_steps < 0:
      raise ConfigError(f"--max_steps={self.max_steps}; expected 0 (no budget) or more")
    if self.reduction_factor < 2:
      raise ConfigError(f"--reduction_factor={self.reduction_factor}; expected 2 or more")
    if self.worker < 0:
      raise ConfigError(f"--worker_index={self.worker}; expected 0 or more")
    if self.heartbeat < 1 or self.grace <= self.heartbeat:
      raise ConfigError(f"--heartbeat={self.heartbeat}, --grace={self.grace}; expected "
                        "1 <= heartbeat < grace (seconds)")
    self.url = ""  # a workdir in object storage: each trial a gs:// workdir of its own
    if remote_workdir.is_remote(self.workdir):
      if not self.storage:  # its default study lives in it
        raise ConfigError(f"--workdir={self.workdir!r}: a search's default study is a SQLite "
                          "file in its workdir, which a URL cannot hold: set --storage (a "
                          "database URL all workers reach)")
      self.url = self.workdir.rstrip("/")
      self.workdir = remote_workdir.cache_for(self.url)  # the tables, uploaded when written
    files.check_directory(self.workdir, "--workdir")
    self.workdir = os.path.abspath(self.workdir)
    self.storage = self.storage or "sqlite:///" + os.path.join(self.workdir, "study.db")
    self.study_name = self.study_name or os.path.basename(self.url or self.workdir)
    self.direction = ("maximize" if any(h in self.metric for h in HIGHER_IS_BETTER)
                      else "minimize")
    self.min_resource = self.min_resource or max(int(self.config.train.eval_every), 1)

  def settings(self) -> dict[str, Any]:
    """What makes two searches the same study (checked when a study is loaded again)."""
    return {"config": self.config_arg, "space": self.space, "metric": self.metric,
            "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
            "experiment": json.loads(self.config.to_json_best_effort())}


def sampler_seed(search: Search) -> int:
  """The sampler's seed: `seed` for worker 0 (a one-worker search repeats exactly), another for
  each other worker, so that workers sharing a study do not draw the same points."""
  return search.seed if search.worker == 0 else search.seed + 7919 * search.worker


def _sampler(search: Search):
  import optuna

  seed = sampler_seed(search)
  if search.sampler == "grid":  # never proposes a point the study has finished
    return optuna.samplers.GridSampler(search_space.grid(search.items), seed=seed)
  if search.sampler == "random":
    return seeded_per_trial(optuna.samplers.RandomSampler, seed)
  # multivariate + group: TPE models the parameters jointly, and a conditional space as the
  # groups of parameters that appear together
  return seeded_per_trial(optuna.samplers.TPESampler, seed, multivariate=True, group=True)


def seeded_per_trial(base: type, seed: int, **kwargs: Any):
  """`base(seed=seed, **kwargs)`, an Optuna sampler whose random state is reseeded from (seed,
  trial number) before each trial is sampled.

  Optuna keeps no sampler state in storage, so a continued search used to start its sampler
  from `seed` again and propose the first trials' points a second time. Seeded per trial, trial
  n draws what it would have drawn in an uninterrupted search (given the same finished trials,
  which TPE reads from storage), whichever process samples it.
  """
  class PerTrial(base):
    def before_trial(self, study, trial) -> None:
      state = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
      for sampler in (self, getattr(self, "_random_sampler", None)):  # TPE's start-up sampler
        if sampler is not None:
          sampler._rng.rng.seed(state)
      super().before_trial(study, trial)

  PerTrial.__name__ = PerTrial.__qualname__ = f"PerTrial{base.__name__}"
  return PerTrial(seed=seed, **kwargs)


def _pruner(search: Search):
  import optuna

  steps = int(search.config.train.steps)
  if search.pruner == "asha":
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.min_resource,
                                                  reduction_factor=search.reduction_factor)
  if search.pruner == "hyperband":
    return optuna.pruners.HyperbandPruner(min_resource=search.min_resource, max_resource=steps,
                                          reduction_factor=search.reduction_factor)
  return optuna.pruners.NopPruner()


def open_study(search: Search, create: bool = True):
  """The study at `search.storage`, created if absent; a study of other settings is an error."""
  import optuna

  optuna.logging.set_verbosity(optuna.logging.ERROR)  # the search prints its own lines
  # heartbeats, fail_stale_trials and grouped TPE are "experimental" in Optuna 5 (since 2.9)
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  os.makedirs(search.workdir, exist_ok=True)
  with _one_creator(search.storage):
    storage = _storage(search, optuna)
    if not create:
      return optuna.load_study(study_name=search.study_name, storage=storage,
                               sampler=_sampler(search), pruner=_pruner(search))
    study = optuna.create_study(study_name=search.study_name, storage=storage,
                                direction=search.direction, sampler=_sampler(search),
                                pruner=_pruner(search), load_if_exists=True)
    saved = study.user_attrs.get("settings")
    mine = json.loads(json.dumps(search.settings(), sort_keys=True, default=str))
    if saved is None:
      study.set_user_attr("settings", mine)
      return study
  differ = sorted(k for k in set(saved) | set(mine)
                  if k != "experiment" and saved.get(k) != mine.get(k))
  # a config field added to the codebase since the study began, at its default, is no change
  differ += [f"experiment: {k}" for k in resumable.changes_from(saved.get("experiment", {}),
                                                           search.config)][:6]
  if differ:
    raise ConfigError(f"study {search.study_name!r} in {search.storage} was made with other "
                      f"settings ({differ} differ); use another --workdir or --study_name")
  return study


@contextlib.contextmanager
def _one_creator(url: str):
  """Holds an exclusive lock on `<file>.lock` beside an SQLite study while it is opened.

  Workers started together each create the schema of a new database (CREATE TABLE, the alembic
  version row) and all but one failed ("table studies already exists", "UNIQUE constraint
  failed: alembic_version"). A server database has no file to lock: `_storage` retries there.
  """
  path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
  if not path or path == ":memory:":
    yield
    return
  try:
    f = open(path + ".lock", "a")
  except OSError:  # a folder that is not there: RDBStorage says so in its one line
    yield
    return
  with f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _storage(search: Search, optuna, attempts: int = 5):
  """Optuna's RDBStorage at `search.storage`; a URL it cannot use is one ConfigError line.

  On a server database a database error (sqlalchemy.exc.DBAPIError) is tried again, up to
  `attempts` times a second apart: two workers creating its schema at once race as on SQLite.
  """
  import sqlalchemy.exc

  sqlite = search.storage.startswith("sqlite")
  tries = 1 if sqlite else attempts  # SQLite's creators are serialised by _one_creator
  for attempt in range(tries):
    try:
      return optuna.storages.RDBStorage(
          search.storage, heartbeat_interval=search.heartbeat, grace_period=search.grace,
          heartbeat_stale_trial_callback=requeue,
          engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None)
    except ImportError:
      raise
    except Exception as e:  # SQLAlchemy's errors for a URL it cannot use, of many types
      if isinstance(e, sqlalchemy.exc.DBAPIError) and attempt + 1 < tries:
        time.sleep(1.0)
        continue
      raise ConfigError(f"--storage={search.storage!r}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}; expected an SQLAlchemy URL "
                        "such as sqlite:///path/study.db or postgresql://host/db") from e


def finished(study) -> list:
  """The trials that count towards `--trials`: finished ones, less those queued again (a killed
  or preempted trial counts once, through the trial that resumed it)."""
  trials = study.get_trials(deepcopy=False)
  requeued = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
  return [t for t in trials if t.state.is_finished() and t.number not in requeued]


def steps_spent(trials: Sequence) -> int:
  """Training steps the trials ran (a pruned trial's up to its pruning)."""
  return sum(int(t.user_attrs.get("steps", 0)) for t in trials)


def _done(search: Search, study) -> bool:
  from optuna.trial import TrialState

  waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
  if waiting:
    return False
  done = finished(study)
  if search.sampler == "grid":
    return len(done) >= math.prod(len(v) for v in search_space.grid(search.items).values())
  return len(done) >= search.trials or (
      search.max_steps > 0 and steps_spent(done) >= search.max_steps)


def work(search: Search, log: Callable[[str], None] = progress.console) -> None:
  """One worker: runs trials until the study is done, then waits for trials other workers hold
  (or fails them once their heartbeats go stale, which queues them again, and runs those)."""
  import optuna
  from optuna.trial import TrialState

  study = open_study(search)
  run_trial = objective(search, log)

  def stop_when_done(study, trial) -> None:
    state = trial.state.name.lower()
    value = "" if trial.value is None else f" {search.metric} {trial.value:.4g}"
    done = finished(study)
    log(f"[search] trial {trial.number} {state}{value}; {len(done)} finished, "
        f"{steps_spent(done)} steps")
    if _done(search, study):
      study.stop()

  while True:
    if not _done(search, study):
      study.optimize(run_trial, callbacks=[stop_when_done],
                     catch=(loop.NonFiniteLossError, ConfigError))
      continue
    optuna.storages.fail_stale_trials(study)  # queues the trials of workers that died
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running and _done(search, study):
      return
    time.sleep(min(search.heartbeat, 5))
