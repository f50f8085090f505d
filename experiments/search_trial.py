"""One trial of a search (experiments/search_study.py): a run of the experiment at the trial's
point, in `WORKDIR/trials/trial_NNNN`, reporting its evaluations to the study. With a workdir in
object storage (`--workdir gs://...` with `--storage`), each trial is a `gs://` workdir of its own
(train/remote_workdir.py): a local copy uploaded as it goes, under a lock of its own, so workers
on machines that share no disk each run their trials, and one that resumes a dead worker's trial
downloads its checkpoints."""

from __future__ import annotations

import copy
import os
import socket
import time
from typing import Any, Callable

from experiments import search_space
from experiments import sweep_runs as sweep
from train import config as config_lib
from train import files, loop, metric_writer, object_lock, remote_workdir
from train.errors import ConfigError

MAX_RETRIES = 3


class Preempted(InterruptedError):
  """The worker was asked to stop (SIGTERM); its trial is checkpointed, marked `preempted` and
  queued to resume. `python -m experiments.search` ends with exit status 0 on it, as a
  preempted run does."""
  exit_status = 0


def requeue(study, trial) -> None:
  """Queues a trial's point again, to resume in the workdir of the first trial of that point."""
  root = int(trial.user_attrs.get("resumes", trial.number))
  retries = int(trial.user_attrs.get("retries", 0))
  if retries >= MAX_RETRIES:
    return
  study.enqueue_trial(trial.params, user_attrs={"resumes": root, "retry_of": trial.number,
                                                "retries": retries + 1})


def trial_dir(workdir: str, number: int) -> str:
  return os.path.join(workdir, "trials", f"trial_{number:04d}")


def objective(search: Any, log: Callable[[str], None]) -> Callable[[Any], float]:
  """The function a worker's study optimises for `search` (a `search_study.Search`, whose module
  imports this one): one trial = one run (module docstring)."""
  import optuna

  steps = int(search.config.train.steps)

  def run_trial(trial) -> float:
    root = int(trial.user_attrs.get("resumes", trial.number))
    where = trial_dir(search.url or search.workdir, root)
    label = f"[search] trial {trial.number}" + (f" (resumes {root})" if root != trial.number
                                                else "")
    # a trial in object storage whose worker died elsewhere: its lock expires after
    # object_lock.EXPIRY_SECS, later than the study takes the worker for dead (--grace)
    deadline = time.monotonic() + object_lock.EXPIRY_SECS + 30
    while True:
      try:
        with remote_workdir.local_workdir(where) as workdir:  # gs://: the trial's local copy
          return run_in(trial, root, where, workdir, label)
      except object_lock.LockHeld as e:
        if time.monotonic() > deadline:
          trial.set_user_attr("error", str(e))
          raise
        if not trial.user_attrs.get("waited"):
          log(f"{label}: waiting for the lock of {where}: {e}")
          trial.set_user_attr("waited", True)
        time.sleep(min(10.0, object_lock.EXPIRY_SECS / 4))

  def run_in(trial, root: int, where: str, workdir: str, label: str) -> float:
    """The trial `trial` (resuming the workdir of trial `root`) in the local `workdir`, the copy
    of `where`."""
    point = search_space.suggest(search.items, trial)
    config = copy.deepcopy(search.config)
    try:
      for field, value in point.items():
        config_lib.set_field(config, field, value, f"trial {trial.number}")
      config_lib.validate(config)
      sweep.check_unchanged(workdir, config)
    except ConfigError as e:
      trial.set_user_attr("error", str(e))
      log(f"{label}: the experiment refuses {point}: {e}")
      raise
    worker = f"{socket.gethostname()}:{os.getpid()}"
    trial.set_user_attr("workdir", os.path.relpath(trial_dir(".", root)))
    trial.set_user_attr("worker", worker)
    os.makedirs(workdir, exist_ok=True)
    files.write_json_atomic(os.path.join(workdir, "trial.json"), {
        "study": search.study_name, "trial": trial.number, "resumes": root, "point": point,
        "params": trial.params, "worker": worker})
    log(f"{label}: {point} in {where}")
    for row in metric_writer.read_metrics(workdir, "eval"):  # a resumed trial's history
      if search.metric in row:
        trial.report(float(row[search.metric]), int(row["step"]))

    def on_eval(step: int, name: str, metrics: dict[str, float]) -> None:
      if name != "eval":
        return
      if search.metric not in metrics:
        raise ConfigError(f"--metric={search.metric!r}: the evaluation gives "
                          f"{sorted(k for k in metrics if k != 'count')}")
      trial.report(float(metrics[search.metric]), step)
      trial.set_user_attr("steps", step)
      if step < steps and trial.should_prune():
        files.write_json_atomic(os.path.join(workdir, "pruned.json"),
                                {"step": step, search.metric: metrics[search.metric]})
        raise optuna.TrialPruned(f"at step {step}, {search.metric} "
                                 f"{metrics[search.metric]:.4g}")

    try:
      final = loop.train_and_evaluate(config, workdir, on_eval=on_eval)
    except loop.NonFiniteLossError as e:
      trial.set_user_attr("error", str(e))
      log(f"{label}: diverged: {e}")
      raise
    if not os.path.exists(os.path.join(workdir, files.SUMMARY)):
      # Optuna has no preempted state: the trial ends as failed in the study, marked preempted
      # here, and every table and count reads the mark (search_results.state)
      trial.set_user_attr("preempted", True)
      requeue(trial.study, trial)
      raise Preempted(f"trial {trial.number} stopped with a checkpoint in {where}; "
                                   "queued to resume")
    trial.set_user_attr("steps", steps)
    return float(final[search.metric])

  return run_trial
