"""The frame of every command-line tool (`python -m train`, `train.generate`, every `eval.*`,
`experiments.*` and `benchmarks.*`): one line, `error: ...`, for every bad input, and no
traceback.

    if __name__ == "__main__":
      cli.run(main)                # absl flags
    cli.ArgumentParser(...)        # argparse tools: the same line for a bad argument

Exit status (the contract; `train/errors.py`, docs/guide.md): 0 done, or stopped by a signal with
its checkpoint saved; 2 a bad command line or config (an unknown or malformed flag, a stray
argument, a field that names nothing or has a bad value, a workdir held by another run or
holding another config, a workdir that holds no run); 3 data that cannot be read; 4 a non-finite
loss; 5 a checkpoint or file that cannot be written or read (a full disk, a corrupt
checkpoint); 1 any other failure said in one line (a ValueError from a library given a bad
value, a missing optional package). Anything else is a bug and keeps its traceback.
`STRATA_TRACEBACK=1` re-raises every error with its traceback, for debugging.
"""

from __future__ import annotations

import argparse
import logging as std_logging
import os
import sys
from typing import Any, Callable, NoReturn

from absl import app, flags, logging

from train import signals
from train.errors import (
  EXIT_FAILED,
  EXIT_STORAGE,
  EXIT_USAGE,
  CheckpointError,
  CompilerError,
  FlagError,
  NonFiniteLossError,
)

# Errors that are a failure of the inputs, not of the code: said in one line. ValueError covers
# ConfigError and data.DataError (kept out of the imports: the PyTorch-only benchmark scripts use
# this module without loading the data stack).
RUN_ERRORS = (ValueError, CheckpointError, NonFiniteLossError, ImportError, OSError,
              CompilerError)


def fail(message: Any, status: int) -> NoReturn:
  """`error: <message>` on stderr as one line (a message of several lines, such as the failures
  of each checkpoint tried, joined with "; "), then exit with `status` (0: the message alone, a
  run stopped by a signal)."""
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  text = '; '.join(lines) or type(message).__name__
  print(f"error: {text}" if status else text, file=sys.stderr, flush=True)
  if getattr(message, "abandoned", False):
    # A compile still runs in its daemon thread (train.signals.while_compiling): the
    # interpreter's shutdown would end that thread inside XLA and abort the process (status
    # 134), so it ends here, its files flushed.
    sys.stdout.flush()
    os._exit(status)
  sys.exit(status)


def _debug() -> bool:
  return os.environ.get("STRATA_TRACEBACK", "") not in ("", "0")


def status_of(error: BaseException) -> int:
  """The exit status of an error (the module docstring's contract): its type's `exit_status`,
  2 for usage errors, 5 for a file that cannot be read or written, else 1."""
  if isinstance(error, (app.UsageError, flags.Error)):
    return EXIT_USAGE
  status = getattr(type(error), "exit_status", None)
  if status is not None:
    return int(status)
  return EXIT_STORAGE if isinstance(error, OSError) else EXIT_FAILED


def guarded(fn: Callable[[], Any]) -> Any:
  """Runs `fn()`, turning usage errors and `RUN_ERRORS` into one `error: ...` line and the exit
  status of `status_of`."""
  try:
    return fn()
  except (app.UsageError, FlagError, flags.Error, signals.Stopped, *RUN_ERRORS) as e:
    if _debug():
      raise
    fail(e, status_of(e))


def _quiet_orbax(record: std_logging.LogRecord) -> bool:
  """Drops orbax's logged tracebacks and errors (a failed background save logs hundreds of lines,
  a damaged checkpoint's recovery "Event loop is closed" ones): the loop turns each failure into
  one line of its own. `STRATA_TRACEBACK=1` keeps them."""
  from_orbax = f"{os.sep}orbax{os.sep}" in (record.pathname or "")
  return not (from_orbax and (record.exc_info or record.levelno >= std_logging.ERROR))


def start(argv: list[str], positional: bool = False) -> None:
  """The common start of a tool's main: rejects stray positional arguments (unless the tool
  takes them) and, unless --verbosity was given, keeps absl INFO lines off the console (orbax
  logs every file it reads and writes at INFO)."""
  if not positional and len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag (see "
                         "--helpshort)")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if not _debug():  # on the handlers: a logger's own filter misses its children's records
    for handler in std_logging.getLogger().handlers:
      handler.addFilter(_quiet_orbax)


def run(main: Callable[[list[str]], Any], positional: bool = False,
        argv: list[str] | None = None) -> None:
  """`absl.app.run(main)` with the frame above: flag errors (exit 2), stray arguments (exit 2
  unless `positional`), errors of the run (exit 1), each one line."""

  def parse(args: list[str]) -> list[str]:
    return guarded(lambda: flags.FLAGS(args))  # a flags.Error is a usage error: status 2

  def framed(args: list[str]) -> None:
    def body():
      start(args, positional)
      main(args)
    guarded(body)

  app.run(framed, argv=argv, flags_parser=parse)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with the frame's error line: `error: ...` and exit status 2, without the usage
  block (`--help` still prints it)."""

  def error(self, message: str) -> NoReturn:
    fail(message, 2)


def config_overrides(argv: list[str], prefix: str = "--config.") -> tuple[list[str], dict[str, str]]:
  """Splits `--config.SECTION.FIELD=VALUE` items off `argv`: (the other arguments, {"SECTION.FIELD":
  "VALUE"}). `--config.FIELD VALUE` (without `=`) is a usage error, to keep one spelling."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith(prefix):
      key, sep, value = arg[len(prefix):].partition("=")
      if not sep:
        fail(f"{arg}: expected {prefix}FIELD=VALUE, e.g. {prefix}optim.learning_rate=0.01", 2)
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides
