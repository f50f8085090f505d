"""URLs in object storage (`gs://bucket/path`; any URL fsspec opens, GCS through gcsfs, the
`objectstore` extra), shared by data dirs (data/remote_data_dir.py) and workdirs
(train/remote_workdir.py): what is a URL, where its local copy lives, how it opens, and the one
line for a bucket that cannot be reached."""

from __future__ import annotations

import hashlib
import logging
import os


def is_remote(path: str | None) -> bool:
  """Whether `path` is a URL (`gs://...`)."""
  return bool(path) and "://" in str(path)


def cache_for(url: str, kind: str) -> str:
  """The local copy of the folder at `url`: `$STRATA_CACHE` (default ~/.cache/strata)
  `/KIND/<hash of the URL>` (kind: "workdirs", "data")."""
  base = os.environ.get("STRATA_CACHE") or os.path.join("~", ".cache", "strata")
  name = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
  return os.path.join(os.path.expanduser(base), kind, name)


def open_url(url: str):
  """(fsspec file system, root path) of `url`.

  Raises:
    ValueError: no file system opens it (an unknown scheme, or gcsfs not installed), naming the
      extra to install.
  """
  import fsspec

  # gcsfs logs each retried request's traceback; a failure is reported once, in one line
  logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
  # file:// (the tests' stand-in for a bucket) makes the folders a bucket does not need
  options = {"auto_mkdir": True} if url.startswith("file://") else {}
  try:
    return fsspec.core.url_to_fs(url.rstrip("/"), **options)
  except (ImportError, ValueError) as e:
    raise ValueError(f"{e}; for gs:// install the objectstore extra "
                     "(pip install -e '.[objectstore]')") from None


def unreachable(field: str, url: str, error: Exception) -> str:
  """The one line for a bucket that cannot be read or written."""
  detail = str(error).splitlines()[0][:200] if str(error) else ""
  return (f"{field}={url} cannot be read or written: {type(error).__name__}: {detail}; check "
          "the bucket's name, the credentials (gcloud auth application-default login) and the "
          "network")
