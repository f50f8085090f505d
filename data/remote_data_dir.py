"""`data.data_dir` in object storage (`gs://bucket/tfds`; any URL fsspec opens, GCS through gcsfs,
the `objectstore` extra): prepared datasets live in the bucket and are read from a local copy.

ArrayRecord's reader opens local files only, so a run reads a prepared dataset from a local cache
(`$STRATA_CACHE`, default ~/.cache/strata, `data/<hash of the URL>/`), laid out as a TFDS data
dir. A dataset the cache lacks is downloaded from the bucket when the bucket holds it, one build
(`NAME/CONFIG/VERSION/`) at a time, not the whole data dir; one the bucket lacks too is prepared
locally, as for a local data dir, and uploaded, so the next machine downloads it instead.

- **A build in the bucket is complete or absent**: its files go up first and `dataset_info.json`
  (what TFDS's `is_prepared` looks for) last; a download starts only from a build that has it and
  takes it last, so an interrupted download is not taken for a prepared dataset.
- **Streaming** (`data.streaming`) reads the local copy like any local build: the whole dataset
  is on local disk once, not in memory. In memory, as for a local data dir.
- Two machines that prepare the same dataset at once both upload it: the offline builders are
  deterministic, so either copy is the same dataset (its fingerprint in lineage says so).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, Sequence

from data import object_storage
from data.errors import DataError

PREPARED = "dataset_info.json"


is_remote = object_storage.is_remote


def cache_for(url: str) -> str:
  """The local copy (a TFDS data dir) of the data dir at `url`."""
  return object_storage.cache_for(url, "data")


def _fs(url: str):
  """(file system, root path) of `url`; a DataError naming the field when none opens it."""
  try:
    return object_storage.open_url(url)
  except ValueError as e:
    raise DataError(f"data.data_dir={url!r}: {e}") from None


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
  """A bucket that cannot be read or written (its name, the credentials, the network): one
  DataError line."""
  try:
    yield
  except DataError:
    raise
  except Exception as e:
    raise DataError(object_storage.unreachable("data.data_dir", url, e)) from None


def _rel(path: str, local_root: str) -> str:
  return os.path.relpath(os.fspath(path), local_root).replace(os.sep, "/")


def fetch(build: str, local_root: str, url: str, extras: Sequence[str] = ()) -> bool:
  """Downloads the build folder `build` (in the cache `local_root`) from the data dir at `url`,
  with the files `extras` (paths relative to `local_root`, such as a folder source's cached
  listing) where the bucket has them. Returns whether the bucket held the build."""
  with _reaching(url):
    return _fetch(build, local_root, url, extras)


def _fetch(build: str, local_root: str, url: str, extras: Sequence[str]) -> bool:
  fs, root = _fs(url)
  rel = _rel(build, local_root)
  if not fs.exists(f"{root}/{rel}/{PREPARED}"):
    return False
  print(f"data.data_dir={url}: downloading {rel} into its local copy {local_root}",
        file=sys.stderr, flush=True)
  names = sorted(path[len(root) + 1:] for path in fs.find(f"{root}/{rel}"))
  names += [e for e in extras if fs.exists(f"{root}/{e}")]
  for name in sorted(names, key=lambda n: n.endswith("/" + PREPARED)):  # the marker last
    target = os.path.join(local_root, *name.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = f"{target}.part-{os.getpid()}"  # the processes of a host may share one cache
    fs.get_file(f"{root}/{name}", part)
    os.replace(part, target)
  return True


def publish(build: str, local_root: str, url: str, extras: Sequence[str] = ()) -> None:
  """Uploads the prepared build folder `build` (and `extras`, relative to `local_root`) to the
  data dir at `url`, `dataset_info.json` last."""
  with _reaching(url):
    _publish(build, local_root, url, extras)


def _publish(build: str, local_root: str, url: str, extras: Sequence[str]) -> None:
  fs, root = _fs(url)
  names = []
  for folder, _, files in os.walk(build):
    names += [_rel(os.path.join(folder, f), local_root) for f in files]
  names += [e for e in extras if os.path.exists(os.path.join(local_root, e))]
  for name in sorted(names, key=lambda n: n.endswith("/" + PREPARED)):
    fs.put_file(os.path.join(local_root, *name.split("/")), f"{root}/{name}")  # streamed
  print(f"data.data_dir={url}: uploaded {_rel(build, local_root)}; later runs download it",
        file=sys.stderr, flush=True)


def prepared(make: Callable[[], Any], prepare: Callable[[Any], None], data_dir: str, remote: str,
             extras: Sequence[str] = ()) -> Any:
  """The TFDS builder `make()` returns, prepared: as it is when the local data dir `data_dir`
  holds its build; else downloaded from the data dir at the URL `remote` when that holds it; else
  `prepare(builder)`, then uploaded to `remote`. `extras`: files beside the build that go with it
  (relative to `data_dir`)."""
  builder = make()
  if builder.is_prepared():
    return builder
  if remote and fetch(builder.data_dir, data_dir, remote, extras):
    return make()  # a builder made before its files were there has read no dataset_info
  prepare(builder)
  if remote:
    publish(builder.data_dir, data_dir, remote, extras)
  return builder
