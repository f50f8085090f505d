"""One writer for a workdir in object storage: a lock object created only if absent and renewed
only if unchanged.

Object storage has no fcntl lock; what it has is the generation precondition (GCS
`ifGenerationMatch`, S3 `If-Match`/`If-None-Match`): a write that names the generation it
expects fails when another writer got there first. TensorStore's key-value stores carry it the
same way on every backend (`KvStore.write(..., if_equal=generation)`: the `gcs` driver sends
`ifGenerationMatch`, `s3` its conditional headers, `file` takes a lock file), so the lock is
written through them:

- **take**: created with the generation of "absent" (GCS `ifGenerationMatch=0`); or, when the
  holder's heartbeat is older than `EXPIRY_SECS` (or the holder was a process of this host that is
  gone), overwritten under the generation that was read. Of two runs that start together, one
  write succeeds and the other is refused in one line.
- **renew** (the heartbeat, at each upload): written under this run's last generation; a run
  whose lock another took over after it had expired learns so at once (`LockLost`).
- **release**: deleted under this run's generation, so a taken-over lock is left to its new
  holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import uuid
from typing import Iterator

from train.errors import ConfigError

EXPIRY_SECS = 120.0
KEY = ".lock.json"
# A lock operation fails in seconds rather than after TensorStore's default retries (minutes).
_CONTEXT = {"gcs_request_retries": {"max_retries": 3, "initial_delay": "0.2s",
                                    "max_delay": "1s"}}


# TensorStore's C++ log lines (absl, never initialised from Python, so INFO goes to stderr):
# "I1204 11:00:42.095163   30477 google_auth_provider.cc:188] ..."
_ABSL_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\] ")


@contextlib.contextmanager
def _without_native_log() -> Iterator[None]:
  """Drops TensorStore's native log lines (its credential lookup at the first request names the
  credentials it uses, or the places it found none, on stderr) and passes every other line
  written to stderr meanwhile through: an error stays the one line the run prints."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().splitlines(keepends=True)
              if not _ABSL_LINE.match(line)]
      if kept:
        os.write(2, b"".join(kept))


class LockHeld(ConfigError):
  """Another run holds the lock (its heartbeat is younger than `EXPIRY_SECS`)."""


class LockLost(Exception):
  """Another run took the lock over (this run's heartbeat had stopped for `EXPIRY_SECS`)."""


def _dead(held: dict) -> bool:
  """Whether the lock's owner was a process of this host that is gone (a killed run's lock is
  taken over at once there, as a local fcntl lock is released with its process)."""
  host, _, rest = str(held.get("owner", "")).partition(":")
  pid = rest.partition(":")[0]
  if host != socket.gethostname() or not pid.isdigit():
    return False
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # alive, another user's
    return False
  return False


class ObjectLock:
  """The lock object `KEY` under the workdir at `url` (`gs://...`, `s3://...`, `file://...`)."""

  def __init__(self, url: str):
    import tensorstore as ts

    self.url = url.rstrip("/")
    self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
      self._kv = ts.KvStore.open(self.url + "/", context=ts.Context(_CONTEXT)).result()
    except ValueError as e:
      raise ConfigError(f"--workdir={url!r}: its lock object needs a TensorStore key-value store "
                        f"for this scheme (gs://, s3://, file://): {e}") from None
    self._generation: bytes | None = None

  def _read(self) -> tuple[dict | None, bytes]:
    found = self._kv.read(KEY).result()
    held = json.loads(found.value) if found.state == "value" else None
    return held, found.stamp.generation

  def _write(self, expected: bytes) -> bool:
    body = json.dumps({"owner": self.owner, "heartbeat": time.time()}).encode()
    written = self._kv.write(KEY, body, if_equal=expected).result().generation
    if written:
      self._generation = written
    return bool(written)  # an unmet precondition comes back as an empty generation

  def _refusal(self, held: dict | None) -> LockHeld:
    held = held or {}
    age = time.time() - float(held.get("heartbeat", 0))
    return LockHeld(
        f"--workdir={self.url} is held by another run ({held.get('owner')}, heartbeat {age:.0f} s "
        f"ago); one run writes a workdir at a time: wait for it; it is taken over after "
        f"{EXPIRY_SECS:.0f} s without a heartbeat ({max(EXPIRY_SECS - age, 0):.0f} s from now)")

  def held(self) -> dict | None:
    """The lock's content ({owner, heartbeat}), or None: a read that takes nothing (the first
    request of a process also looks up its credentials, quietly)."""
    with _without_native_log():
      return self._read()[0]

  def acquire(self) -> None:
    """Takes the lock, or raises LockHeld (a ConfigError) naming the run that holds it."""
    with _without_native_log():  # the first request
      held, generation = self._read()
    if held is not None and held.get("owner") != self.owner:
      age = time.time() - float(held.get("heartbeat", 0))
      if age < EXPIRY_SECS and not _dead(held):
        raise self._refusal(held)
    if not self._write(generation):  # another run wrote it between the read and the write
      raise self._refusal(self._read()[0])

  def renew(self) -> None:
    """The heartbeat. Raises LockLost when another run has taken the lock over."""
    if not self._generation:  # never taken, or released: an empty generation writes blindly
      raise LockLost(f"this run does not hold the lock of {self.url}")
    if self._write(self._generation):
      return
    held, generation = self._read()
    # this run's own last write may have landed with its answer lost (a dropped connection):
    # the lock is still its own, under a generation it did not learn
    if held is not None and held.get("owner") == self.owner and self._write(generation):
      return
    held = held or {}
    raise LockLost(f"another run ({held.get('owner')}) took over the lock of {self.url} after "
                   f"this run's heartbeat stopped for {EXPIRY_SECS:.0f} s")

  def release(self) -> None:
    """Deletes the lock if this run still holds it."""
    if self._generation:
      self._kv.write(KEY, None, if_equal=self._generation).result()
      self._generation = None
