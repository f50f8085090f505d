"""Where a run's numbers came from: the source tree (commit, uncommitted changes) and the
library versions, written to WORKDIR/lineage.json and into every checkpoint's metadata."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from train import files

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
             "chex", "ml-collections", "numpy", "strata")


def library_versions() -> dict[str, str]:
  out = {}
  for name in LIBRARIES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  out["python"] = platform.python_version()
  return out


def _git(*args: str) -> str:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10,
                       check=True)
  return out.stdout


def code_version() -> str:
  """`git describe` of the source tree when it is a checkout, else the package version."""
  try:
    return _git("describe", "--always", "--dirty").strip()
  except (OSError, subprocess.SubprocessError):
    return importlib.metadata.version("strata")


def code_lineage() -> dict[str, Any]:
  """The source tree a run used: {"commit": full hash, "dirty": uncommitted changes to tracked
  files, "diff_sha256": hash of `git diff HEAD` when dirty (two dirty trees with the same hash
  ran the same code)}; {"commit": None, "package": version} outside a git checkout."""
  try:
    commit = _git("rev-parse", "HEAD").strip()
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary")
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None, "package": importlib.metadata.version("strata")}
  out: dict[str, Any] = {"commit": commit, "dirty": bool(diff)}
  if diff:
    out["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
  return out


def add_segment(path: str, entry: dict[str, Any], from_step: int) -> dict[str, Any]:
  """Writes WORKDIR/lineage.json with `entry` (this run segment's lineage, started at
  `from_step`) added: its top level is the newest segment, `segments` every segment in order, so
  a resumed run never replaces what an earlier one recorded (a run written before segments
  existed becomes the first). Returns the document."""
  old = files.read_json(path) if os.path.exists(path) else None
  segments = list(old.get("segments") or [{k: v for k, v in old.items() if k != "segments"}]
                  ) if old else []
  entry = {**entry, "from_step": int(from_step)}
  doc = {**entry, "segments": [*segments, entry]}
  files.write_json_atomic(path, doc)
  return doc
