"""`optim.kernel="cpu"`: a train step's whole optimizer update as one compiled CPU call.

`optim.make`'s Adam and AdamW chains (clipping by the global norm, weight decay on the arrays of
`optim.decay_mask`, the moments, the learning-rate schedule), the parameters' update, their
exponential moving average and the logged norms run in one XLA FFI call over every parameter
array (`strata_adam_update`, arch/kernels/adam_cpu.cc) instead of five to eight small XLA ops an
array. It halves the first compile of the UNet's and the LM's steps; the UNet's step itself is
no faster (docs/cpu_optimizer.md).

The optimizer state is optax's own (the chain's `ScaleByAdamState` and `ScaleByScheduleState`),
so checkpoints move between the kernel and optax either way. The scalars (bias corrections, the
learning rate, the average's weight) are computed here as optax computes them, and each
element's operations run in optax's order; the rounding can differ where the compiler fuses a
multiply and an add that XLA did not, and in the clipping's global norm (float64 partials summed
in another order). On GPU and TPU `train.optim.apply` computes with optax instead.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arch import cpu_kernels
from train.errors import ConfigError

KERNELS = ("xla", "cpu")


class Applied(NamedTuple):
  """A step's optimizer update: the new parameters, optimizer state and average (None without
  one) and the norms {grad, update, param: the global L2 norm of each tree}, the gradients' before
  clipping."""
  params: Any
  opt_state: Any
  average: Any
  norms: dict[str, jax.Array]


def check(config: Any) -> None:
  """`optim.kernel` and the settings the "cpu" kernel covers.

  Raises:
    ConfigError: a kernel other than "xla" or "cpu", or "cpu" with an optimizer other than adam
      or adamw, gradient accumulation, frozen parameters, LoRA, a bfloat16 first moment or
      pruned weights kept at zero (`init_from.prune`).
  """
  o = config.optim
  kernel = o.get("kernel", "xla")
  if kernel not in KERNELS:
    raise ConfigError(f"optim.kernel={kernel!r}; expected one of {KERNELS}")
  if kernel == "xla":
    return
  why = None
  if o.name not in ("adam", "adamw"):
    why = f"optim.name={o.name!r} (it computes adam and adamw)"
  elif o.grad_accum_steps > 1:
    why = f"optim.grad_accum_steps={o.grad_accum_steps} (it updates on every step)"
  elif tuple(o.get("freeze", ())):
    why = f"optim.freeze={tuple(o.freeze)} (it updates every parameter)"
  elif int(o.get("lora", {}).get("rank", 0)) > 0:
    why = f"optim.lora.rank={o.lora.rank} (it updates every parameter)"
  elif o.get("mu_dtype", "float32") != "float32":
    why = f"optim.mu_dtype={o.mu_dtype!r} (it keeps float32 moments)"
  elif config.get("init_from", {}).get("prune", 0.0):
    why = f"init_from.prune={config.init_from.prune} (it does not keep pruned weights at zero)"
  if why:
    raise ConfigError(f"optim.kernel='cpu' with {why}; expected optim.kernel='xla' for this "
                      "optimizer")


def _states(opt_state: Any) -> tuple[int, int]:
  """The chain's positions of its ScaleByAdamState and ScaleByScheduleState."""
  adam = [i for i, s in enumerate(opt_state) if isinstance(s, optax.ScaleByAdamState)]
  sched = [i for i, s in enumerate(opt_state) if isinstance(s, optax.ScaleByScheduleState)]
  if len(adam) != 1 or len(sched) != 1:
    raise ConfigError("optim.kernel='cpu' needs optim.make's adam chain; its state is "
                      f"{type(opt_state).__name__} of {[type(s).__name__ for s in opt_state]}")
  return adam[0], sched[0]


def _float32(tree: Any, what: str) -> None:
  dtypes = {str(x.dtype) for x in jax.tree.leaves(tree) if x.dtype != jnp.float32}
  if dtypes:
    raise ConfigError(f"optim.kernel='cpu' updates float32 arrays; the {what} have {dtypes}: "
                      "expected float32 parameters, or optim.kernel='xla'")


def update(optim_config: Any, schedule: optax.Schedule, grads: Any, opt_state: Any,
           params: Any, decay: Any, average: Any = None,
           average_weight: jax.Array | None = None) -> Applied:
  """One step of `optim.make(optim_config, ...)`'s optimizer (whose schedule is `schedule`) on
  `params` given `grads`, and of the average (`average_weight` w: average <- w average + (1 - w)
  new params; `train.state.average_weight`), as one call of the CPU kernel. `decay`: a tree of
  bools like `params`, True where weight decay applies (`optim.decay_mask`).

  Raises:
    ConfigError: arrays other than float32, or no compiler to build the kernel with.
  """
  o = optim_config
  _float32(params, "parameters")
  _float32(grads, "gradients")
  a, s = _states(opt_state)
  adam, sched = opt_state[a], opt_state[s]
  count = optax.safe_increment(adam.count)
  b1, b2 = float(o.b1), float(o.b2)
  # as optax: (1 - decay) rounded once from Python's float; 1 - decay ** count in float32
  one_minus = [np.float32(1 - b1), np.float32(1 - b2)]
  w = jnp.zeros((), jnp.float32) if average_weight is None else average_weight
  hyper = jnp.stack([
      jnp.float32(b1), one_minus[0], jnp.float32(b2), one_minus[1], jnp.float32(o.eps),
      jnp.float32(0.0), (1 - b1 ** count).astype(jnp.float32),
      (1 - b2 ** count).astype(jnp.float32), jnp.asarray(-1 * schedule(sched.count), jnp.float32),
      w, 1.0 - w])
  leaves, treedef = jax.tree.flatten(params)
  groups = [grads, params, adam.mu, adam.nu] + ([average] if average is not None else [])
  operands = [jax.tree.leaves(t) for t in groups]  # each in params' order
  mask = [int(m) for m in jax.tree.leaves(decay)]
  cpu_kernels.ensure_for("kernel", section="optim", error=ConfigError)
  results = jax.ffi.ffi_call(
      "strata_adam_update",
      [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves] * (len(operands) - 1)
      + [jax.ShapeDtypeStruct((3,), jnp.float32)])(
          hyper, *(x for group in operands for x in group),
          max_norm=np.float32(o.clip_norm), weight_decay=np.float32(o.weight_decay),
          decoupled=np.int64(o.name == "adamw"), average=np.int64(average is not None),
          decay=np.asarray(mask, np.int64))
  n = len(leaves)
  new = [treedef.unflatten(results[i * n:(i + 1) * n]) for i in range(len(operands) - 1)]
  norms = results[-1]
  state = list(opt_state)
  state[a] = adam._replace(count=count, mu=new[1], nu=new[2])
  state[s] = sched._replace(count=optax.safe_increment(sched.count))
  return Applied(new[0], type(opt_state)(state), new[3] if average is not None else None,
                 {"grad": norms[0], "update": norms[1], "param": norms[2]})

