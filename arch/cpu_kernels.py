"""strata's compiled CPU kernels (`arch/kernels/*.cc`): built on first use with the machine's C++
compiler into one library and registered as XLA FFI targets (`jax.ffi`).

- `strata_attention_forward`, `strata_attention_backward` (attention_cpu.cc): softmax attention,
  `arch.cpu_attention`.
- `strata_column_sum` (column_sum_cpu.cc): a gradient summed over its rows, `arch.cpu_dense`.
- `strata_group_norm_*`, `strata_layer_norm_*` (norm_cpu.cc): GroupNorm and LayerNorm, forward
  and backward, `arch.cpu_norm`.
- `strata_adam_update` (adam_cpu.cc): a step's whole Adam/AdamW update, `train.cpu_optimizer`.

`arch.cpu_conv` builds a second library the same way (`load` with its own sources and flags):
`strata_conv` (onednn/conv_onednn.cc), linked against oneDNN from the package index.

The build: `$CXX` (default `c++`) with -O3 -march=native against jaxlib's FFI headers, into
`arch/kernels/_build/` (or `$STRATA_KERNEL_DIR`), named by a hash of the sources, the flags,
jaxlib's version and the CPU's feature flags, so that a change to any of them rebuilds. About 4 s
once; a failed build raises `KernelUnavailable` with the compiler's first error line
(`ensure_for` turns it into the one-line error of the model field that asked).

The calls share their rules: `partitioned` (which mesh axes each array keeps, and the all-reduce
of partial sums) and `vmapped` (the mapped axis folded into the batch, or one call per index).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import jaxlib

KERNELS = pathlib.Path(__file__).parent / "kernels"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
# FFI target -> the library's symbol
TARGETS = {"strata_attention_forward": "StrataAttentionForward",
           "strata_attention_backward": "StrataAttentionBackward",
           "strata_column_sum": "StrataColumnSum",
           "strata_group_norm_forward": "StrataGroupNormForward",
           "strata_group_norm_backward": "StrataGroupNormBackward",
           "strata_layer_norm_forward": "StrataLayerNormForward",
           "strata_layer_norm_backward": "StrataLayerNormBackward",
           "strata_adam_update": "StrataAdamUpdate"}


class KernelUnavailable(RuntimeError):
  """The kernels could not be built or loaded on this machine (the message says why)."""


def sources() -> list[pathlib.Path]:
  """The kernels' C++ sources, compiled together into one library."""
  return sorted(KERNELS.glob("*.cc"))


def _cpu_flags() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("flags", "Features")):
        return line
  except OSError:
    pass
  return ""


def library_path(compiler: str, files: Sequence[pathlib.Path] | None = None,
                 extra: Sequence[str] = (), name: str = "strata_cpu") -> pathlib.Path:
  """Where the built library for these sources (`sources()` unless `files`), compiler, flags
  (`FLAGS` and `extra`), jaxlib and CPU lives."""
  key = hashlib.sha256()
  files = sources() if files is None else list(files)
  for part in (*(f.read_bytes() for f in files + sorted(KERNELS.glob("*.h"))),
               compiler.encode(), " ".join((*FLAGS, *extra)).encode(),
               jaxlib.__version__.encode(), _cpu_flags().encode()):
    key.update(part)
  root = os.environ.get("STRATA_KERNEL_DIR") or str(KERNELS / "_build")
  return pathlib.Path(root) / f"{name}_{key.hexdigest()[:16]}.so"


def build(compiler: str, target: pathlib.Path, files: Sequence[pathlib.Path] | None = None,
          extra: Sequence[str] = ()) -> None:
  """Compiles `files` (`sources()` unless given) with `FLAGS` and `extra` (include folders,
  libraries) into the library `target`; raises KernelUnavailable with the first error line."""
  files = sources() if files is None else list(files)
  if shutil.which(compiler) is None:
    raise KernelUnavailable(f"no C++ compiler {compiler!r} (set $CXX) to build the CPU kernels "
                            "in arch/kernels")
  # built beside the target and renamed into place: a concurrent build or a failure never
  # leaves a partial library under the target's name
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
  except OSError as e:
    raise KernelUnavailable(f"cannot write the kernels into {target.parent} ({e.strerror}); set "
                            "$STRATA_KERNEL_DIR to a writable folder") from None
  os.close(fd)
  try:
    result = subprocess.run([compiler, *FLAGS, "-isystem", jax.ffi.include_dir(),
                             *map(str, files), *extra, "-o", partial], capture_output=True,
                            text=True)
    if result.returncode:
      errors = [line for line in result.stderr.splitlines() if "error" in line]
      first = (errors or result.stderr.strip().splitlines() or ["no output"])[0]
      raise KernelUnavailable(f"{compiler} could not build the CPU kernels: {first}")
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.unlink(partial)


