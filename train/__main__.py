"""`python -m train --config experiments/X.py[:arg] [--config.a.b=v ...] [--workdir DIR]`

Parses flags and calls `train.loop.train_and_evaluate`; nothing else lives here. The default
workdir is `runs/<experiment>[_<arg>]`. Expected failures (config, data, checkpoint, non-finite
loss) print one clear line and exit with status 1.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file, optionally with an argument: experiments/X.py:tiny.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<experiment>).")
flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", f"{name}_{arg}" if arg else name)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every file it writes at INFO; keep the console to our progress lines.
    logging.set_verbosity(logging.WARNING)
  from train import loop
  from train.checkpoint import CheckpointError
  from train.config import ConfigError
  from data import DataError

  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].serialize().split("=", 1)[1])
  try:
    loop.train_and_evaluate(_CONFIG.value, workdir)
  except (ConfigError, DataError, CheckpointError, loop.NonFiniteLossError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
