"""What a bad value is, and how it is said: the error types that the config, the paradigms, the
checkpoints and the loop raise, and the small value checks they share. Imports nothing of the
project, so every module can import it without a circle.

Every message names the field, the value it has and what was expected, in one line:
`optim.name='adm'; expected one of ['sgd', 'momentum', 'nesterov', 'adam', 'adamw']`.
"""

from __future__ import annotations

from typing import Any, Iterable

# The exit-code contract of every command (`train.cli`; the table is in docs/guide.md): each
# error type carries its status, so the command-line frame needs no list of them.
EXIT_FAILED = 1     # any other failure said in one line (a library's ValueError, a missing package)
EXIT_USAGE = 2      # a bad command line or config: fix the command, do not retry it
EXIT_DATA = 3       # data that cannot be read (data.sources.DataError)
EXIT_DIVERGED = 4   # a non-finite loss
EXIT_STORAGE = 5    # a checkpoint or record that cannot be written or read (full disk, corrupt)


class ConfigError(ValueError):
  """A config field with a value that cannot run."""
  exit_status = EXIT_USAGE


class FlagError(ConfigError):
  """A command-line item (`--config.X=V`, `--set X=V`) that names no field, or whose value has
  the wrong type or range: a usage error (exit status 2 in `train.cli`)."""


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be written or restored."""
  exit_status = EXIT_STORAGE


class CompilerError(RuntimeError):
  """The compiler itself failed (libtpu crashed compiling for a TPU slice): not the run's
  fault, said in one line."""
  exit_status = EXIT_FAILED


class NoRunError(CheckpointError):
  """A workdir named as a trained run that holds none (a usage error: the path is wrong)."""
  exit_status = EXIT_USAGE


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""
  exit_status = EXIT_DIVERGED


def check_choice(value: Any, options: Iterable[Any], field: str) -> None:
  """Raises ConfigError unless `value` is one of `options`."""
  options = list(options)
  if value not in options:
    raise ConfigError(f"{field}={value!r}; expected one of {options}")


def check_positive(value: float, field: str, allow_zero: bool = False) -> None:
  """Raises ConfigError unless `value` > 0 (>= 0 with `allow_zero`)."""
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{field}={value!r}; expected a {'non-negative' if allow_zero else 'positive'}"
                      " number")


def check_fraction(value: float, field: str) -> None:
  """Raises ConfigError unless 0 <= `value` < 1 (a probability, a decay, a smoothing)."""
  if not 0.0 <= value < 1.0:
    raise ConfigError(f"{field}={value}; expected a value in [0, 1)")
