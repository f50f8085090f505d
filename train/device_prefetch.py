"""Batches placed on the devices ahead of the step that consumes them, with exact iterator state.

`DevicePrefetch(parent, size, sharding)` wraps a checkpointable grain iterator of host batches
(numpy dicts, this process's rows). With `size > 0` it keeps `size` batches already sent to the
devices (`jax.device_put` onto the batch sharding; `make_array_from_process_local_data` across
processes). Transfers are asynchronous on GPU and TPU, so batch `i + 1 .. i + size` travel while
step `i` runs, as `flax.jax_utils.prefetch_to_device` does for pmap.

The buffered batches have already been drawn from `parent`, so `parent.get_state()` is ahead of
what training consumed. `get_state()` returns the parent's state from just before the oldest
buffered batch was drawn, and `set_state` drops the buffer: a checkpoint written after step `s`
resumes at batch `s + 1` whatever `size` is (tested in tests/train/test_device_prefetch.py).

With `size == 0` a batch is placed when it is asked for, through `parallel.global_batch` (with
one process the numpy batch goes to the jitted step as is, the fastest path on CPU).
"""

from __future__ import annotations

import collections
from typing import Any

import grain
import jax

from train import parallel


def to_devices(batch: dict[str, Any], sharding: jax.sharding.NamedSharding) -> dict[str, Any]:
  """This process's rows of a batch -> global arrays on the devices of `sharding` (queued, not
  waited for)."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return parallel.global_batch(batch, sharding)


class DevicePrefetch(grain.DatasetIterator):
  """An iterator of batches on the devices, `size` ahead of the consumer (module docstring)."""

  def __init__(self, parent: grain.DatasetIterator, size: int,
               sharding: jax.sharding.NamedSharding):
    super().__init__(parent)
    self._buffer: collections.deque[tuple[Any, dict[str, Any]]] = collections.deque()
    self._exhausted = False
    if size < 0:
      raise ValueError(f"data.device_prefetch={size}; expected an integer >= 0")
    self._size = size
    self._sharding = sharding

  def _fill(self) -> None:
    while len(self._buffer) < self._size and not self._exhausted:
      state = self._parent.get_state()
      try:
        batch = next(self._parent)
      except StopIteration:
        self._exhausted = True
        return
      self._buffer.append((state, to_devices(batch, self._sharding)))

  def __next__(self) -> dict[str, Any]:
    self._assert_not_closed()
    if self._size == 0:
      return parallel.global_batch(next(self._parent), self._sharding)
    self._fill()
    if not self._buffer:
      raise StopIteration
    _, batch = self._buffer.popleft()
    self._fill()  # the next transfer is queued before the caller's step is
    return batch

  def get_state(self) -> dict[str, Any]:
    """The parent's state before the oldest batch not yet returned (exact resume)."""
    return self._buffer[0][0] if self._buffer else self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._buffer.clear()
    self._exhausted = False
    self._parent.set_state(state)

  def close(self) -> None:
    self._buffer.clear()
    super().close()
