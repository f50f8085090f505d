"""Softmax attention on the CPU as a compiled kernel: `arch/kernels/attention_cpu.cc`, built on
first use with the machine's C++ compiler and called through XLA's FFI (`jax.ffi`).

XLA:CPU computes attention as separate ops, with its small per-head matmuls at about half
PyTorch's speed (docs/speed_attempts.md item 13). The kernel is one custom call for the forward
pass and one for the backward pass, FlashAttention-2's scheme (Dao 2023): each (batch, head)
pair is a task on XLA's intra-op threads, the (T, S) weights never leave the cache, and the
backward pass recomputes them from each query's log-sum-exp. `model.attention_kernel="cpu"`
turns it on (`arch.attention.dot_product_attention`); `python -m benchmarks.attention_speed`
times it.

The build: `$CXX` (default `c++`) with -O3 -march=native against jaxlib's FFI headers, into
`arch/kernels/_build/` (or `$STRATA_KERNEL_DIR`), named by a hash of the sources, the flags,
jaxlib's version and the CPU's feature flags, so that a change to any of them rebuilds. About 3 s
once; a failed build raises `KernelUnavailable` with the compiler's first error line.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).parent / "kernels" / "attention_cpu.cc"  # and cpu_vector.h
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {"strata_attention_forward": "StrataAttentionForward",
            "strata_attention_backward": "StrataAttentionBackward"}
_LOCK = threading.Lock()


class KernelUnavailable(RuntimeError):
  """The kernel could not be built or loaded on this machine (the message says why)."""


def _cpu_flags() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("flags", "Features")):
        return line
  except OSError:
    pass
  return ""


def library_path(compiler: str) -> pathlib.Path:
  """Where the built kernel for this source, compiler, flags, jaxlib and CPU lives."""
  key = hashlib.sha256()
  sources = sorted(SOURCE.parent.glob("*.cc")) + sorted(SOURCE.parent.glob("*.h"))
  for part in (*(f.read_bytes() for f in sources), compiler.encode(), " ".join(FLAGS).encode(),
               jaxlib.__version__.encode(), _cpu_flags().encode()):
    key.update(part)
  root = os.environ.get("STRATA_KERNEL_DIR") or str(SOURCE.parent / "_build")
  return pathlib.Path(root) / f"attention_cpu_{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: pathlib.Path) -> None:
  if shutil.which(compiler) is None:
    raise KernelUnavailable(f"no C++ compiler {compiler!r} (set $CXX) to build {SOURCE.name}")
  # built beside the target and renamed into place: a concurrent build or a failure never
  # leaves a partial library under the target's name
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
  except OSError as e:
    raise KernelUnavailable(f"cannot write the kernel into {target.parent} ({e.strerror}); set "
                            "$STRATA_KERNEL_DIR to a writable folder") from None
  os.close(fd)
  try:
    result = subprocess.run([compiler, *FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE),
                             "-o", partial], capture_output=True, text=True)
    if result.returncode:
      errors = [line for line in result.stderr.splitlines() if "error" in line]
      first = (errors or result.stderr.strip().splitlines() or ["no output"])[0]
      raise KernelUnavailable(f"{compiler} could not build {SOURCE.name}: {first}")
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.unlink(partial)


_OUTCOME: list[KernelUnavailable | None] = []  # [None] once registered, [error] once failed


def _register() -> None:
  compiler = os.environ.get("CXX", "c++")
  target = library_path(compiler)
  if not target.exists():
    _build(compiler, target)
  try:
    library = ctypes.cdll.LoadLibrary(str(target))
  except OSError as e:
    raise KernelUnavailable(f"could not load {target}: {e}") from None
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")


def ensure() -> None:
  """Builds (once per source and machine) and registers the kernel; raises KernelUnavailable
  with the reason when it cannot (again on every call, without trying again)."""
  with _LOCK:
    if not _OUTCOME:
      try:
        _register()
        _OUTCOME.append(None)
      except KernelUnavailable as e:
        _OUTCOME.append(e)
    if _OUTCOME[0] is not None:
      raise KernelUnavailable(str(_OUTCOME[0]))


def _spec(sharding, dims: str, out: str) -> tuple:
  """The mesh axes of `out`'s dimensions from a `dims`-ordered operand's sharding: its batch
  (b) and head (n) axes kept, every other dimension whole."""
  spec = tuple(getattr(sharding, "spec", ())) + (None,) * len(dims)
  axes = {"b": spec[dims.index("b")], "n": spec[dims.index("n")]}
  return tuple(axes.get(d) for d in out)


def _partitioned(name: str, operands: str, results: str, causal: bool):
  """The FFI call `name` as a `custom_partitioning` function: under a mesh each device runs the
  kernel on its own batch rows and heads (the pairs are independent), instead of XLA gathering
  the whole batch onto every device. `operands` and `results`: each array's dimensions, comma
  separated (b batch, t queries, s keys, n heads, h head width)."""
  from jax.experimental.custom_partitioning import custom_partitioning
  from jax.sharding import NamedSharding, PartitionSpec

  ins, outs = operands.split(","), results.split(",")

  def call(*args):
    shapes = []
    for dims in outs:
      size = {d: x.shape[dims_in.index(d)] for x, dims_in in zip(args, ins) for d in dims_in}
      shapes.append(jax.ShapeDtypeStruct(tuple(size[d] for d in dims), jnp.float32))
    return jax.ffi.ffi_call(name, tuple(shapes))(*args, causal=np.int64(causal))

  def shardings(mesh, arg_shapes):
    first = arg_shapes[0].sharding
    spec = lambda dims: PartitionSpec(*_spec(first, ins[0], dims))  # noqa: E731
    return (tuple(NamedSharding(mesh, spec(d)) for d in outs),
            tuple(NamedSharding(mesh, spec(d)) for d in ins))

  def partition(mesh, arg_shapes, result_shape):
    results, args = shardings(mesh, arg_shapes)
    return mesh, call, results, args

  def infer(mesh, arg_shapes, result_shape):
    return shardings(mesh, arg_shapes)[0]

  fn = custom_partitioning(call)
  order = list(dict.fromkeys("".join(ins + outs)))  # factors in order of first appearance
  fn.def_partition(partition, infer_sharding_from_operands=infer,
                   sharding_rule=f"{', '.join(' '.join(d) for d in ins)} -> "
                                 f"{', '.join(' '.join(d) for d in outs)}",
                   need_replication_factors=tuple(d for d in order if d in "tsh"))

  # under jax.vmap, the mapped axis folds into the batch axis (every array's first), which
  # custom_partitioning has no batching rule for
  @jax.custom_batching.custom_vmap
  def batched(*args):
    return fn(*args)

  @batched.def_vmap
  def _(axis_size, in_batched, *args):
    args = [x if b else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, b in zip(args, in_batched)]
    outs = batched(*(x.reshape(-1, *x.shape[2:]) for x in args))
    return (tuple(o.reshape(axis_size, -1, *o.shape[1:]) for o in outs),
            (True,) * len(outs))

  return batched


@functools.cache
def _calls(causal: bool):
  return (_partitioned("strata_attention_forward", "btnh,bsnh,bsnh", "btnh,bnt", causal),
          _partitioned("strata_attention_backward", "btnh,bsnh,bsnh,btnh,bnt,btnh",
                       "btnh,bsnh,bsnh", causal))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, causal: bool) -> jnp.ndarray:
  """softmax(QK^T / sqrt(H)) V of float32 q (B, T, N, H) and k, v (B, S, N, H), each query
  attending to the keys at or before its position where `causal` (then S == T): (B, T, N, H).
  Differentiable in q, k and v; sharded by batch and heads under a mesh. Call `ensure()` first
  (outside jit)."""
  return _calls(causal)[0](q, k, v)[0]


def _attention_fwd(q, k, v, causal):
  out, lse = _calls(causal)[0](q, k, v)
  return out, (q, k, v, out, lse)


def _attention_bwd(causal, residuals, g):
  q, k, v, out, lse = residuals
  return _calls(causal)[1](q, k, v, out, lse, g.astype(jnp.float32))


attention.defvjp(_attention_fwd, _attention_bwd)
