"""The device mesh and shardings: one code path for one CPU and a pod.

A `Mesh` with axes ("data", "fsdp", "tensor"); batches are sharded over data and fsdp (each
device holds B / (data * fsdp) rows; the devices of a tensor group see the same rows). Each array
of the train state is laid out by the first rule whose regular expression matches its path
(`params/encoder/block0/attn/query/kernel`, and the optimizer's moments of it):

1. `sharding.rules`, the config's own (regex, spec) pairs, in order;
2. with `mesh.tensor > 1`, `TENSOR_RULES`: Megatron's split of the Transformer blocks (the
   attention heads and the MLP's hidden dimension over "tensor", the other dimension over
   "fsdp"), so a block costs one all-reduce in each direction;
3. with `mesh.tensor > 1`, `VOCAB_RULE` where it divides: the output layer's columns over
   "tensor" (a decoder's vocabulary-parallel logits);
4. else the default: replicated, or with `mesh.fsdp > 1` sharded over "fsdp" along the largest
   divisible dimension.

A spec is a tuple with one entry per dimension, the last ones when shorter (so the same rules fit
a scanned model's stacked blocks): a mesh axis, a tuple of axes, or None. Host-local
batches become global arrays with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from train import optim
from train.errors import ConfigError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch's rows; "tensor" devices share theirs

# Megatron-LM's tensor parallelism for arch.transformer's blocks (encoder, decoder LM, ViT):
# query/key/value (D, heads, head_dim) and their biases split by head, the output projection
# (heads, head_dim, D) by head; the MLP's first kernels (D, F) by column (SwiGLU's gate too),
# its second (F, D) by row. Grouped-query attention splits its key/value heads the same way, so
# `model.num_kv_heads` must divide by `mesh.tensor` (the rule's check says so in one line).
TENSOR_RULES: tuple[tuple[str, tuple], ...] = (
    (r"attn/(query|key|value)/kernel$", ("fsdp", "tensor", None)),
    (r"attn/(query|key|value)/bias$", ("tensor", None)),
    (r"attn/out/kernel$", ("tensor", None, "fsdp")),
    (r"mlp_(in|gate)/kernel$", ("fsdp", "tensor")),
    (r"mlp_(in|gate)/bias$", ("tensor",)),
    (r"mlp_out/kernel$", ("tensor", "fsdp")),
)
# With tensor parallelism, a model's output layer split by column over "tensor" where its
# width divides (a decoder LM's vocabulary: Megatron's vocabulary-parallel output layer), so the
# devices of a tensor group each compute a share of the logits instead of all of them; where it
# does not divide (a 10-class head) the default rule lays it out.
VOCAB_RULE: tuple[str, tuple] = (r"(^|/)head/kernel$", ("fsdp", "tensor"))
# Arrays smaller than this stay replicated under FSDP: sharding them saves nothing.
FSDP_MIN_SIZE = 2 ** 12


def make_mesh(mesh_config, devices: list | None = None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh over `devices` (default: all of this job's). Devices of
  several TPU slices (multi-slice) get the data axis across the slices, over the data-centre
  network, and the other axes within each slice (MaxText's `dcn_data_parallelism`): FSDP's
  all-gathers and the tensor axis's all-reduces stay on the fast links. Raises ValueError if the
  sizes do not fit."""
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  fsdp, tensor = mesh_config.fsdp, mesh_config.get("tensor", 1)
  data = mesh_config.data if mesh_config.data != -1 else n // (fsdp * tensor)
  if data * fsdp * tensor != n:
    raise ValueError(f"mesh.data={mesh_config.data} x mesh.fsdp={fsdp} x mesh.tensor={tensor} "
                     f"does not cover the {n} devices; set mesh.data=-1 to use all devices left "
                     "over")
  # Auto axes: the compiler propagates shardings through model code written without them.
  types = (AxisType.Auto,) * 3
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  if slices > 1:
    if data % slices:
      raise ValueError(f"mesh.data={data} over {slices} slices: the data axis spans the slices, "
                       f"so it must be a multiple of {slices}")
    grid = mesh_utils.create_hybrid_device_mesh((data // slices, fsdp, tensor), (slices, 1, 1),
                                                devices=devices)
    return Mesh(grid, AXES, axis_types=types)
  return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=types, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def activation_sharding(mesh: Mesh, sequence_parallel: bool = False) -> Any:
  """`sharding_of(ndim, last=0, seq=0)` for `arch.common.batch_sharding`: an activation of
  `ndim` dimensions with its rows split as the batch is; `last` > 0, the size of its last
  dimension, also splits that over "tensor" where it divides (vocabulary-parallel logits, beside
  `VOCAB_RULE`'s output layer); `seq` > 0, the size of its second dimension (a sequence), splits
  that over "tensor" where it divides (`sharding.sequence_parallel`, which the function carries
  as its attribute `sequence_parallel` for `arch.common.constrain_sequence`). Its attribute
  `batch_shards` is the number of parts the rows are split into (`arch.common.batch_shards`)."""
  tensor = mesh.shape["tensor"]

  def sharding_of(ndim: int, last: int = 0, seq: int = 0) -> NamedSharding:
    if ndim == 1:
      return NamedSharding(mesh, P(BATCH_AXES))
    split_last = "tensor" if last and tensor > 1 and last % tensor == 0 else None
    split_seq = "tensor" if seq and tensor > 1 and seq % tensor == 0 else None
    middle = (split_seq,) + (None,) * (ndim - 3) if ndim > 2 else ()
    return NamedSharding(mesh, P(BATCH_AXES, *middle, split_last))
  sharding_of.sequence_parallel = sequence_parallel and tensor > 1
  sharding_of.batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  return sharding_of


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _default_spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def path_name(path: tuple) -> str:
  """A tree path as the rules see it: `params/encoder/block0/attn/query/kernel`."""
  return optim.path_name(path)


def rules_of(mesh_config, sharding_config) -> tuple[tuple[str, tuple], ...]:
  """The rules in force: the config's `sharding.rules`, then `TENSOR_RULES` when
  `mesh.tensor > 1`."""
  own = tuple((str(r), tuple(s)) for r, s in (sharding_config.get("rules", ()) or ()))
  return own + (TENSOR_RULES if mesh_config.get("tensor", 1) > 1 else ())


def _check_rule(i: int, rule: tuple[str, tuple], name: str, shape: tuple[int, ...],
                mesh: Mesh) -> P:
  regex, spec = rule
  where = f"sharding rule {i} ({regex!r}, {spec!r}) on {name} {shape}"
  if len(spec) > len(shape):
    raise ConfigError(f"{where}: {len(spec)} entries for {len(shape)} dimensions")
  # A spec names the last dimensions: a scanned model's stacked layer axis comes first.
  spec = (None,) * (len(shape) - len(spec)) + tuple(spec)
  for dim, entry in enumerate(spec):
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    unknown = [a for a in axes if a not in mesh.shape]
    if unknown:
      raise ConfigError(f"{where}: no mesh axis {unknown[0]!r}; expected one of {list(AXES)} "
                        "or None")
    size = math.prod(mesh.shape[a] for a in axes)
    if shape[dim] % size:
      raise ConfigError(f"{where}: dimension {dim} of size {shape[dim]} is not divisible by "
                        f"{'x'.join(axes)}={size}; change the rule or the mesh")
  return P(*spec)


def state_shardings(mesh: Mesh, abstract_state: Any,
                    rules: tuple[tuple[str, tuple], ...] = ()) -> Any:
  """Shardings for every leaf of a state: the first of `rules` whose regex matches the leaf's
  path (`path_name`, searched), else with a tensor axis `VOCAB_RULE` where it divides, else the
  default FSDP rule (module docstring).

  Raises:
    ConfigError: a rule with an unknown axis, more entries than dimensions, or an axis that does
      not divide its dimension (one line naming the rule, the array and its shape).
  """
  fsdp = mesh.shape["fsdp"]
  compiled = [(i, re.compile(r), (r, s)) for i, (r, s) in enumerate(rules)]
  vocab = re.compile(VOCAB_RULE[0])

  def one(path, x):
    name, shape = path_name(path), tuple(x.shape)
    for i, pattern, rule in compiled:
      if pattern.search(name):
        return NamedSharding(mesh, _check_rule(i, rule, name, shape, mesh))
    if mesh.shape["tensor"] > 1 and vocab.search(name):
      try:
        return NamedSharding(mesh, _check_rule(len(rules), VOCAB_RULE, name, shape, mesh))
      except ConfigError:
        pass  # the width does not divide: the default layout
    return NamedSharding(mesh, _default_spec(shape, fsdp))

  return jax.tree_util.tree_map_with_path(one, abstract_state)


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