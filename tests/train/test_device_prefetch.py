"""DevicePrefetch: the same batches as its parent, on the devices, with a state that resumes at the
first batch not yet returned whatever the buffer holds."""

from __future__ import annotations

import grain
import jax
import numpy as np
import pytest

from train import parallel
from train.device_prefetch import DevicePrefetch


def _parent(n: int = 12) -> grain.DatasetIterator:
  """Batch i = {"x": rows 4i..4i+3 of a (4n, 2) array, "i": i}; random access, like ours."""
  data = np.arange(8 * n, dtype=np.float32).reshape(4 * n, 2)
  ds = grain.MapDataset.range(n).map(lambda i: {"x": data[4 * i:4 * i + 4],
                                                "i": np.full((4,), i, np.int32)})
  return iter(ds.to_iter_dataset())


@pytest.fixture
def sharding():
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(-1, 1), ("data", "fsdp"))
  return parallel.batch_sharding(mesh)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_same_batches_as_parent(size, sharding):
  got = list(DevicePrefetch(_parent(), size, sharding))
  want = list(_parent())
  assert len(got) == len(want) == 12
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g["x"]), w["x"])
    assert isinstance(g["x"], jax.Array) == (size > 0)


@pytest.mark.parametrize("size", [1, 3])
def test_state_resumes_at_first_unreturned_batch(size, sharding):
  it = DevicePrefetch(_parent(), size, sharding)
  for _ in range(5):
    next(it)
  state = it.get_state()
  # The parent has been drawn `size` batches past what was returned.
  assert it._parent.get_state() != state
  resumed = DevicePrefetch(_parent(), size, sharding)
  resumed.set_state(state)
  rest = [int(np.asarray(b["i"])[0]) for b in resumed]
  assert rest == list(range(5, 12))
  # set_state on a used iterator drops what it had buffered.
  it.set_state(state)
  assert int(np.asarray(next(it)["i"])[0]) == 5


def test_negative_size_is_refused(sharding):
  with pytest.raises(ValueError, match=r"data.device_prefetch=-1; expected an integer >= 0"):
    DevicePrefetch(_parent(), -1, sharding)


def test_the_default_sends_none_ahead_on_cpu_and_two_on_accelerators(monkeypatch):
  import jax

  from train import run
  assert run.device_prefetch(-1) == (0 if jax.default_backend() == "cpu" else 2)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert (run.device_prefetch(-1), run.device_prefetch(0), run.device_prefetch(3)) == (2, 0, 3)
