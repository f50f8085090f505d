"""Checkpoints: an orbax `CheckpointManager` in `WORKDIR/checkpoints`, each step one composite of

  state  the train state (orbax StandardSave, restored with the run's shardings),
  data   the grain iterator state (grain's orbax handler), so a resumed run sees the same batches,
  meta   JSON: step, config, lineage; `pending_evals`, the evaluations of the step a
         preemption notice cut short (the resumed run runs them first); and `window`, the
         logging window's per-step metrics not yet written (a save off the logging period).

Orbax writes a step to a temporary folder and renames it when complete, so a half-written step is
never listed. In object storage (the checkpoints of a multi-process job's `gs://` workdir,
train/remote_workdir.py), which has no rename, orbax writes the step in place and
`commit_success.txt` last; a step is listed once that file is there. A listed step that fails
to restore (corrupt files) is moved, not deleted, to `WORKDIR/checkpoints_corrupt/` and the
previous complete step is tried; if none restores, the error says why for each.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

import arch
from data import object_storage
from train import files
from train.errors import CheckpointError, NoRunError


class Checkpointer:
  """Saves and restores (state, data iterator, meta) composites in `directory`."""

  def __init__(self, directory: str, keep: int, async_save: bool = True, keep_every: int = 0):
    """Keeps the newest `keep` steps, and for good every step divisible by `keep_every` (> 0)."""
    remote = object_storage.is_remote(directory)
    self.directory = directory.rstrip("/") if remote else os.path.abspath(directory)
    self.quarantine = self.directory + "_corrupt"
    self._keep, self._async, self._keep_every = keep, async_save, keep_every
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           keep_period=self._keep_every or None,
                                           enable_async_checkpointing=self._async)
    return ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, iterator: grain.DatasetIterator,
           meta: dict[str, Any]) -> None:
    """Saves step `step` (asynchronously when enabled). Never replaces an existing step."""
    if step in self._manager.all_steps():
      raise CheckpointError(f"checkpoint step {step} already exists in {self.directory}; "
                            "refusing to overwrite it")
    if jax.process_index() == 0:
      files.before_checkpoint(self.directory)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator),
        meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, abstract_state: Any,
                     iterator: grain.DatasetIterator) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest step that restores cleanly into (state, iterator).

    Returns:
      (state, meta), or None when the directory holds no checkpoint.

    Raises:
      CheckpointError: checkpoints exist but none restores; each failure is named.
    """
    failures = []
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(iterator),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        moved = self._quarantine(step)
        logging.warning("checkpoint step %d in %s does not restore (%s); moved it to %s and "
                        "trying the previous one", step, self.directory, reason, moved)
        failures.append(f"step {step}: {reason} (moved to {moved})")
        continue
      if failures:
        logging.warning("resumed from step %d after skipping damaged checkpoints: %s", step,
                        "; ".join(failures))
      return restored["state"], dict(restored["meta"])
    if failures:
      raise CheckpointError(
          f"no checkpoint in {self.directory} could be restored:\n  " + "\n  ".join(failures) +
          "\nThe damaged steps were moved aside, not deleted. Start again with --restart to "
          "train from scratch here (the records move aside too), or point --workdir elsewhere.")
    return None

  def _quarantine(self, step: int) -> str:
    # Only process 0 moves files; every process then reopens the manager to forget the step.
    src = f"{self.directory}/{step}"
    dst = f"{self.quarantine}/{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0 and object_storage.is_remote(src):  # no rename: copy, delete
      fs, path = object_storage.open_url(src)
      if fs.exists(path):
        fs.copy(path, object_storage.open_url(dst)[1], recursive=True)
        fs.rm(path, recursive=True)
    elif jax.process_index() == 0 and os.path.exists(src):
      os.makedirs(self.quarantine, exist_ok=True)
      shutil.move(src, dst)
    self._manager.close()
    self._manager = self._open()
    return dst

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class SaveTimer:
  """`due()` once `seconds` (> 0) have passed since the last `reset()`: time-based checkpoints
  beside the step-based period. With several processes, process 0's clock decides for all (a
  broadcast each step), so every host saves the same step."""

  def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
    self.seconds, self._clock = float(seconds), clock
    self.reset()

  def reset(self) -> None:
    self._last = self._clock()

  def due(self) -> bool:
    if self.seconds <= 0:
      return False
    due = self._clock() - self._last >= self.seconds
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
    return due


