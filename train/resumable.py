"""Which config changes a workdir's run accepts when it resumes: the fields that may differ
between the run that wrote a workdir and the one that continues it, and the comparison of a
saved config (WORKDIR/config.json) with a new one."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections as mlc

from train import config as config_lib
from train import files

# Fields that may differ between the run that wrote a workdir and a run that resumes it:
# extending a run or changing how often it reports does not change its numbers so far, and the
# mesh is only the layout: the checkpoint is restored into the new mesh's shardings (a run saved
# on 8 devices with fsdp=8 resumes on 1, or on 4 with fsdp=4), equal to float rounding.
RESUMABLE_CHANGES = ("train.steps", "train.epochs", "train.log_every", "train.eval_every",
                     "train.checkpoint_every", "train.keep_checkpoints", "data.prefetch",
                     "train.checkpoint_every_secs", "train.keep_every", "train.profile_steps",
                     "train.memory_limit_gb", "train.first_step_timeout_secs",
                     "data.device_prefetch", "data.eval_workers", "mesh.data", "mesh.fsdp",
                     "mesh.tensor", "train.xla_cpu_ynnpack")
# ... and every field under these: what is evaluated, the evaluation tools' settings and where
# the records go are not training settings (an evaluation added, removed or changed leaves the
# training's numbers as they were).
RESUMABLE_SECTIONS = ("evals.", "report.", "generative.reference", "sharding.", "logging.")


def config_changes(workdir: str, config: mlc.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """{field: (value in WORKDIR/config.json, value in `config`)} for every field that differs,
  sorted by field; {} when they agree or the workdir holds no config.json. A field the saved
  config lacks (added to the codebase after the run started) that still has its default is no
  change."""
  path = os.path.join(workdir, files.CONFIG)
  if not os.path.exists(path):
    return {}
  return changes_from(files.read_json(path), config)


def changes_from(saved: dict[str, Any], config: mlc.ConfigDict) -> dict[str, tuple[Any, Any]]:
  """`config_changes` against a saved config's dict (a run's config.json, a search study's
  experiment)."""
  old = files.flatten(saved)
  new = files.flatten(json.loads(config.to_json_best_effort()))
  defaults = files.flatten(json.loads(config_lib.base(config.paradigm).to_json_best_effort()))
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k) and not (k not in old and k in defaults and
                                               new.get(k) == defaults[k])}


def check(workdir: str, config: mlc.ConfigDict) -> None:
  """Raises ConfigError (one line, the first eight differences) when `workdir` holds a run whose
  config differs from `config` in a field that is not a resumable change."""
  changes = config_changes(workdir, config)
  changed = [k for k in changes
             if k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_SECTIONS)]
  if changed:
    details = ", ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in changed[:8])
    raise config_lib.ConfigError(
        f"workdir {workdir} holds a run with a different config ({details}); use a new "
        "--workdir, or the same config to resume")
