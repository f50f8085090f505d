"""A workdir in object storage: `--workdir gs://bucket/path` (any URL fsspec opens; GCS through
gcsfs, the `objectstore` extra).

The run works in a local copy of the workdir (a cache: `$STRATA_CACHE`, default
~/.cache/strata, `workdirs/<hash of the URL>/`), exactly as in a local workdir, and a thread
uploads it every `STRATA_SYNC_SECS` (default 10 s) and once more when the run ends. A run that
starts downloads the workdir first, so it resumes on any machine from what was uploaded.

What holds, and how:
- **Checkpoints are complete or absent**, in every `checkpoints/` folder of the tree (a run's own;
  each run's of a sweep). A step's folder is uploaded once orbax has committed it locally, its
  files first, orbax's `commit_success.txt` next and a marker (`.uploaded`) last; a download
  takes only steps with either (train/workdir_mirror.py). Steps orbax deletes
  (`train.keep_checkpoints`) or quarantines are deleted on the remote after the newer ones are
  up.
- **Records never run behind the checkpoints.** Each upload lists the committed steps first,
  then uploads every other file whole (metrics.jsonl, throughput.jsonl, config.json,
  lineage.json, TensorBoard events, samples/, ...), then the steps listed: whatever step a
  download finds, the records it finds reach it (a record written after is dropped and
  recomputed on resume, as locally).
- **What a SIGKILL loses** is what the last upload had not reached: up to `STRATA_SYNC_SECS` of
  records and the checkpoints committed since; the run resumes from the last uploaded step.
- **One writer**: a lock object (`.lock.json`, train/object_lock.py) created only if absent and
  renewed only if unchanged, under generation preconditions (GCS `ifGenerationMatch`), with a
  heartbeat at each upload; a second run is refused while the heartbeat is younger than
  `object_lock.EXPIRY_SECS` (on the owner's own host, at once when its process is gone). A run
  whose lock was taken over uploads nothing more and says so.
- **Several processes** (hosts that share no disk): orbax writes the checkpoints in the bucket
  itself, and process 0 carries the other files as above, uploading them also before each
  checkpoint (`_across_processes`). `STRATA_CHECKPOINTS_IN_BUCKET=1` does the same for one
  process: a host whose disk cannot hold the checkpoints (a large model on a small boot disk).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from data import object_storage
from train import files, progress
from train.errors import CheckpointError, ConfigError
from train.workdir_mirror import CHECKPOINTS, Mirror, sync_secs

is_remote = object_storage.is_remote


def cache_for(url: str) -> str:
  """The local copy's folder of the workdir at `url`."""
  return object_storage.cache_for(url, "workdirs")


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
  """A bucket that cannot be read or written (its name, the credentials, the network): one
  line."""
  try:
    yield
  except (ConfigError, CheckpointError):
    raise
  except Exception as e:
    raise CheckpointError(object_storage.unreachable("--workdir", url, e)) from None


def in_bucket() -> bool:
  """Whether orbax writes a URL workdir's checkpoints in the bucket itself: in a job of several
  processes, or with `STRATA_CHECKPOINTS_IN_BUCKET=1`."""
  import jax

  return jax.process_count() > 1 or os.environ.get("STRATA_CHECKPOINTS_IN_BUCKET") == "1"


@contextlib.contextmanager
def mirrored(url: str) -> Iterator[str]:
  """The local copy of the workdir at `url`, downloaded, uploaded as the run goes and at the
  end (also when the run fails: what it wrote is kept)."""
  if in_bucket():
    with _across_processes(url) as local:
      yield local
    return
  with _reaching(url):
    mirror = Mirror(url, cache_for(url))
    mirror.lock.acquire()
  try:
    with _reaching(url):
      mirror.pull()
    progress.console(f"--workdir={url}: working in its local copy {mirror.local}, uploaded every "
                     f"{sync_secs():.0f} s")
    mirror.start()
    try:
      yield mirror.local
    finally:
      mirror.stop()
  except BaseException:
    mirror.release()
    raise


@contextlib.contextmanager
def _across_processes(url: str) -> Iterator[str]:
  """`mirrored` for a job of several processes (hosts that share no disk): orbax writes the
  checkpoints in the bucket itself, every process its shards (`checkpoint.COMMITTED` last), as
  MaxText and levanter do; each process works in a local copy of the other files, and process 0
  alone holds the lock and uploads them: every `STRATA_SYNC_SECS` and before each checkpoint, so
  the records never run behind a checkpoint in the bucket."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  main = jax.process_index() == 0
  local = cache_for(url) + ("" if main else f".process-{jax.process_index()}")
  error: Exception | None = None
  mirror = None
  try:
    with _reaching(url):
      mirror = Mirror(url, local, checkpoints=False)
      if main:
        mirror.lock.acquire()
      else:
        mirror.lock.held()  # the credentials' lookup, before orbax's first request logs it
  except (ConfigError, CheckpointError) as e:
    error = e
  # every process stops when process 0 could not take the lock (or reach the bucket)
  failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None and main)))
  if error is not None:
    raise error
  if failed:
    raise ConfigError(f"--workdir={url}: process 0 could not take the workdir (its line says why)")
  assert mirror is not None
  try:
    with _reaching(url):
      mirror.pull()  # every process reads the records at a start (config.json, metrics.jsonl)
    if main:
      progress.console(f"--workdir={url}: checkpoints written there by every process; the other "
                       f"files in the local copy {mirror.local}, uploaded every "
                       f"{sync_secs():.0f} s and before each checkpoint")
      mirror.start()
    # orbax opens gs:// and s3:// itself; a file:// URL (the tests' bucket) is a local path to it
    folder = f"{mirror.url}/{CHECKPOINTS}".removeprefix("file://")
    with files.checkpoints_elsewhere(mirror.local, folder, mirror.push):
      try:
        yield mirror.local
      finally:
        if main:
          mirror.stop()
  except BaseException:
    if main:
      mirror.release()
    raise


@contextlib.contextmanager
def local_workdir(path: str) -> Iterator[str]:
  """`path` itself, or for a URL its local copy (`mirrored`): what the tools that take a
  `--workdir` read and write."""
  if not is_remote(path):
    yield path
    return
  with mirrored(path) as local:
    yield local


@contextlib.contextmanager
def local_workdirs(paths: "list[str] | tuple[str, ...]") -> Iterator[list[str]]:
  """`local_workdir` of each of `paths` (the tools that compare several runs), in order."""
  with contextlib.ExitStack() as stack:
    yield [stack.enter_context(local_workdir(p)) for p in paths]


def upload(local: str, url: str) -> None:
  """Uploads the local workdir `local` (a finished run, or a sweep) to `url` under its lock, as a
  run's mirror would: a run trained on a local disk, moved to a bucket."""
  with _reaching(url):
    mirror = Mirror(url, local=local)
    mirror.lock.acquire()
    try:
      mirror.push()
    finally:
      mirror.release()


def send_files(local: str, url: str, names: "list[str] | tuple[str, ...]") -> None:
  """Uploads the files `names` of the local folder `local` to the folder at `url`, each whole,
  without the lock: files derived from elsewhere that any writer may replace (a search's tables,
  written from its study by each machine's worker)."""
  with _reaching(url):
    mirror = Mirror(url, local)
    for name in names:
      if os.path.exists(os.path.join(local, name)):
        mirror.send(name)
