"""Reads a W&B offline run back for the tests: the `run-ID.wandb` file under
WORKDIR/wandb/offline-run-*/ is W&B's transaction log, a LevelDB-style log (a 7-byte header
":W&B", 0xBEE1, version; 32 KiB blocks of records, each a CRC, a length, a type FULL / FIRST /
MIDDLE / LAST) of protocol buffers `wandb.proto.wandb_internal_pb2.Record`, parsed with W&B's own
message classes. (The wandb package no longer ships a Python reader of it: its core writes the
file in Go.)"""

from __future__ import annotations

import glob
import json
import os
import struct
from typing import Any, Iterator

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str) -> Iterator[Any]:
  """The `Record` messages of one .wandb file, in order."""
  from wandb.proto import wandb_internal_pb2

  data = open(path, "rb").read()
  ident, magic, _ = struct.unpack("<4sHB", data[:7])
  assert (ident, magic) == (b":W&B", 0xBEE1), (ident, magic)
  offset, parts = 7, []
  while offset + 7 <= len(data):
    left = BLOCK - offset % BLOCK
    _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])
    if left < 7 or (length == 0 and kind == 0):  # the rest of a block is padding
      offset += left
      continue
    parts.append(data[offset + 7:offset + 7 + length])
    offset += 7 + length
    if kind in (FULL, LAST):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(b"".join(parts))
      parts = []
      yield record


def segments(workdir: str) -> list[dict[str, Any]]:
  """Each offline run under WORKDIR/wandb, oldest first: {"id", "name", "project", "tags",
  "config" ({key: value}), "history" ([{key: value}] with "_step")}."""
  out = []
  for path in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))):
    segment: dict[str, Any] = {"history": []}
    for record in records(path):
      kind = record.WhichOneof("record_type")
      if kind == "run":
        r = record.run
        segment.update(id=r.run_id, name=r.display_name, project=r.project, tags=list(r.tags),
                       config={u.key: json.loads(u.value_json) for u in r.config.update})
      elif kind == "history":
        segment["history"].append({item.key or "/".join(item.nested_key):
                                   json.loads(item.value_json) for item in record.history.item})
    out.append(segment)
  return out
