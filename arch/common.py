"""Small helpers shared by the model files."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("strata_target",
                                                                   default=None)


def target_platform() -> str:
  """The platform the program being traced will run on ("cpu", "gpu", "tpu"): the one
  `compiling_for` names, else JAX's default backend. The CPU-only rewrites of `arch.conv` and
  `arch.attention` ask this, not `jax.default_backend()`: a TPU program compiled ahead of time on
  a CPU host (`train.aot`) must be traced as a TPU would trace it."""
  return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
  """Traces inside the block are for `platform` (`target_platform`). A function jax traced
  before the block keeps its cached trace: build the functions to compile inside it."""
  token = _TARGET.set(platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


_BATCH: contextvars.ContextVar[Any] = contextvars.ContextVar("strata_batch", default=None)


@contextlib.contextmanager
def batch_sharding(sharding_of: Any) -> Iterator[None]:
  """Inside the block (a train or evaluation step being traced), `constrain_batch` splits an
  activation's rows as `sharding_of(ndim)` says, and with `split_last` also its last dimension
  of size n as `sharding_of(ndim, n)` says (`train.run` sets it over its mesh)."""
  token = _BATCH.set(sharding_of)
  try:
    yield
  finally:
    _BATCH.reset(token)


def constrain_batch(x: Any, split_last: bool = False) -> Any:
  """`x` (B, ...) with its rows split over the devices as the batch is, its other dimensions
  whole on each device (with `split_last`, its last dimension split over the devices that share
  rows where it divides: a decoder's vocabulary-parallel logits), inside `batch_sharding`; `x`
  itself elsewhere. Where a layer's
  parameters are split (FSDP, tensor parallelism), XLA's sharding propagation may otherwise
  carry the parameters' split into the activations and all-gather the batch instead: a decoder
  LM with its embedding split over 16 FSDP devices computed every row on every device (10.5 GB
  of temporaries a chip for 4 sequences of 1024 tokens, 0.68 GB with the batch split)."""
  sharding_of = _BATCH.get()
  if sharding_of is None:
    return x
  return jax.lax.with_sharding_constraint(
      x, sharding_of(x.ndim, x.shape[-1]) if split_last else sharding_of(x.ndim))


def batch_shards() -> int:
  """How many parts the batch's rows are split into over the devices (data x fsdp) inside
  `batch_sharding`; 1 elsewhere (one device, or not tracing a step)."""
  return getattr(_BATCH.get(), "batch_shards", 1)


def constrain_sequence(x: Any, split: bool) -> Any:
  """A Transformer's (B, T, D) activations under sequence parallelism (Megatron-LM's, Korthikanti
  et al. 2022, "Reducing activation recomputation in large transformer models"), when
  `sharding_of.sequence_parallel` says it is on: with `split`, the residual stream between the
  tensor-parallel layers (LayerNorm, dropout, the residual adds, what a scan keeps of each block)
  has its T split over the devices of a tensor group as well, where T divides; without, a
  layer's input is whole along T again (an all-gather), and the sum after a row-parallel layer
  becomes a reduce-scatter instead of an all-reduce. Off: `split` is `constrain_batch` and
  the other is `x`."""
  sharding_of = _BATCH.get()
  if sharding_of is None:
    return x
  if not getattr(sharding_of, "sequence_parallel", False):
    return constrain_batch(x) if split else x
  return jax.lax.with_sharding_constraint(x, sharding_of(x.ndim, seq=x.shape[1] if split else 0))


def check_choice(value: str, options: Sequence[str], field: str) -> None:
  """Raises ValueError naming `model.<field>`, its value and the valid options."""
  if value not in options:
    raise ValueError(f"model.{field}={value!r}; expected one of {list(options)}")


def channels_last(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
  """One example's `shape` with a channel axis: (L,) -> (L, 1) for ndim 1, (H, W) -> (H, W, 1);
  a shape that has one already is returned as is."""
  shape = tuple(shape)
  return shape + (1,) if len(shape) == ndim else shape


# `model.remat_policy`: what the backward pass keeps of a block's forward pass
# (`jax.checkpoint_policies`); everything else is recomputed there. "" keeps everything (no
# rematerialisation); `model.remat=True` is "nothing_saveable", so runs saved with it restore.
REMAT_POLICIES = ("", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_policy(remat: bool, policy: str) -> str:
  """The policy in force for a model's `remat` and `remat_policy` fields (one line naming both
  when they disagree)."""
  check_choice(policy, REMAT_POLICIES, "remat_policy")
  if remat and policy not in ("", "nothing_saveable"):
    raise ValueError(f"model.remat=True with model.remat_policy={policy!r}; model.remat=True "
                     "is the policy 'nothing_saveable': set one of the two")
  return policy or ("nothing_saveable" if remat else "")


def maybe_remat(block: type[nn.Module], remat: bool, static_argnums: tuple[int, ...] = (),
                policy: str = ""):
  """`nn.remat(block, policy=...)` for the model's `remat` and `remat_policy` fields
  (`remat_policy`), else `block` unchanged.

  Rematerialisation (`jax.checkpoint`) keeps only what the policy saves of each block for the
  backward pass and recomputes the rest there: with "nothing_saveable" activation memory falls
  from one set per block to about one block's, for roughly one more forward pass of compute;
  "dots_saveable" keeps the matmul outputs and recomputes the cheap elementwise ops;
  "dots_with_no_batch_dims_saveable" keeps only those with no batch dimension (MaxText's
  "minimal"). Parameter names and values are the same either way, so a checkpoint trained with
  one setting restores into another. `static_argnums` are the positions (self = 0) of
  Python-valued arguments such as `train`.
  """
  name = remat_policy(remat, policy)
  if not name:
    return block
  return nn.remat(block, static_argnums=static_argnums,
                  policy=getattr(jax.checkpoint_policies, name))
