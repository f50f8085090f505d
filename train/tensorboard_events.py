"""TensorBoard event files, written here: TFRecord framing of `Event` protocol buffers holding
scalar and histogram summaries, as TensorBoard reads them (`tensorboard --logdir
WORKDIR/tensorboard`).

Written by hand because the library that writes them, tensorboardX, imports PyTorch from its
package `__init__` whenever PyTorch is installed: with the bench or convert extra, every run
paid 4.5 s of import and PyTorch's memory for a few scalars. A record is the event's length
(uint64, little-endian), the masked CRC-32C of those 8 bytes, the serialised event and its
masked CRC-32C; an event is `wall_time` (field 1, double), `step` (2, int64), `file_version` (3,
string) or `summary` (5: `value` (1), each a `tag` (1, string) and a `simple_value` (2, float),
a `histo` (5, `histogram_event`) or an `image` (4, `image_event`)).
`tests/train/test_tensorboard_events.py` reads the file back with tensorboardX's own protocol
buffers and CRC.
"""

from __future__ import annotations

import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli's polynomial, reflected
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """The CRC-32C (Castagnoli) of `data`."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: the CRC-32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def _string(field: int, data: bytes) -> bytes:
  return _key(field, 2) + _varint(len(data)) + data


def _header(wall_time: float, step: int) -> bytes:
  """An `Event`'s `wall_time` (field 1) and, unless 0, its `step` (2)."""
  out = _key(1, 1) + struct.pack("<d", wall_time)
  if step:
    out += _key(2, 0) + _varint(step & 0xFFFFFFFFFFFFFFFF)  # int64, two's complement
  return out


def event(wall_time: float, step: int = 0, file_version: str = "",
          scalars: dict[str, float] | None = None) -> bytes:
  """A serialised `Event`: a file's first (its `file_version`) or one of `scalars` at `step`."""
  out = _header(wall_time, step)
  if file_version:
    out += _string(3, file_version.encode())
  if scalars:
    values = b"".join(
        _string(1, _string(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(v)))
        for tag, v in scalars.items())
    out += _string(5, values)
  return out


def histogram_event(wall_time: float, step: int, values: dict[str, dict]) -> bytes:
  """A serialised `Event` at `step` with a `HistogramProto` per tag (`Summary.Value.histo`,
  field 5): `min` (1), `max` (2), `num` (3), `sum` (4), `sum_squares` (5), then `bucket_limit`
  (6, each bin's right edge) and `bucket` (7, its count), packed doubles. `values`: {tag:
  `train.histograms.unpack` of an array}."""
  entries = b""
  for tag, h in values.items():
    histo = b"".join(_key(f, 1) + struct.pack("<d", float(h[name])) for f, name in enumerate(
        ("min", "max", "num", "sum", "sum_squares"), start=1))
    histo += _string(6, struct.pack(f"<{len(h['counts'])}d", *h["edges"][1:]))
    histo += _string(7, struct.pack(f"<{len(h['counts'])}d", *h["counts"]))
    entries += _string(1, _string(1, tag.encode()) + _string(5, histo))
  return _header(wall_time, step) + _string(5, entries)


def image_event(wall_time: float, step: int, tag: str, png: bytes) -> bytes:
  """A serialised `Event` at `step` with one image (`Summary.Value.image`, field 4): `height`
  (1), `width` (2), `colorspace` (3; 4 = RGBA, 3 = RGB, from the PNG's header) and the encoded
  PNG (4)."""
  if png[:8] != b"\x89PNG\r\n\x1a\n":
    raise ValueError(f"image {tag!r} is not a PNG")
  width, height = struct.unpack(">II", png[16:24])
  channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(png[25], 3)  # the IHDR colour type
  image = (_key(1, 0) + _varint(height) + _key(2, 0) + _varint(width) + _key(3, 0)
           + _varint(channels) + _string(4, png))
  return _header(wall_time, step) + _string(5, _string(1, _string(1, tag.encode())
                                                       + _string(4, image)))


def record(data: bytes) -> bytes:
  """`data` framed as a TFRecord."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


class Events:
  """Scalars as TensorBoard events in `logdir`/events.out.tfevents.TIME.HOST, written and flushed
  in the calling thread (a failed write raises in the loop, which says so in one line; a writer
  thread would die on it and block the run on its full queue)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(now):010d}."
                                     f"{socket.gethostname()}")
    self._file = open(self.path, "ab")
    self._write(event(now, file_version="brain.Event:2"))

  def _write(self, data: bytes) -> None:
    self._file.write(record(data))
    self._file.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    """One event at `step` with a scalar per tag, flushed."""
    self._write(event(time.time(), step, scalars=values))

  def histograms(self, step: int, values: dict[str, dict]) -> None:
    """One event at `step` with a histogram per tag (`histogram_event`), flushed."""
    self._write(histogram_event(time.time(), step, values))

  def image(self, step: int, tag: str, png: bytes) -> None:
    """One event at `step` with the PNG image `png` under `tag`, flushed."""
    self._write(image_event(time.time(), step, tag, png))

  def close(self) -> None:
    self._file.close()
