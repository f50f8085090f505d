"""The device mesh and shardings: one code path for one CPU and a pod.

A `Mesh` with axes ("data", "fsdp"); batches are sharded over both axes (each device holds
B / (data * fsdp) rows); parameters are replicated, or with `mesh.fsdp > 1` sharded over "fsdp"
along their largest divisible axis. Host-local batches become global arrays with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: sharding them saves nothing.
FSDP_MIN_SIZE = 2 ** 12


def make_mesh(mesh_config, devices: list | None = None) -> Mesh:
  """A ("data", "fsdp") mesh over `devices` (default: all of this job's). Devices of several
  TPU slices (multi-slice) get the data axis across the slices, over the data-centre network,
  and both axes within each slice (MaxText's `dcn_data_parallelism`): FSDP's all-gathers stay on
  the fast links. Raises ValueError if the sizes do not fit."""
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  fsdp = mesh_config.fsdp
  data = mesh_config.data if mesh_config.data != -1 else n // fsdp
  if data * fsdp != n:
    raise ValueError(f"mesh.data={mesh_config.data} x mesh.fsdp={fsdp} does not cover the {n} "
                     "devices; set mesh.data=-1 to use all devices left over")
  # Auto axes: the compiler propagates shardings through model code written without them.
  types = (AxisType.Auto,) * 2
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  if slices > 1:
    if data % slices:
      raise ValueError(f"mesh.data={data} over {slices} slices: the data axis spans the slices, "
                       f"so it must be a multiple of {slices}")
    grid = mesh_utils.create_hybrid_device_mesh((data // slices, fsdp), (slices, 1),
                                                devices=devices)
    return Mesh(grid, AXES, axis_types=types)
  return jax.make_mesh((data, fsdp), AXES, axis_types=types, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
  """Shardings for every leaf of a state: FSDP rule for arrays, replicated scalars."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, _param_spec(tuple(x.shape), fsdp)),
                      abstract_state)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
  """This process's rows of a batch -> global arrays sharded over the mesh.

  With one process the numpy batch is returned as is: a jitted function with `in_shardings`
  places it itself, measured 0.16 ms per MNIST-1D batch against 0.6 ms for
  `make_array_from_process_local_data` (which multi-process runs need).
  """
  if jax.process_count() == 1:
    return batch
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def device_bytes(tree: Any) -> int:
  """One device's bytes of a tree of arrays or ShapeDtypeStructs, from each leaf's shard shape
  under its sharding (the whole shape when it has none). Works before any array exists, so the
  memory check (`train/memory.py`) and the layout of a live state count alike."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def bytes_per_device(tree: Any) -> dict[str, int]:
  """How a tree of (sharded) arrays is laid out: `total`, its logical bytes; `sharded` and
  `replicated`, the logical bytes of the leaves split across devices and of those copied whole;
  `per_device`, the bytes one device holds (`device_bytes`)."""
  total = sharded = 0
  for leaf in jax.tree.leaves(tree):
    total += leaf.nbytes
    if not leaf.sharding.is_fully_replicated:
      sharded += leaf.nbytes
  return {"total": int(total), "sharded": int(sharded), "replicated": int(total - sharded),
          "per_device": int(device_bytes(tree))}