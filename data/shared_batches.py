"""Recycled shared-memory batch buffers between grain's worker processes and the trainer.

grain hands a worker's batch to the main process in a fresh shared-memory segment
(`SharedMemoryArray`), which the main process unlinks when the batch is freed. A fresh segment's
pages are allocated and zeroed by the kernel on first touch: filling a new 154 MB ImageNet batch
(256 x 224 x 224 x 3 float32) took 145 ms on this machine against 10 ms for a recycled one
(`python -m benchmarks.batch_memory`), 0.57 ms an image. And a batch that a later transform
returned as a plain array view (`np.asarray` of grain's array, as the float32 cast does) was
copied by grain into a second fresh segment.

Here each worker keeps a pool of segments and reuses one once the main process has freed every
array of the batch it last held:
- A segment is one file in /dev/shm: a state byte on the first page (free, taken by the worker,
  or sent: the main process may hold the batch), the batch from the second (page-aligned).
- `data.batches` fills a segment from `take` in place; `send`, the worker pipeline's last step,
  replaces each large array of the batch by a small `Token` (name, shape, dtype) of its segment
  (copying it into one when a later transform made a new array) and marks the segment sent.
- The main process (`OpenBatches`) maps the segment on the first token naming it, unlinks its
  name at once (both processes keep their mappings, so a crash leaks nothing after that), and
  makes the batch array on the mapping; when that array and every view of it (a jax array
  aliasing it included) are gone, a finalizer marks the segment free.
- Segments never received (still named) are unlinked when the iterator closes, or by their
  worker when the main process dies.
A worker holds at most `MAX_SEGMENTS` segments; past that, or where /dev/shm does not exist,
batches go through grain's own shared memory as before, and the main process unlinks each of
those segments' names as it receives it too (`_unlinked`). A mid-stream `set_state` drops the
batches in flight without freeing their segments: the pool grows by those (up to its cap) until
the iterator closes; a resumed run sets the state before the first batch, when none is in flight.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import itertools
import mmap
import os
import secrets
import weakref
from typing import Any, Iterable, Iterator

import grain
import numpy as np

SHM_DIR = "/dev/shm"
PREFIX = "strata-batch-"
PAGE = mmap.PAGESIZE
MAX_SEGMENTS = 16
MIN_BYTES = 1 << 20  # smaller arrays (labels, masks) go through grain as before

_tag: str | None = None  # set in a worker by `init_worker`: segments are named after it
_pool: list[_Segment] = []
_loose: collections.deque[str] = collections.deque(maxlen=64)  # `grain_array`s' names, newest
_unsent: list[Any] = []  # `grain_array`s made since the last `send`
_names = itertools.count()
_tags = itertools.count()


@dataclasses.dataclass(frozen=True)
class Token:
  """A batch array in segment `name` of a worker's pool (what crosses grain's queue)."""
  name: str
  shape: tuple[int, ...]
  dtype: str


@dataclasses.dataclass
class _Segment:
  name: str
  size: int  # bytes of batch room after the flag page
  mm: mmap.mmap
  address: int = 0  # of the batch room in this process

  # mm[0]: FREE, or SENT (the main process may hold the batch), or TAKEN (being filled here).
  FREE, SENT, TAKEN = 0, 1, 2

  def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.ndarray(shape, dtype, buffer=self.mm, offset=PAGE)


def available() -> bool:
  """Whether segments can be made here (POSIX shared memory as files under /dev/shm)."""
  return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def new_tag() -> str:
  """A name for one iterator's segments: the main process's id, a counter and a random part (a
  container sharing /dev/shm may reuse the id)."""
  return f"{os.getpid()}-{next(_tags)}{secrets.token_hex(3)}"


def init_worker(tag: str) -> None:
  """In a grain worker: name this worker's segments after `tag` (its iterator's)."""
  global _tag
  _tag = f"{tag}-{os.getpid()}"
  _pool.clear()
  _loose.clear()


def _segment(nbytes: int) -> _Segment | None:
  """A free segment of `nbytes`, now TAKEN; None outside a pooling worker or when the pool is
  full and busy."""
  if _tag is None:
    return None
  segment = next((s for s in _pool if s.size == nbytes and s.mm[0] == _Segment.FREE), None)
  if segment is None:
    if len(_pool) >= MAX_SEGMENTS:
      return None
    try:
      segment = _create(f"{PREFIX}{_tag}-{next(_names)}", nbytes)
    except OSError:  # the name taken, or /dev/shm refused it: grain's own way
      return None
    _pool.append(segment)
  segment.mm[0] = _Segment.TAKEN
  return segment


def take(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
  """In a pooling worker, an empty batch array in a recycled segment (else None): filled in
  place, it is sent by `send` without a copy."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  if nbytes < MIN_BYTES:  # see `grain_array`
    return None
  segment = _segment(nbytes)
  return None if segment is None else segment.array(tuple(shape), dtype)


