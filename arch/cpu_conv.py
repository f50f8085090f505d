"""2-D convolutions on the CPU by oneDNN (`model.conv_kernel="onednn"`): the forward pass, the
input gradient and the kernel gradient each one XLA FFI call (`arch/kernels/onednn/
conv_onednn.cc`) into oneDNN's blocked direct-convolution kernels, the library behind PyTorch's
CPU convolutions. XLA:CPU packs patches for Eigen's matrix multiply instead, 1.4-1.9x oneDNN's
time at the UNet's sizes (docs/cpu_conv.md).

oneDNN comes from the package index (`onednn-cpu-gomp`, its headers `onednn-devel-cpu-gomp`,
dependencies of strata on x86-64 Linux); the call is built once per machine like the other
kernels (`arch.cpu_kernels`), linked against that library. Where either is missing, or on
another CPU, a run that sets the field says so in one line.

`OneDnnConv` is flax's `nn.Conv` (the same parameters and outputs) computing through
`conv_general_dilated`, which takes float32, channels-last 2-D convolutions without dilation or
feature groups, at any strides and padding; every other case (and every backend but the CPU)
goes to `arch.conv.conv_general_dilated`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pathlib
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arch import common, cpu_kernels
from arch import conv as conv_lib

CONV_KERNELS = ("xla", "onednn")
SOURCE = cpu_kernels.KERNELS / "onednn" / "conv_onednn.cc"
# the oneDNN release the call is built against (its library and its headers)
ONEDNN = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp", "2023.2.0")


def _located(distribution: str, suffix: str) -> pathlib.Path:
  """The installed file of `distribution` whose path ends with `suffix`."""
  install = (f"pip install {ONEDNN[0]}=={ONEDNN[2]} {ONEDNN[1]}=={ONEDNN[2]}")
  try:
    dist = importlib.metadata.distribution(distribution)
  except importlib.metadata.PackageNotFoundError:
    raise cpu_kernels.KernelUnavailable(f"oneDNN is not installed ({distribution} missing; "
                                        f"{install})") from None
  for f in dist.files or ():
    if str(f).endswith(suffix):
      return pathlib.Path(dist.locate_file(f)).resolve()
  raise cpu_kernels.KernelUnavailable(f"{distribution} has no {suffix} ({install})")


def _register() -> None:
  library = _located(ONEDNN[0], "libdnnl.so.3")
  header = _located(ONEDNN[1], "oneapi/dnnl/dnnl.hpp")
  extra = ("-fopenmp", "-isystem", str(header.parents[2]), str(library),
           f"-Wl,-rpath,{library.parent}")
  cpu_kernels.load("strata_onednn", [SOURCE], extra, {"strata_conv": "StrataConv"})


# Builds (once per machine) and registers the oneDNN call; raises KernelUnavailable with the
# reason when it cannot.
ensure = cpu_kernels.registered_once(_register)


Pads = tuple[tuple[int, int], tuple[int, int]]
# pass: (its number in the call, the operands' and the result's dimensions, whether vmap folds the
# mapped axis into the batch (else one call per index: the kernel gradient stays per example))
_PASSES = {"forward": (0, "bhwc,klco", "bpqo", True),
           "input_gradient": (1, "bpqo,klco", "bhwc", True),
           "kernel_gradient": (2, "bhwc,bpqo", "klco", False)}


@functools.cache
def _call(name: str, strides: tuple[int, int], pads: Pads, result: tuple[int, ...]) -> Callable:
  """(a, b) -> (out,), the FFI call of pass `name` (`_PASSES`): out (B, *result) with B the
  batch of `a` (as split by a mesh, or folded with a mapped axis), or `result` itself for the
  kernel gradient; split along the batch (a kernel gradient's partial sums added over it)."""
  number, ins, outs, fold = _PASSES[name]
  attrs = dict(sh=strides[0], sw=strides[1], ph0=pads[0][0], ph1=pads[0][1], pw0=pads[1][0],
               pw1=pads[1][1], **{"pass": number})

  def run(a, b):
    shape = result if name == "kernel_gradient" else (a.shape[0], *result)
    return jax.ffi.ffi_call("strata_conv", jax.ShapeDtypeStruct(shape, jnp.float32))(
        a, b, **{k: np.int64(v) for k, v in attrs.items()})

  split = cpu_kernels.partitioned(run, ins, outs, kept="b")
  return cpu_kernels.vmapped(lambda a, b: (split(a, b),), batch_led=(True, not fold), fold=fold)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
  """float32 x (N, H, W, C) convolved with w (KH, KW, C, O) at `strides`, zero-padded by `pads`
  ((low, high) of each spatial axis): y (N, OH, OW, O), as `jax.lax.conv_general_dilated` with
  ("NHWC", "HWIO", "NHWC"). Call `ensure()` first (outside jit)."""
  out = conv_lib._out_sizes(x.shape[1:3], w.shape[:2], strides, pads)
  return _call("forward", strides, pads, (*out, w.shape[3]))(x, w)[0]


def _conv2d_fwd(x, w, strides, pads):
  return conv2d(x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, residuals, dy):
  x, w = residuals
  dy = dy.astype(jnp.float32)
  return (_call("input_gradient", strides, pads, x.shape[1:])(dy, w)[0],
          _call("kernel_gradient", strides, pads, w.shape)(x, dy)[0])


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """`jax.lax.conv_general_dilated`: by `conv2d` (oneDNN) for float32 channels-last 2-D
  convolutions on the CPU without dilation or groups, otherwise `arch.conv`'s."""
  nd = lhs.ndim - 2
  if (common.target_platform() == "cpu" and nd == 2 and lhs.dtype == rhs.dtype == jnp.float32
      and feature_group_count == 1 and batch_group_count == 1 and preferred_element_type is None
      and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
      and conv_lib._channels_last(dimension_numbers, lhs.ndim)):
    cpu_kernels.ensure_for("conv_kernel", value="onednn", check=ensure)
    strides = tuple(int(s) for s in window_strides)
    pads = conv_lib._explicit_pads(padding, lhs.shape[1:-1], rhs.shape[:2], strides, (1, 1))
    return conv2d(lhs, rhs, strides, tuple((int(lo), int(hi)) for lo, hi in pads))
  return conv_lib.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                       rhs_dilation, dimension_numbers, feature_group_count,
                                       batch_group_count, precision, preferred_element_type)


class OneDnnConv(nn.Conv):
  """`flax.linen.Conv` computed by `conv_general_dilated` (same parameters and outputs)."""
  conv_general_dilated: Any = staticmethod(conv_general_dilated)


def conv_layer(kernel: str) -> Any:
  """The convolution class for `model.conv_kernel` (`CONV_KERNELS`): `arch.conv.Conv` for "xla",
  `OneDnnConv` (the same constructor arguments and parameters) for "onednn"."""
  common.check_choice(kernel, CONV_KERNELS, "conv_kernel")
  return OneDnnConv if kernel == "onednn" else conv_lib.Conv