def load_state_tree(directory: str, step: int | None = None) -> tuple[dict[str, Any], int]:
  """A saved train state as a plain tree of arrays (no template needed), for inference tools.

  Reads `step`, or the newest step that restores; a damaged step is skipped (and left in place:
  this is a reader). Returns (state tree with `params`, `model_state`, ..., step).

  Raises:
    CheckpointError: no checkpoint in `directory`, `step` not among them, or none restores.
  """
  directory = directory if object_storage.is_remote(directory) else os.path.abspath(directory)
  manager = ocp.CheckpointManager(directory) if saved_steps(directory) else None
  steps = sorted(manager.all_steps()) if manager else []
  if not steps:
    raise NoRunError(f"no checkpoint in {directory}; train first with "
                     "`python -m train --config ... --workdir` on this workdir")
  if step is not None and step not in steps:
    raise NoRunError(f"checkpoint step {step} is not in {directory}; it holds {steps}")
  failures = []
  for s in ([step] if step is not None else reversed(steps)):
    try:
      try:
        target = _on_one_device(f"{directory}/{s}/state")
      except Exception as e:  # its metadata unread: as saved (enough for one process's save)
        logging.warning("checkpoint step %d's metadata: %s: %s", s, type(e).__name__, e)
        target = None
      restored = manager.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
      manager.close()
      if failures:  # a reader that falls back to an older step says so
        logging.warning("read checkpoint step %d of %s; newer steps do not restore: %s", s,
                        directory, "; ".join(failures))
      return dict(restored["state"]), s
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      failures.append(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
  manager.close()
  raise CheckpointError(f"no checkpoint in {directory} could be restored:\n  " +
                        "\n  ".join(failures))


def _on_one_device(path: str) -> Any:
  """The saved state at `path` as a restore target on this process's first device: a step saved
  by a job of several processes or devices restores into one tool (orbax refuses a different
  topology without a target)."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that an item folder has no step metadata
  try:
    with ocp.StandardCheckpointer() as reader:
      tree = reader.metadata(path).item_metadata
  finally:
    logging.set_verbosity(verbosity)
  tree = getattr(tree, "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
      if getattr(m, "shape", None) is not None else m, tree)


def saved_steps(directory: str) -> list[int]:
  """The steps saved in `directory`, oldest first ([] when it does not exist): its folders named
  by an integer, the names orbax gives a step once its save is committed (a save in progress is
  `<step>.orbax-checkpoint-tmp-<n>`). A listing, not a `CheckpointManager`: every process of a
  job calls this, at moments that differ, and a manager's creation is a step all processes of a
  job must take together (a process ahead of the others had made the folder: the job hung).
  In object storage, the folders that hold orbax's `commit_success.txt`."""
  if object_storage.is_remote(directory):
    fs, path = object_storage.open_url(directory)
    if not fs.exists(path):
      return []
    return sorted(int(p.rstrip("/").rsplit("/", 1)[-1]) for p in fs.ls(path, detail=False)
                  if p.rstrip("/").rsplit("/", 1)[-1].isdigit() and fs.exists(f"{p}/{COMMITTED}"))
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


COMMITTED = "commit_success.txt"  # orbax's last file of a step written in place


def read_config(workdir: str) -> dict[str, Any]:
  """The resolved config a run wrote to `workdir/config.json`, as a dict.

  Raises:
    ConfigError: a URL for a workdir.
    NoRunError: the workdir holds no config.json (nothing was trained there).
    CheckpointError: a config.json that cannot be parsed, naming it.
  """
  files.check_directory(workdir, "--workdir")
  path = os.path.join(workdir, files.CONFIG)
  if not os.path.exists(path):
    raise NoRunError(f"--workdir={workdir} holds no config.json; train there first with "
                     "`python -m train --config ... --workdir`")
  return files.read_json(path)


def load_workdir(workdir: str, step: int | None = None) -> tuple[Any, dict[str, Any],
                                                                 dict[str, Any], int]:
  """(model, state tree with `params`, config dict, checkpoint step) of a trained workdir: the
  model rebuilt from its config, the newest restorable checkpoint (or `step`) as plain arrays.

  Raises:
    CheckpointError: no config.json, no checkpoint, or none that restores.
  """
  config = read_config(workdir)
  model = arch.build(config["model"])
  state, step = load_state_tree(files.checkpoints_dir(workdir), step)
  return model, state, config, step
