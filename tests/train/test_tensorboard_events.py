"""train/tensorboard_events.py against tensorboardX's own protocol buffers and CRC: every record's
framing and CRCs check, the events parse, the scalars and steps are what was written; and a
training run's imports leave PyTorch out (tensorboardX's package imports it)."""

import os
import struct

import pytest

from train import tensorboard_events

tbx = pytest.importorskip("tensorboardX")


def test_events_parse_with_tensorboardx_and_their_crcs_check(tmp_path):
  from tensorboardX.crc32c import crc32c
  from tensorboardX.proto.event_pb2 import Event
  from tensorboardX.record_writer import masked_crc32c

  for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
    assert tensorboard_events.crc32c(data) == crc32c(data)
    assert tensorboard_events.masked_crc32c(data) == masked_crc32c(data)
  assert tensorboard_events.crc32c(b"123456789") == 0xE3069283  # CRC-32C's check value

  events = tensorboard_events.Events(str(tmp_path))
  events.scalars(10, {"train/loss": 0.25, "train/accuracy": 0.875})
  events.scalars(2 ** 40, {"eval/loss": -3.5e-7})
  events.close()
  (name,) = os.listdir(tmp_path)
  assert name.startswith("events.out.tfevents.")
  data, parsed = open(tmp_path / name, "rb").read(), []
  while data:
    n = struct.unpack("<Q", data[:8])[0]
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
    body = data[12:12 + n]
    assert struct.unpack("<I", data[12 + n:16 + n])[0] == masked_crc32c(body)
    parsed.append(Event.FromString(body))
    data = data[16 + n:]
  assert parsed[0].file_version == "brain.Event:2" and parsed[0].wall_time > 1e9
  got = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in parsed[1:]]
  assert got == [(10, {"train/loss": 0.25, "train/accuracy": 0.875}),
                 (2 ** 40, {"eval/loss": pytest.approx(-3.5e-7)})]