def grain_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
  """In a grain worker, an empty batch array in grain's own shared memory (`SharedMemoryArray`,
  which grain sends as it is) for a batch that `take` could not pool (the pool is full and busy,
  or this worker does not pool: no /dev/shm); None if it cannot be made. `send` unlinks it if
  the batch is sent without it (a later transform replaced it): grain would have left it
  behind. In a pooling worker it is named as this worker's segments are, so that the main
  process's sweep finds it if it is never received, and Python's resource tracker is told to
  forget it here (the main process's unlink on receipt, `_unlinked`, tracks it there; one swept
  would otherwise be reported as leaked at exit). Neither this nor `take` serves an array under
  `MIN_BYTES`: grain pickles those, and its queue pickles on a thread, after the worker may have
  reused a pooled array's segment for the next batch."""
  from multiprocessing import resource_tracker, shared_memory

  from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

  dtype = np.dtype(dtype)
  size = int(np.prod(shape)) * dtype.itemsize
  if size < MIN_BYTES:
    return None
  try:
    if _tag is None:
      array = SharedMemoryArray(tuple(shape), dtype)
    else:
      shm = shared_memory.SharedMemory(f"{PREFIX}{_tag}-{next(_names)}", create=True, size=size)
      resource_tracker.unregister(shm._name, "shared_memory")  # the "/"-prefixed name
      _loose.append(shm.name)
      array = SharedMemoryArray.from_shared_memory(shm, tuple(shape), dtype)
  except OSError:
    return None
  _unsent.append(array)
  return array


def _unlink_unsent(sent: Iterable[Any]) -> None:
  """Unlinks the `grain_array`s made since the last batch that are not among `sent`."""
  names = {getattr(getattr(v, "shm", None), "name", None) for v in sent}
  for array in _unsent:
    if array.shm.name in names:
      continue
    if array.shm.name.startswith(PREFIX):  # untracked (`grain_array`)
      _unlink_quietly([os.path.join(SHM_DIR, array.shm.name)])
    else:
      array.shm.unlink()
  _unsent.clear()


def send(element: Any) -> Any:
  """The last step of a worker's pipeline: each array of `MIN_BYTES` or more in the element (a
  dict) becomes a `Token` of a segment: its own when it was made by `take`, else a copy. Segments
  taken for arrays that were not sent (a later transform replaced them, or the batch failed)
  are free again, and `grain_array`s not sent are unlinked. In every grain worker, pooling or
  not."""
  if not isinstance(element, dict):
    return element
  _unlink_unsent(element.values())
  if _tag is None:
    return element
  out = dict(element)
  for key, value in element.items():
    if (not isinstance(value, np.ndarray) or value.nbytes < MIN_BYTES or value.dtype.hasobject
        or getattr(value, "shm", None) is not None):  # already in grain's shared memory
      continue
    address = value.__array_interface__["data"][0]
    segment = next((s for s in _pool if s.address == address and s.size == value.nbytes
                    and s.mm[0] == _Segment.TAKEN and value.flags.c_contiguous), None)
    if segment is None:
      segment = _segment(value.nbytes)
      if segment is None:
        continue  # grain's own shared memory takes it
      np.copyto(segment.array(value.shape, value.dtype), value)
    segment.mm[0] = _Segment.SENT
    out[key] = Token(segment.name, tuple(value.shape), value.dtype.str)
  for s in _pool:
    if s.mm[0] == _Segment.TAKEN:
      s.mm[0] = _Segment.FREE
  return out


def unlink_pool() -> None:
  """In a worker whose main process died: unlinks the names of its segments that the main process
  never received (nobody will open them now), so that a SIGKILLed trainer leaves none behind."""
  _unlink_quietly(os.path.join(SHM_DIR, name) for name in [s.name for s in _pool] + list(_loose))


