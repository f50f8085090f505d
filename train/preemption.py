"""Stopping a run cleanly when the machine is taken away: SIGTERM (the notice TPU VMs, GKE and
SLURM send before they kill a job) or SIGINT (Ctrl-C) asks the loop to save a checkpoint at the
next step boundary and exit 0; the same command then resumes exactly.

One process: a Python handler records the first signal; `reached(step)` is true at every step
boundary after it, and `requested()` lets evaluation stop early (a notice that lands during a
long evaluation is not held until the evaluation ends). A second signal acts as if no handler
were installed (SIGINT raises KeyboardInterrupt, SIGTERM terminates), for a user who wants out
now.

Several processes: every host must save the same step. JAX's preemption sync manager (started by
`jax.distributed.initialize`) receives SIGTERM and `multihost_utils.reached_preemption_sync_point
(step)` turns true on every process at the same step; SIGINT is forwarded to it as SIGTERM. An
evaluation in progress runs to its end there (stopping it would need the processes to agree
mid-evaluation).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils

from train import progress, signals

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """A context manager that turns SIGTERM/SIGINT into a stop at the next step boundary."""

  def __init__(self):
    self.signal: int | None = None
    self._previous: dict[int, Any] = {}
    self._multi = jax.process_count() > 1

  def __enter__(self) -> "Preemption":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be installed from the main thread
    # With several processes SIGTERM belongs to JAX's preemption notifier.
    for sig in (signal.SIGINT,) if self._multi else SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    early = signals.take_early()  # a signal while the run was being built, restored
    if early is not None:
      self._handle(early, None)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self.signal is not None:  # the second signal: no more waiting
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      os.kill(os.getpid(), signum)
      return
    self.signal = signum
    if self._multi:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier, which tells the other hosts
    progress.console(f"received {signal.Signals(signum).name}: saving a checkpoint at the next "
                     "step boundary, then stopping (send it again to stop at once)")

  def requested(self) -> bool:
    """True once this process got a signal (evaluation checks it between batches)."""
    return self.signal is not None and not self._multi

  def reached(self, step: int) -> bool:
    """True at the step boundary where every process stops (call at every step, in order)."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.signal is not None

  @property
  def name(self) -> str:
    return signal.Signals(self.signal).name if self.signal is not None else "SIGTERM"

