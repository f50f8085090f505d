"""A run's files: their names (one constant each, for every writer and reader) and whole-file
writes (to a temporary file, then renamed, so a failure never leaves half a file)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Any, Callable

from train.errors import CheckpointError, ConfigError

CONFIG = "config.json"          # the resolved config, as the run was started
LINEAGE = "lineage.json"        # train.lineage: code and library versions, dataset
METRICS = "metrics.jsonl"       # train.metric_writer: one record per line, no timings
THROUGHPUT = "throughput.jsonl"  # rates: steps/s, examples/s, MFU
SUMMARY = "summary.json"        # a finished run: steps, final evaluation, wall time
CHECKPOINTS = "checkpoints"     # train.checkpoint: one folder per saved step
TENSORBOARD = "tensorboard"


# A local workdir whose checkpoints live elsewhere: {workdir: (checkpoint folder URL, what to do
# before each save)}; set by train/remote_workdir.py for the local copy of a multi-process job's
# gs:// workdir, whose processes write their shards straight to the bucket.
_ELSEWHERE: dict[str, tuple[str, Callable[[], None]]] = {}


def checkpoints_dir(workdir: str) -> str:
  """Where the checkpoints of `workdir` live: `workdir/checkpoints`, or for the local copy of a
  multi-process job's gs:// workdir the bucket's `checkpoints/` (train/remote_workdir.py)."""
  elsewhere = _ELSEWHERE.get(os.path.abspath(workdir))
  return elsewhere[0] if elsewhere else os.path.join(workdir, CHECKPOINTS)


def before_checkpoint(directory: str) -> None:
  """What must happen before a save into the checkpoint folder `directory` (the records' upload,
  so that they never run behind a checkpoint in the bucket); nothing for a local folder."""
  for folder, before in _ELSEWHERE.values():
    if folder == directory:
      before()


@contextlib.contextmanager
def checkpoints_elsewhere(workdir: str, directory: str, before_save: Callable[[], None]):
  """`checkpoints_dir(workdir)` is `directory` within the block, and `before_save()` runs before
  each save into it."""
  _ELSEWHERE[os.path.abspath(workdir)] = (directory, before_save)
  try:
    yield
  finally:
    _ELSEWHERE.pop(os.path.abspath(workdir), None)


def check_directory(path: str | None, field: str) -> None:
  """Raises ConfigError for a URL (`gs://...`, `s3://...`: `python -m train`, sweeps and the
  report tools take one, through train/remote_workdir.py, and such a path would otherwise become
  a local folder named `gs:`) or a path that exists and is not a directory."""
  if path and "://" in str(path):
    raise ConfigError(f"{field}={path!r}: this tool reads and writes local paths (python -m "
                      "train, sweeps and the report tools take a gs:// workdir: docs/pods.md); "
                      "use a local or mounted path (e.g. a gcsfuse mount of the bucket)")
  if path and os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{field}={path!r} is a file; expected a directory (a new or existing run's)")


def read_json(path: str) -> Any:
  """The JSON document in `path`.

  Raises:
    CheckpointError: a file that cannot be read or parsed (torn, corrupt), naming it.
  """
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} cannot be read as JSON ({type(e).__name__}: {e}); restore it "
                          "from a backup or move it aside") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested dict (a config.json, a lineage section) as {"a.b.c": leaf}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def write_json_atomic(path: str, obj: Any) -> None:
  """`obj` as indented JSON in `path`, written whole (`write_text_atomic`)."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(path: str, text: str) -> None:
  """`text` in `path`, written whole: to a temporary file of a name no other writer uses, flushed
  to the disk (fsync), then renamed over `path`; a failure (a full disk) removes the temporary
  file and leaves `path` as it was."""
  tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def write_report(out: str, result: Any, markdown: str | None = None,
                 json_name: str = "report.json") -> None:
  """An evaluation tool's results: `out`/`json_name` and, given, `out`/report.md, each written
  whole (to a temporary file, then renamed), so a failure never leaves half a report."""
  os.makedirs(out, exist_ok=True)
  write_json_atomic(os.path.join(out, json_name), result)
  if markdown is not None:
    write_text_atomic(os.path.join(out, "report.md"), markdown + "\n")
