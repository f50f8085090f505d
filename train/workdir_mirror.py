"""The local copy of a workdir in object storage and how it goes up and down (the mechanics under
train/remote_workdir.py, which says what holds).

- A step of a `checkpoints/` folder (a run's own, or each run's of a sweep) goes up once orbax has
  committed it locally, its files first, orbax's `commit_success.txt` next and the marker
  `.uploaded` last; a download takes a step that has either (a step orbax wrote in the bucket
  itself, for a multi-process job, has only the commit file).
- Each upload lists the committed steps first, then sends every other file whole, then those
  steps; steps gone locally (`train.keep_checkpoints`, quarantine) are deleted remotely, markers
  first.
- A download keeps a local copy that is as new as the bucket in every `checkpoints/` folder, and
  moves one that is behind aside.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from data import object_storage
from train import checkpoint, object_lock, progress
from train.errors import CheckpointError, ConfigError

MARKER = ".uploaded"
LOCK = object_lock.KEY
CHECKPOINTS = "checkpoints"
LOCAL_ONLY = (".lock",)  # the fcntl locks of the local copy and of its runs (a sweep)


def _in_checkpoints(rel: str) -> bool:
  """Whether the relative path `rel` lies in a `checkpoints/` folder of the tree."""
  return CHECKPOINTS in rel.split("/")[:-1]


def _step_folder(rel: str) -> str | None:
  """The step folder (`.../checkpoints/<step>`) the relative path `rel` lies in, if any: a run's
  own at the top, or a sweep's runs' one level down."""
  parts = rel.split("/")
  for i, part in enumerate(parts[:-2]):
    if part == CHECKPOINTS:
      return "/".join(parts[:i + 2]) if parts[i + 1].isdigit() else None
  return None


def _newest(steps: "set[str] | list[str]") -> dict[str, int]:
  """{checkpoints folder: its newest step} of step folders `.../checkpoints/<step>`."""
  newest: dict[str, int] = {}
  for step in steps:
    folder, _, number = step.rpartition("/")
    newest[folder] = max(newest.get(folder, -1), int(number))
  return newest


def sync_secs() -> float:
  return float(os.environ.get("STRATA_SYNC_SECS", "10"))


class Mirror:
  """The workdir at `url` and its local copy `local` (train/remote_workdir.py's `cache_for`)."""

  def __init__(self, url: str, local: str, checkpoints: bool = True):
    """`checkpoints=False`: the `checkpoints/` folders are left to orbax, which writes them in
    the bucket itself (a multi-process job); the mirror carries the other files."""
    self.url = url.rstrip("/")
    self.local = local
    try:
      self.fs, self.root = object_storage.open_url(self.url)
    except ValueError as e:
      raise ConfigError(f"--workdir={url!r}: {e}") from None
    self.lock = object_lock.ObjectLock(self.url)
    self._sent: dict[str, tuple[int, int]] = {}   # relative path -> (size, mtime_ns) uploaded
    self._steps: set[str] = set()                  # checkpoint steps uploaded whole
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.error: Exception | None = None
    self.checkpoints = checkpoints
    self._pushing = threading.Lock()  # the thread's uploads and those before a save

  def _remote(self, rel: str) -> str:
    return f"{self.root}/{rel}"

  def _listing(self) -> dict[str, int]:
    """{relative path: size} of every object under the workdir's URL."""
    if not self.fs.exists(self.root):
      return {}
    found = self.fs.find(self.root, detail=True)
    return {path[len(self.root) + 1:]: int(info.get("size") or 0)
            for path, info in found.items() if info.get("type") != "directory"}

  def release(self) -> None:
    with contextlib.suppress(Exception):
      self.lock.release()

  def pull(self) -> None:
    """Downloads the workdir into the local copy: every record, and the checkpoint steps that
    were uploaded whole. A local copy whose newest committed step is the bucket's or newer, in
    every `checkpoints/` folder (this machine's run, stopped before its last upload), is kept as
    it is, and uploaded next; one behind the bucket is moved aside (`<copy>.stale-<time>`) and
    downloaded afresh: another machine has gone on from the bucket."""
    listing = self._listing()
    # uploaded whole by a mirror (its marker), or written in place by orbax (its commit file,
    # which a mirror sends last but for the marker)
    whole = {_step_folder(rel) for rel in listing
             if _step_folder(rel) and rel.rsplit("/", 1)[0] == _step_folder(rel)
             and rel.endswith(("/" + MARKER, "/" + checkpoint.COMMITTED))}
    if not self.checkpoints:
      whole = set()
    if os.path.isdir(self.local) and os.listdir(self.local):
      newest = _newest(self._local_steps())
      if self.checkpoints and all(newest.get(folder, -1) >= step
                                  for folder, step in _newest(whole).items()):
        self._steps = set(whole)  # the same run's: the newer local steps go up at the next push
        return
      stale = f"{self.local}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
      os.replace(self.local, stale)
      progress.console(f"{self.url}: the local copy {self.local} was behind the bucket; moved to "
                       f"{stale}")
    os.makedirs(self.local, exist_ok=True)
    for rel, size in sorted(listing.items()):
      parts = rel.split("/")
      if rel == LOCK or rel.endswith("/" + MARKER):
        continue
      step = _step_folder(rel)
      if (step or _in_checkpoints(rel)) and step not in whole:
        continue  # a step whose upload did not finish, or orbax's work in progress
      target = os.path.join(self.local, *parts)
      if not (os.path.exists(target) and os.path.getsize(target) == size):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self.fs.get_file(self._remote(rel), target + ".part")
        os.replace(target + ".part", target)
      stat = os.stat(target)
      self._sent[rel] = (stat.st_size, stat.st_mtime_ns)
    self._steps = set(whole)

  def _local_steps(self) -> list[str]:
    """The committed steps of every `checkpoints/` folder of the local copy, as relative paths
    (`checkpoints/400`, `lr_0.1/checkpoints/400` in a sweep); none when orbax writes them in the
    bucket."""
    steps: list[str] = []
    if not self.checkpoints:
      return steps
    for folder, dirs, _ in os.walk(self.local):
      if os.path.basename(folder) == CHECKPOINTS:
        rel = os.path.relpath(folder, self.local).replace(os.sep, "/")
        steps += [f"{rel}/{step}" for step in checkpoint.saved_steps(folder)]
        dirs[:] = []
    return steps

  def push(self) -> None:
    """Renews the lock's heartbeat, then uploads what changed: the committed steps listed first,
    the other files, then those steps; deletes the steps that are gone locally.

    Raises:
      object_lock.LockLost: another run took the workdir over; nothing was uploaded.
    """
    with self._pushing:
      self._push()

  def _push(self) -> None:
    self.lock.renew()
    steps = self._local_steps()
    for folder, dirs, names in os.walk(self.local):
      if os.path.basename(folder) == CHECKPOINTS:
        dirs[:] = []
        continue
      rel_folder = os.path.relpath(folder, self.local)
      for name in names:
        rel = os.path.normpath(os.path.join(rel_folder, name)).replace(os.sep, "/")
        if name in LOCAL_ONLY or name.endswith((".part", ".tmp")):
          continue
        self.send(rel)
    for step in steps:
      if step in self._steps:
        continue
      base = os.path.join(self.local, *step.split("/"))
      rels = [os.path.relpath(os.path.join(folder, name), self.local).replace(os.sep, "/")
              for folder, _, names in os.walk(base) for name in names]
      for rel in sorted(rels, key=lambda r: r.endswith("/" + checkpoint.COMMITTED)):
        self.send(rel)  # orbax's commit file last: a reader may take it for the marker
      if not os.path.isdir(base):  # deleted while it was sent (keep_checkpoints): no marker
        continue
      self.fs.pipe_file(self._remote(f"{step}/{MARKER}"), b"")
      self._steps.add(step)
    for step in sorted(self._steps - set(steps)):
      for marker in (MARKER, checkpoint.COMMITTED):  # first: no reader takes it for whole
        with contextlib.suppress(FileNotFoundError):
          self.fs.rm_file(self._remote(f"{step}/{marker}"))
      with contextlib.suppress(FileNotFoundError):
        self.fs.rm(self._remote(step), recursive=True)
      self._steps.discard(step)
      self._sent = {k: v for k, v in self._sent.items() if not k.startswith(f"{step}/")}

  def send(self, rel: str) -> None:
    """Uploads the local copy's file `rel` whole, unless it is unchanged since its last upload."""
    path = os.path.join(self.local, *rel.split("/"))
    try:
      stat = os.stat(path)
    except FileNotFoundError:  # removed while listed (a rewritten record)
      return
    if self._sent.get(rel) == (stat.st_size, stat.st_mtime_ns):
      return
    try:
      self.fs.put_file(path, self._remote(rel))  # streamed: a checkpoint's files can be large
    except FileNotFoundError:  # removed since (a rewritten record): its successor goes next
      return
    self._sent[rel] = (stat.st_size, stat.st_mtime_ns)

  def start(self) -> None:
    """Uploads every `STRATA_SYNC_SECS` on a thread until `stop`."""
    def loop() -> None:
      while not self._stop.wait(sync_secs()):
        try:
          self.push()
          self.error = None
        except object_lock.LockLost as e:  # uploads stop: the bucket is another run's now
          progress.console(f"{e}; nothing more is uploaded (the local copy {self.local} keeps "
                           "this run's records)")
          self.error = e
          return
        except Exception as e:  # the network: said once, tried again at the next upload
          if self.error is None:
            progress.console(f"uploading to {self.url} failed ({type(e).__name__}: "
                             f"{str(e)[:160]}); trying again every {sync_secs():.0f} s")
          self.error = e
    self._thread = threading.Thread(target=loop, name="workdir-upload", daemon=True)
    self._thread.start()

  def stop(self) -> None:
    """Stops the thread, uploads once more and releases the lock.

    Raises:
      CheckpointError: the last upload failed, naming the local copy that holds everything.
    """
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      if isinstance(self.error, object_lock.LockLost):
        raise self.error
      self.push()
    except object_lock.LockLost as e:
      raise CheckpointError(f"{e}: this run's last records and checkpoints were not uploaded; "
                            f"they are in {self.local}") from None
    except Exception as e:
      raise CheckpointError(f"uploading {self.local} to {self.url} failed ({type(e).__name__}: "
                            f"{str(e)[:160]}); the local copy holds every record and checkpoint: "
                            "the same command uploads it when it runs again") from None
    self.release()


