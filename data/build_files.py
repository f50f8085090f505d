"""A prepared TFDS build's files: the ArrayRecord files of a split, and the dataset fingerprint
over the builder's arguments and those files' bytes (a run's lineage)."""

from __future__ import annotations

import hashlib
import json
import os


def split_files(builder, split: str) -> list[str]:
  """The prepared ArrayRecord files of `split`, sorted."""
  from etils import epath

  base = epath.Path(builder.data_dir)
  return sorted(str(p) for p in base.glob(f"*-{split}.array_record*"))


# Prepared files up to this size in all are hashed whole; past it (a build larger than memory)
# each file contributes its name, size and first and last MiB, so a run does not start by
# reading tens of GB.
FINGERPRINT_WHOLE_BYTES = 1 << 30


def fingerprint(builder, splits: list[str]) -> str:
  """sha256 of the builder's arguments and the bytes of its prepared split files (their size and
  ends only past `FINGERPRINT_WHOLE_BYTES`)."""
  h = hashlib.sha256()
  args = (builder.builder_arguments() if hasattr(builder, "builder_arguments") else
          {"name": builder.name, "version": str(builder.version),
           "config": builder.builder_config.name if builder.builder_config else None})
  h.update(json.dumps(args, sort_keys=True, default=str).encode())
  paths = [p for split in sorted(splits) for p in split_files(builder, split)]
  whole = sum(os.path.getsize(p) for p in paths) <= FINGERPRINT_WHOLE_BYTES
  for path in paths:
    h.update(os.path.basename(path).encode())
    with open(path, "rb") as f:
      if whole:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
      else:
        size = os.path.getsize(path)
        h.update(str(size).encode() + f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read())
  return h.hexdigest()
