"""Signals from the first instant of a command, before the training loop's `train.preemption`
takes over: SIGTERM and SIGINT are recorded and honoured at the next phase boundary (building,
compiling, restoring: there is nothing to save yet, so the run stops with one line and exit
status 0, and the same command starts it again); SIGUSR1 dumps every thread's stack.

Standard library only, so that `python -m train` installs it before its heavy imports.
"""

from __future__ import annotations

import contextvars
import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """A signal arrived before there was a state to save: one line, exit status 0. `abandoned`:
  a compile is still running in a worker thread (`while_compiling`), so the process must end
  with `os._exit` after its line rather than through the interpreter's shutdown."""
  exit_status = 0
  abandoned = False


_state: dict[str, Any] = {"signal": None, "previous": {}, "stacks": ""}


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


def _handle(signum: int, frame: Any) -> None:
  del frame
  if _state["signal"] is not None:  # the second one: out now
    signal.signal(signum, _state["previous"].get(signum, signal.SIG_DFL))
    os.kill(os.getpid(), signum)
    return
  _state["signal"] = signum
  _say(f"received {signal.Signals(signum).name}: stopping at the next phase boundary (send it "
       "again to stop at once)")


def install_early() -> None:
  """Handles SIGTERM and SIGINT from now on (`check` stops at the next phase boundary;
  `train.preemption.Preemption` takes a recorded signal over and saves at the first step
  boundary), and SIGUSR1 (`dump_stacks`). A second signal acts as if no handler were installed.
  Main thread only."""
  if threading.current_thread() is not threading.main_thread():
    return
  for sig in SIGNALS:
    _state["previous"][sig] = signal.signal(sig, _handle)
  signal.signal(signal.SIGUSR1, dump_stacks)


# Tests only: STRATA_TEST_PAUSE_AT=PHASE makes the first `pause(PHASE)` (and `check(PHASE)`) say
# "paused before PHASE" and wait (up to 120 s) for a signal, so that a test can signal a run in a
# known phase.
PAUSE_AT = "STRATA_TEST_PAUSE_AT"


def pause(phase: str, received: Callable[[], bool] | None = None) -> None:
  """Tests only (`PAUSE_AT`): waits at the first `phase` until `received()` (default: a signal
  `install_early` recorded). Returns at once otherwise."""
  if os.environ.get(PAUSE_AT) != phase or phase in _state.setdefault("paused", set()):
    return
  _state["paused"].add(phase)
  _say(f"paused before {phase}")
  received = received or (lambda: _state["signal"] is not None)
  deadline = time.monotonic() + 120
  while not received() and time.monotonic() < deadline:
    time.sleep(0.05)


def check(phase: str) -> None:
  """Raises Stopped when a signal arrived before `phase` (`install_early`)."""
  pause(phase)
  if _state["signal"] is not None:
    raise _stopped(f"before {phase}")


def _stopped(when: str) -> Stopped:
  """The Stopped of the signal `install_early` recorded, `when` ("before compiling", ...)."""
  name = signal.Signals(_state["signal"]).name
  return Stopped(f"stopped by {name} {when}: nothing to save yet; the same command starts the "
                 "run again")


def while_compiling(fn: Callable[[], T], phase: str = "compiling") -> T:
  """`fn()` (an XLA compile, which releases the GIL but can take minutes) in a worker thread,
  while the main thread stays ready for signals: Python runs a handler only between bytecodes of
  the main thread, so a compile on it would hold a SIGTERM (and the second one that means "now")
  until it returned. A signal during `fn` raises Stopped at once; the compile is abandoned (its
  daemon thread ends with the process). The worker runs in a copy of the caller's context
  (`arch.common.compiling_for` is a context variable)."""
  if threading.current_thread() is not threading.main_thread():
    return fn()  # no handler here to wait for
  result: dict[str, Any] = {}

  def work() -> None:
    try:
      result["value"] = fn()
    except BaseException as e:  # noqa: BLE001 -- re-raised on the main thread
      result["error"] = e

  worker = threading.Thread(target=contextvars.copy_context().run, args=(work,),
                            name=f"strata {phase}", daemon=True)
  worker.start()
  while worker.is_alive():
    worker.join(0.05)
    if _state["signal"] is not None:
      stopped = _stopped(f"while {phase}")
      stopped.abandoned = True
      raise stopped
  if "error" in result:
    raise result["error"]
  return result["value"]


def take_early() -> int | None:
  """The signal `install_early` recorded (then forgotten), for `Preemption` to honour."""
  signum, _state["signal"] = _state["signal"], None
  return signum


def stacks_into(directory: str) -> None:
  """Where SIGUSR1's stack dumps are written from now on (the run's workdir)."""
  _state["stacks"] = directory


def dump_stacks(signum: int = signal.SIGUSR1, frame: Any = None) -> str | None:
  """Every thread's Python stack to stderr and, once `stacks_into` named a workdir, appended to
  `WORKDIR/stacks-<host>-<pid>.txt` (returned): `kill -USR1 PID` on a run that seems stuck.
  Python runs the handler between bytecodes of the main thread, so a compile on the main thread
  (an evaluation step's first) holds the dump until it returns; the train step's compile runs
  in a worker thread (`while_compiling`) and is shown mid-compile."""
  del signum, frame
  faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
  if not _state["stacks"]:
    return None
  path = os.path.join(_state["stacks"], f"stacks-{socket.gethostname()}-{os.getpid()}.txt")
  with open(path, "a") as f:
    f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    faulthandler.dump_traceback(file=f, all_threads=True)
  _say(f"SIGUSR1: every thread's stack written to {path}")
  return path
