"""What a workdir already holds when a run starts in it, so that nothing written there is lost.

`check(workdir, total_steps, restart)` runs before anything is compiled or written:

- a workdir with checkpoints resumes from the newest that restores (records after its step are
  dropped and recomputed: the records up to it are a prefix of the records after);
- a finished run (summary.json, a checkpoint at its last step) is not run again: `check` returns
  its summary, and the loop says so (raise `train.steps` to train on);
- records with nothing to continue them from (checkpoints/ missing, or every step of it damaged
  and moved to checkpoints_corrupt/), or checkpoints whose metrics.jsonl is gone, are refused
  with one line: starting over would overwrite them, or leave steps unrecorded. `--restart`
  moves everything the workdir holds into WORKDIR/restarted-<time>/ and starts from step 0.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from train import checkpoint, files, metric_writer, progress
from train.errors import ConfigError

RESTARTED = "restarted-"  # prefix of the folders that --restart moves old records into
KEEP = (".lock",)         # what --restart leaves in place


def move_aside(workdir: str) -> str:
  """Moves everything in `workdir` (but the lock and earlier restarted-* folders) into
  WORKDIR/restarted-<time>/; returns that folder."""
  dest = os.path.join(workdir, RESTARTED + time.strftime("%Y%m%d-%H%M%S"))
  while os.path.exists(dest):
    dest += "+"
  os.makedirs(dest)
  for name in sorted(os.listdir(workdir)):
    if name in KEEP or name.startswith(RESTARTED):
      continue
    shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
  return dest


def check(workdir: str, total_steps: int, restart: bool = False,
          move: bool = True) -> dict[str, Any] | None:
  """The finished run's summary when `workdir` holds one at `total_steps` (nothing to do), else
  None once it is safe to start or resume there (after moving old records aside, with
  `restart`; only where `move`: process 0 of a multi-process job).

  Raises:
    ConfigError: records that a start would overwrite or leave with a gap, naming the choices.
  """
  if not os.path.isdir(workdir):
    return None
  if restart:
    if move and any(n not in KEEP and not n.startswith(RESTARTED) for n in os.listdir(workdir)):
      progress.console(f"--restart: moved the earlier records of {workdir} to "
                       f"{move_aside(workdir)}")
    return None
  saved = checkpoint.saved_steps(files.checkpoints_dir(workdir))
  last = metric_writer.last_step(workdir)
  summary_path = os.path.join(workdir, files.SUMMARY)
  choices = (f"pass --restart to move them into {workdir}/{RESTARTED}<time>/ and start again, "
             "or use another --workdir")
  if not saved and (last is not None or os.path.exists(summary_path)):
    held = f"metrics.jsonl up to step {last}" if last is not None else "summary.json"
    why = ("checkpoints/ is missing" if not os.path.isdir(os.path.join(workdir, files.CHECKPOINTS))
           else "checkpoints/ holds no step")
    corrupt = os.path.join(workdir, files.CHECKPOINTS + "_corrupt")
    if os.path.isdir(corrupt):
      why += f" (its damaged steps were moved to {corrupt})"
    raise ConfigError(f"--workdir={workdir} holds the records of an earlier start ({held}) but "
                      f"no checkpoint to continue them from: {why}; starting over would "
                      f"overwrite them: {choices}")
  if saved and saved[-1] > 0 and last is None:
    raise ConfigError(f"--workdir={workdir} has checkpoints up to step {saved[-1]} but "
                      f"metrics.jsonl holds no records (deleted?); resuming would leave steps "
                      f"1-{saved[-1]} unrecorded: put the file back, or {choices}")
  if saved and saved[-1] >= total_steps and os.path.exists(summary_path):
    return files.read_json(summary_path)
  return None