def _unlink_quietly(paths: Iterable[str]) -> None:
  """Unlinks `paths`, those already gone (the other side unlinked them) included."""
  for path in paths:
    try:
      os.unlink(path)
    except FileNotFoundError:
      pass


def _create(name: str, nbytes: int) -> _Segment:
  size = PAGE + max(nbytes, 1)
  path = os.path.join(SHM_DIR, name)
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
  try:
    os.ftruncate(fd, size)
    mm = mmap.mmap(fd, size)
  except OSError:
    os.unlink(path)
    raise
  finally:
    os.close(fd)
  segment = _Segment(name, nbytes, mm)
  segment.address = segment.array((1,), np.dtype(np.uint8)).__array_interface__["data"][0]
  return segment


def _release(mm: mmap.mmap) -> None:
  if not mm.closed:
    mm[0] = _Segment.FREE


def _unlinked(value: Any) -> Any:
  """`value`; when it is an array in grain's own shared memory (an array this module did not
  pool), with the segment's name unlinked now, as `_Opener.array` does with its own. grain
  unlinks it when the array is freed, on a thread, and a batch still held at exit (the last
  one) was never unlinked: Python's resource tracker then warned of leaked shared_memory
  objects after the run's last line. The mapping stays valid after the unlink."""
  shm = getattr(value, "shm", None)
  if shm is None or not getattr(value, "_unlink_on_del", False):
    return value
  shm.unlink()  # also tells the resource tracker
  value._unlink_on_del = False  # grain's __del__ now only closes the mapping
  return value


class _Opener:
  """The main process's side: maps segments by name, once each, and makes batch arrays."""

  def __init__(self, tag: str | None):
    self.tag = tag  # None: no pooled segments (grain's own shared memory only)
    self._maps: dict[str, mmap.mmap] = {}

  def array(self, token: Token) -> np.ndarray:
    mm = self._maps.get(token.name)
    if mm is None:
      path = os.path.join(SHM_DIR, token.name)
      fd = os.open(path, os.O_RDWR)
      try:
        mm = mmap.mmap(fd, 0)
      finally:
        os.close(fd)
      os.unlink(path)
      self._maps[token.name] = mm
    array = np.ndarray(token.shape, np.dtype(token.dtype), buffer=mm, offset=PAGE)
    # The array's views and a jax array made from it without a copy hold it (numpy's base chain
    # stops at an array made on a buffer), so the flag clears only when none is left.
    weakref.finalize(array, _release, mm)
    return array

  def open(self, element: Any) -> Any:
    if isinstance(element, dict):
      return {k: self.array(v) if isinstance(v, Token) else _unlinked(v)
              for k, v in element.items()}
    return element

  def sweep(self) -> None:
    """Unlinks this iterator's segments that were never received (the iterator has closed)."""
    if self.tag is None:
      return
    _unlink_quietly(glob.glob(os.path.join(SHM_DIR, f"{PREFIX}{self.tag}-*")))


@contextlib.contextmanager
def both_sides_here() -> Iterator[_Opener]:
  """This process as a pooling worker and as its main process at once (for timing and tests):
  yields the main side's opener; afterwards the process is no worker again and its segments are
  unlinked."""
  global _tag
  tag = new_tag()
  init_worker(tag)
  opener = _Opener(tag)
  try:
    yield opener
  finally:
    _tag = None
    _pool.clear()
    _loose.clear()
    opener.sweep()


class OpenBatches(grain.DatasetIterator):
  """The iterator over a worker-backed iterator's elements with each `Token` replaced by its
  array (`tag` None: no pooled segments) and grain's shared-memory arrays unlinked; closing it
  (or its collection, or the interpreter's exit) unlinks segments never received. Checkpoint
  state is the parent's."""

  def __init__(self, parent: grain.DatasetIterator, tag: str | None):
    super().__init__(parent)
    self._opener = _Opener(tag)
    self._sweep = weakref.finalize(self, _Opener.sweep, self._opener)

  def __next__(self) -> Any:
    return self._opener.open(next(self._parent))

  @property
  def segments(self) -> int:
    """Distinct segments received so far (the workers' pools, as far as this side saw them)."""
    return len(self._opener._maps)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)

  def close(self) -> None:
    super().close()  # stops and joins the workers first: no segment is made after the sweep
    self._sweep()
