"""The model's training pass over K independent slices of the batch, in one compiled step
(`train.xla_cpu_batch_slices`: supervised paradigm, on a mesh of one CPU device).

XLA:CPU runs a step's ops one after another unless they are independent: its executor starts
every op whose inputs are ready, on a pool of one thread per core. A small Transformer's pass
over one batch is one long chain of small ops (about one op at a time on average:
`python -m benchmarks.step_profile`), so most of a 2-core machine idles outside the dots. The
same pass over two slices of the batch is two chains with no edge between them until the
parameter gradients are summed, which the executor runs side by side. Measured with
`python -m benchmarks.step_variants --variants strata,batch_slices_2,batch_slices_4`
(docs/speed_attempts.md, item 10): the character LM 4-13% faster, the diffusion UNet 6-10%
slower; so it is set per experiment (`experiments/charlm_transformer.py`), not by default.
GPUs and TPUs run each op over the whole chip, and their runs are compiled unsliced whatever
the field says (`of_mesh`), as are meshes of several CPU devices.

The outputs are the slices' outputs concatenated, so the loss and every metric see the whole
batch; the gradient is the same sum in another order (equal within float rounding). Dropout
draws slice i's masks from `fold_in(rng, i)`. A model that updates state in training
(BatchNorm's statistics) is refused: each slice would normalise by its own statistics.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from train.errors import ConfigError


def check(slices: int, batch_size: int, paradigm: str) -> None:
  """Raises ConfigError when `train.xla_cpu_batch_slices` cannot split this run's batches."""
  if slices < 1:
    raise ConfigError(f"train.xla_cpu_batch_slices={slices}; expected a count >= 1")
  if slices > 1 and paradigm != "supervised":
    raise ConfigError(f"train.xla_cpu_batch_slices={slices} with paradigm {paradigm!r}; the "
                      "supervised step alone slices its batch: expected 1")
  if batch_size % slices:
    raise ConfigError(f"train.xla_cpu_batch_slices={slices} with data.batch_size={batch_size}; "
                      "expected a count that divides the batch")


def of_mesh(config: Any, mesh: Any) -> int:
  """The slices of the run's training pass: `train.xla_cpu_batch_slices` on a mesh of one CPU
  device, else 1 (a GPU or TPU runs each op over the whole chip, and a batch sharded over
  devices is split already). Read on every mesh: a set field is used."""
  slices = int(config.train.xla_cpu_batch_slices)
  one_cpu = mesh.devices.size == 1 and mesh.devices.flat[0].platform == "cpu"
  return slices if one_cpu else 1


def sliced(fn: Callable[[Any, Any], Any], slices: int, batched: Any, rng: Any = None,
           mutable: Any = False) -> Any:
  """`fn(batched, rng)` as `fn(slice_i, fold_in(rng, i))` over `slices` equal slices along axis
  0 of every array in the pytree `batched` (None leaves pass whole), the outputs' arrays
  concatenated along axis 0. `rng`: a key, a pytree of keys (flax's `rngs`, each folded) or
  None. `slices` 1 calls `fn(batched, rng)`. `mutable`: the collections the model updates in
  training, refused with more than one slice."""
  if slices == 1:
    return fn(batched, rng)
  if mutable:
    raise ConfigError(f"train.xla_cpu_batch_slices={slices} with a model that updates "
                      f"{list(mutable)} in training; expected 1: each slice would normalise by "
                      "its own batch statistics")
  leaves, tree = jax.tree.flatten(batched)
  n = leaves[0].shape[0] // slices
  outs = [fn(jax.tree.unflatten(tree, [x[i * n:(i + 1) * n] for x in leaves]),
             jax.tree.map(lambda key: jax.random.fold_in(key, i), rng)) for i in range(slices)]
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *outs)
