"""One writer per workdir: an advisory lock on `WORKDIR/.lock`, held while a run (or a tool
writing into the workdir) writes there.

    with workdir_lock.hold(workdir):      # refused with one line when another process holds it
      ...write records, checkpoints...

The lock is a POSIX record lock (`fcntl.lockf`): the kernel releases it when its process dies, so
a SIGKILLed run never leaves a stale lock and the next run takes it at once; forked children (the
input pipeline's workers) do not inherit it, so a worker orphaned by a killed trainer does not
keep it. The file holds who took it (process id, host, command, time), which a refused writer
names. A lock is per run, not per process: in a multi-process job only process 0 takes it (the
other processes write nothing of their own to the workdir, or write beside process 0 by design).

POSIX locks belong to a process: a second `hold` of the same workdir in the holding process is
re-entrant (counted), never a second open of the file, since closing any descriptor of a locked
file drops the process's lock. On a file system without working fcntl locks (some FUSE mounts,
NFS without lockd) `hold` says so in one line and continues without the one-writer check.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from typing import Any, Callable, Iterator, Sequence

from train import progress
from train.errors import ConfigError

LOCK = ".lock"


class WorkdirBusy(ConfigError):
  """Another process is writing to the workdir (a usage error: exit status 2)."""


_held: dict[str, list[int]] = {}  # realpath -> [file descriptor, holds]


def holder(workdir: str) -> dict:
  """What the lock file says of its holder ({} when unreadable). Read by another process only."""
  try:
    with open(os.path.join(workdir, LOCK)) as f:
      return json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return {}


def _describe(info: dict) -> str:
  if not info:
    return "another process"
  since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("time", 0)))
  return (f"process {info.get('pid')} on {info.get('host')} (since {since}: "
          f"{info.get('command', '?')})")


def acquire(workdir: str, what: str = "--workdir",
            hint: str = "wait for it to end, stop it, or use another workdir") -> None:
  """Takes the lock of `workdir` (created if missing) or raises WorkdirBusy naming the holder
  and `hint`. Re-entrant within one process; `release` once per `acquire`."""
  os.makedirs(workdir, exist_ok=True)
  key = os.path.realpath(workdir)
  if key in _held:
    _held[key][1] += 1
    return
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EACCES, errno.EAGAIN):
      raise WorkdirBusy(f"{what}={workdir} is being written by {_describe(holder(workdir))}; "
                        f"{hint}") from None
    progress.console(f"warning: {what}={workdir}: this file system does not support fcntl "
                     f"locks ({os.strerror(e.errno or 0)}); nothing stops a second run from "
                     "writing to the same workdir")
    _held[key] = [-1, 1]
    return
  info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
          "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:300]}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
  _held[key] = [fd, 1]


def release(workdir: str, remove: bool = False) -> None:
  """Gives the lock back (at the last release of a re-entrant hold). With `remove`, a workdir
  that holds nothing but the lock file (made by `acquire` for a run that failed before writing
  anything) is removed, while still held."""
  key = os.path.realpath(workdir)
  entry = _held.get(key)
  if entry is None:
    return
  entry[1] -= 1
  if entry[1] > 0:
    return
  del _held[key]
  if remove and os.path.isdir(workdir) and os.listdir(workdir) == [LOCK]:
    os.unlink(os.path.join(workdir, LOCK))
    os.rmdir(workdir)
  if entry[0] >= 0:
    os.close(entry[0])  # closing the descriptor releases the lock; the file stays


@contextlib.contextmanager
def hold(workdir: str, what: str = "--workdir", enabled: bool = True, remove: bool = False,
         hint: str = "wait for it to end, stop it, or use another workdir") -> Iterator[None]:
  """`acquire` ... `release` around a block (nothing when not `enabled`: processes other than
  process 0); `remove` and `hint` as there."""
  if not enabled:
    yield
    return
  acquire(workdir, what, hint)
  try:
    yield
  finally:
    release(workdir, remove)


@contextlib.contextmanager
def hold_for_job(workdir: str, enabled: bool = True, remove: bool = False) -> Iterator[None]:
  """`hold` for a run of one or more `jax.distributed` processes: process 0 takes the lock for
  the job and tells the others whether it could (one small collective, which every process
  reaches whatever the outcome), so that every process of a refused job ends with the line
  process 0 gives, before anything is compiled or written. Without it the job's other processes
  would go on into the workdir another job is writing. Nothing when not `enabled` (a dry run)."""
  if not enabled:
    yield
    return
  import jax  # here: the module stays importable without jax

  if jax.process_count() == 1:
    with hold(workdir, remove=remove):
      yield
    return
  import numpy as np
  from jax.experimental import multihost_utils

  failed: Exception | None = None
  if jax.process_index() == 0:
    try:
      acquire(workdir)
    except Exception as e:  # noqa: BLE001 -- told to the other processes, then re-raised
      failed = e
  outcome = int(multihost_utils.broadcast_one_to_all(
      np.int32(0 if failed is None else 1 + isinstance(failed, WorkdirBusy))))
  if failed is not None:
    raise failed
  if outcome == 2:
    raise WorkdirBusy(f"--workdir={workdir} is being written by {_describe(holder(workdir))}; "
                      "process 0 of this job was refused it: wait for it to end, stop it, or "
                      "use another workdir")
  if outcome == 1:
    raise ConfigError(f"--workdir={workdir}: process 0 of this job could not take it (its own "
                      "line says why)")
  try:
    yield
  finally:
    if jax.process_index() == 0:
      release(workdir, remove)


def inside(path: str, workdir: str) -> bool:
  """Whether `path` is `workdir` or lies under it."""
  path, workdir = os.path.realpath(path), os.path.realpath(workdir)
  return path == workdir or path.startswith(workdir + os.sep)


@contextlib.contextmanager
def writing_into(workdirs: str | Sequence[str], out: str) -> Iterator[None]:
  """Holds the lock of the workdir (of `workdirs`) that `out` lies in while a tool writes there
  (a report beside a run's records); nothing when `out` is elsewhere."""
  workdir = next((w for w in ([workdirs] if isinstance(workdirs, str) else workdirs)
                  if inside(out, w)), None)
  with hold(workdir, enabled=workdir is not None,
            hint="wait for it to end, or write elsewhere with --out"):
    yield


def writes_into_workdir(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorates a tool's `fn(workdir, ..., out=None, ...)`: `out` defaults to WORKDIR/`default`,
  and, when it lies in the workdir, the workdir's lock is held while `fn` runs (taken first, so
  a tool pointed at a run in progress is refused before it computes anything)."""

  def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      workdir = bound.arguments["workdir"]
      bound.arguments["out"] = bound.arguments.get("out") or os.path.join(workdir, default)
      with writing_into(workdir, bound.arguments["out"]):
        return fn(*bound.args, **bound.kwargs)

    return inner

  return wrap
