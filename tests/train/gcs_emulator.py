"""A Google Cloud Storage emulator on the loopback address for the tests (gcp-storage-emulator,
the `objectstore` extra), with the environment that points each client at it:

- gcsfs, and so etils `epath` for `gs://` paths: `STORAGE_EMULATOR_HOST`; and
  `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`, since gcsfs otherwise first asks a bucket's type over
  gRPC with TLS, which the emulator does not speak (60 s of retries per bucket);
- TensorStore, and so orbax's checkpoints: `TENSORSTORE_GCS_HTTP_URL`, and
  `GOOGLE_AUTH_TOKEN_FOR_TESTING` in place of credentials;
- google-cloud-storage: `STORAGE_EMULATOR_HOST`.

Measured limits of the emulator (2026.7.19):
- it ignores generation preconditions (`ifGenerationMatch=0` creates over an existing object),
  so the lock's create-if-absent cannot be tested against it; TensorStore's `file` driver
  honours them and stands in for that part (tests/train/test_object_lock.py);
- a download does not send the object's generation (`x-goog-generation`, which GCS sends and
  TensorStore reads), so a lock read back has no generation to write under. Run as a script,
  this module starts the emulator with that header added to downloads, as GCS documents it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator


@contextlib.contextmanager
def emulator(bucket: str = "bucket") -> Iterator[str]:
  """Starts the emulator (in memory, with `bucket`) and sets the clients' environment; yields
  its URL; stops it and restores the environment."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, __file__, "start", "--host", "127.0.0.1", "--port",
       str(port), "--in-memory", "--default-bucket", bucket],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
         "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test"}
  saved = {k: os.environ.get(k) for k in env}
  try:
    for _ in range(200):
      try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        break
      except OSError:
        if proc.poll() is not None:
          raise RuntimeError(f"the GCS emulator exited with status {proc.returncode}")
        time.sleep(0.05)
    os.environ.update(env)
    yield url
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.terminate()
    proc.wait(10)


def _main() -> None:
  """The emulator's command line, its downloads sending `x-goog-generation`."""
  from gcp_storage_emulator.handlers import objects

  download = objects.download

  def with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    with contextlib.suppress(Exception):  # a missing object: the 404 stays as it is
      response["x-goog-generation"] = storage.get_file_obj(
          request.params["bucket_name"], request.params["object_id"])["generation"]

  objects.download = with_generation  # before the server's routes are built on import
  from gcp_storage_emulator.__main__ import main

  main()


if __name__ == "__main__":
  _main()
