"""strata's compiled CPU kernels (`arch/kernels/*.cc`): built on first use with the machine's C++
compiler into one library and registered as XLA FFI targets (`jax.ffi`).

- `strata_attention_forward`, `strata_attention_backward` (attention_cpu.cc): softmax attention,
  `arch.cpu_attention`.
- `strata_column_sum` (column_sum_cpu.cc): a gradient summed over its rows, `arch.cpu_dense`.
- `strata_group_norm_*`, `strata_layer_norm_*` (norm_cpu.cc): GroupNorm and LayerNorm, forward
  and backward, `arch.cpu_norm`.

The build: `$CXX` (default `c++`) with -O3 -march=native against jaxlib's FFI headers, into
`arch/kernels/_build/` (or `$STRATA_KERNEL_DIR`), named by a hash of the sources, the flags,
jaxlib's version and the CPU's feature flags, so that a change to any of them rebuilds. About 4 s
once; a failed build raises `KernelUnavailable` with the compiler's first error line.
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

import jax
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
           "strata_layer_norm_backward": "StrataLayerNormBackward"}
_LOCK = threading.Lock()


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


def library_path(compiler: str) -> pathlib.Path:
  """Where the built library for these sources, compiler, flags, jaxlib and CPU lives."""
  key = hashlib.sha256()
  for part in (*(f.read_bytes() for f in sources() + sorted(KERNELS.glob("*.h"))),
               compiler.encode(), " ".join(FLAGS).encode(), jaxlib.__version__.encode(),
               _cpu_flags().encode()):
    key.update(part)
  root = os.environ.get("STRATA_KERNEL_DIR") or str(KERNELS / "_build")
  return pathlib.Path(root) / f"strata_cpu_{key.hexdigest()[:16]}.so"


def _build(compiler: str, target: pathlib.Path) -> None:
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
                             *map(str, sources()), "-o", partial], capture_output=True, text=True)
    if result.returncode:
      errors = [line for line in result.stderr.splitlines() if "error" in line]
      first = (errors or result.stderr.strip().splitlines() or ["no output"])[0]
      raise KernelUnavailable(f"{compiler} could not build the CPU kernels: {first}")
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
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)),
                                platform="cpu")


def ensure() -> None:
  """Builds (once per source and machine) and registers the kernels; raises KernelUnavailable
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