def load(name: str, files: Sequence[pathlib.Path], extra: Sequence[str],
         targets: dict[str, str]) -> None:
  """Builds `files` with `extra` flags into the library `name` (unless this machine has it),
  loads it and registers its `targets` (FFI target -> symbol); KernelUnavailable if it cannot."""
  compiler = os.environ.get("CXX", "c++")
  target = library_path(compiler, files, extra, name)
  if not target.exists():
    build(compiler, target, files, extra)
  try:
    library = ctypes.cdll.LoadLibrary(str(target))
  except OSError as e:
    raise KernelUnavailable(f"could not load {target}: {e}") from None
  for ffi_name, symbol in targets.items():
    jax.ffi.register_ffi_target(ffi_name, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")


def registered_once(register: Callable[[], None]) -> Callable[[], None]:
  """An `ensure()` that runs `register` once (under a lock) and raises its KernelUnavailable
  again on every later call, without trying again."""
  lock = threading.Lock()
  outcome: list[KernelUnavailable | None] = []  # [None] once registered, [error] once failed

  def ensure() -> None:
    with lock:
      if not outcome:
        try:
          register()
          outcome.append(None)
        except KernelUnavailable as e:
          outcome.append(e)
      if outcome[0] is not None:
        raise KernelUnavailable(str(outcome[0]))
  return ensure


# Builds (once per source and machine) and registers the kernels above; raises KernelUnavailable
# with the reason when it cannot.
ensure = registered_once(lambda: load("strata_cpu", sources(), (), TARGETS))


def ensure_for(field: str, section: str = "model", error: type[Exception] = ValueError,
               value: str = "cpu", check: Callable[[], None] | None = None) -> None:
  """`check()` (default `ensure()`) for a config that sets `<section>.<field>=value`: its failure
  as one `error` line naming the field, the reason and the way out."""
  try:
    (check or ensure)()
  except KernelUnavailable as e:
    raise error(f"{section}.{field}={value!r}: {e}; expected a machine that builds it, or "
                f"{section}.{field}='xla'") from None


def partitioned(call: Callable, operands: str, results: str, kept: str) -> Callable:
  """`call(*arrays)` (an FFI call) as a `custom_partitioning` function, so that under a mesh each
  device runs the kernel on its own block instead of XLA gathering whole arrays onto every
  device. `operands`, `results`: each array's dimensions as letters, comma separated. The first
  operand's mesh axes of the `kept` letters stay on every array that has them; every other
  dimension is whole. A result without a kept dimension that the operands are split along is the
  sum of the devices' results (a psum over those axes: a parameter gradient's partial sums)."""
  from jax.experimental.custom_partitioning import custom_partitioning
  from jax.sharding import NamedSharding, PartitionSpec

  ins, outs = operands.split(","), results.split(",")
  single = len(outs) == 1

  def axes(arg_shapes) -> dict[str, Any]:
    spec = tuple(getattr(arg_shapes[0].sharding, "spec", ())) + (None,) * len(ins[0])
    return {d: spec[ins[0].index(d)] for d in kept if d in ins[0]}

  def shardings(mesh, split: dict[str, Any], arrays: list[str]) -> tuple:
    return tuple(NamedSharding(mesh, PartitionSpec(*(split.get(d) for d in dims)))
                 for dims in arrays)

  def partition(mesh, arg_shapes, result_shape):
    split = axes(arg_shapes)

    def lower(*args):
      out = call(*args)
      out = (out,) if single else out
      summed = []
      for o, dims in zip(out, outs):
        names = tuple(n for d, a in split.items() if d not in dims and a is not None
                      for n in (a if isinstance(a, tuple) else (a,)))
        summed.append(jax.lax.psum(o, names) if names else o)
      return summed[0] if single else tuple(summed)
    results_ = shardings(mesh, split, outs)
    return mesh, lower, results_[0] if single else results_, shardings(mesh, split, ins)

  def infer(mesh, arg_shapes, result_shape):
    results_ = shardings(mesh, axes(arg_shapes), outs)
    return results_[0] if single else results_

  fn = custom_partitioning(call)
  letters = list(dict.fromkeys("".join(ins + outs)))  # factors in order of first appearance
  fn.def_partition(partition, infer_sharding_from_operands=infer,
                   sharding_rule=f"{', '.join(' '.join(d) for d in ins)} -> "
                                 f"{', '.join(' '.join(d) for d in outs)}",
                   reduction_factors=tuple(d for d in kept if not any(d in o for o in outs)),
                   need_replication_factors=tuple(d for d in letters if d not in kept))
  return fn


def vmapped(fn: Callable, batch_led: Sequence[bool], fold: bool) -> Callable:
  """`fn` (of arrays, returning a tuple) with a vmap rule, which custom_partitioning lacks. With
  `fold`, where every mapped operand is batch-led (`batch_led`: its first axis is the batch),
  the mapped axis is folded into the batch (an unmapped batch-led operand broadcast first) and
  out of every result again (all batch-led); otherwise one call per index (`jax.lax.map`), which
  keeps results such as parameter gradients per mapped example."""
  @jax.custom_batching.custom_vmap
  def mapped(*args):
    return fn(*args)

  @mapped.def_vmap
  def _(axis_size, in_batched, *args):
    if fold and all(led or not b for led, b in zip(batch_led, in_batched)):
      args = [jnp.broadcast_to(a, (axis_size, *a.shape)) if led and not b else a
              for a, led, b in zip(args, batch_led, in_batched)]
      outs = mapped(*(a.reshape(-1, *a.shape[2:]) if led else a
                      for a, led in zip(args, batch_led)))
      return tuple(o.reshape(axis_size, -1, *o.shape[1:]) for o in outs), (True,) * len(outs)
    full = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, b in zip(args, in_batched)]
    outs = jax.lax.map(lambda a: mapped(*a), full)
    return outs, (True,) * len(outs)

  return mapped
