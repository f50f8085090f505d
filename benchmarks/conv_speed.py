"""XLA:CPU's convolutions against `arch.conv`'s rewrite and PyTorch's, one layer at a time.

  python -m benchmarks.conv_speed
  python -m benchmarks.conv_speed --training     # strided convolutions in training only

For convolutions of the benchmark workloads (shapes from digits_dcgan, digits_vae, digits_unet
and mnist1d_cnn), the median time of the forward pass, the input gradient and the kernel
gradient, each jitted on its own with the XLA options of strata's steps, with `jax.lax`, with
`arch.conv` (the same as `jax.lax` at stride 1), with oneDNN (`arch.cpu_conv`, the 2-D
convolutions, where oneDNN is installed) and, when torch is installed, with PyTorch (NCHW, eager,
the same shapes and FLOPs).

Then "strided convolutions in training": for strided layers of the workloads and larger ones, one
jitted forward pass with both gradients (what a training step computes), with `arch.conv`'s
strided convolution as XLA's convolutions and as products with the patch matrix (im2col), timed in
turns; the rows say the layer's size and which of the two `arch.conv`'s bounds (`IM2COL_*`) pick,
and the forward pass alone each way (what evaluation runs: XLA's convolution, undifferentiated).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from arch import conv, cpu_conv, cpu_kernels
from train import cli

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
# name: (input shape, kernel shape, "conv" (strided) or "transpose", stride, padding)
LAYERS = {
    "digits_dcgan D conv1 (128,4,4,64) k4 s2": ((128, 4, 4, 64), (4, 4, 64, 128), "conv", 2,
                                                 ((1, 1), (1, 1))),
    "digits_dcgan D conv0 (128,8,8,1) k4 s2": ((128, 8, 8, 1), (4, 4, 1, 64), "conv", 2,
                                                ((1, 1), (1, 1))),
    "digits_dcgan G deconv0 (64,2,2,128) k4 s2": ((64, 2, 2, 128), (4, 4, 128, 64), "transpose",
                                                   2, "SAME"),
    "digits_dcgan G deconv1 (64,4,4,64) k4 s2": ((64, 4, 4, 64), (4, 4, 64, 1), "transpose", 2,
                                                  "SAME"),
    "digits_vae deconv0 (64,2,2,64) k3 s2": ((64, 2, 2, 64), (3, 3, 64, 32), "transpose", 2,
                                              "SAME"),
    "digits_unet down0_pool (64,8,8,32) k3 s2": ((64, 8, 8, 32), (3, 3, 32, 32), "conv", 2,
                                                  "SAME"),
    "mnist1d_cnn conv1 (100,19,25) k3 s2": ((100, 19, 25), (3, 25, 25), "conv", 2, ((1, 1),)),
    "digits_unet up1_upsample (64,8,8,64) k3 s1": ((64, 8, 8, 64), (3, 3, 64, 64), "conv", 1,
                                                    "SAME"),
    "digits_unet up1_block0 conv0 (64,4,4,128) k3 s1": ((64, 4, 4, 128), (3, 3, 128, 64), "conv",
                                                         1, "SAME"),
}


# Strided layers in training: name: (input shape, kernel shape, stride, padding).
TRAINING = {
    "mnist1d_cnn conv0 (100,40,1) k5 s2": ((100, 40, 1), (5, 1, 25), 2, ((1, 1),)),
    "mnist1d_cnn conv1 (100,19,25) k3 s2": ((100, 19, 25), (3, 25, 25), 2, ((1, 1),)),
    "mnist1d_cnn conv2 (100,10,25) k3 s2": ((100, 10, 25), (3, 25, 25), 2, ((1, 1),)),
    "digits_vae enc conv0 (64,8,8,1) k3 s2": ((64, 8, 8, 1), (3, 3, 1, 32), 2, "SAME"),
    "digits_vae enc conv1 (64,4,4,32) k3 s2": ((64, 4, 4, 32), (3, 3, 32, 64), 2, "SAME"),
    "digits_dcgan D conv0 (128,8,8,1) k4 s2": ((128, 8, 8, 1), (4, 4, 1, 64), 2, ((1, 1), (1, 1))),
    "digits_dcgan D conv1 (128,4,4,64) k4 s2": ((128, 4, 4, 64), (4, 4, 64, 128), 2,
                                                 ((1, 1), (1, 1))),
    "digits_unet down0_pool (64,8,8,32) k3 s2": ((64, 8, 8, 32), (3, 3, 32, 32), 2, "SAME"),
    "RGB 32x32 (64,32,32,3) k4 s2": ((64, 32, 32, 3), (4, 4, 3, 64), 2, ((1, 1), (1, 1))),
    "(64,14,14,16) k3 s2": ((64, 14, 14, 16), (3, 3, 16, 32), 2, ((1, 1), (1, 1))),
    "1x1 projection (32,32,32,64) s2": ((32, 32, 32, 64), (1, 1, 64, 128), 2, "VALID"),
    "1-D (100,40,16) k3 s2": ((100, 40, 16), (3, 16, 32), 2, ((1, 1),)),
    "(32,8,8,32) k3 s2": ((32, 8, 8, 32), (3, 3, 32, 32), 2, "SAME"),
    "gray (128,28,28,1) k3 s2": ((128, 28, 28, 1), (3, 3, 1, 32), 2, ((1, 1), (1, 1))),
    "RGB (128,64,64,3) k4 s2": ((128, 64, 64, 3), (4, 4, 3, 64), 2, ((1, 1), (1, 1))),
    "1-D (64,512,64) k3 s2": ((64, 512, 64), (3, 64, 128), 2, ((1, 1),)),
    "cifar ResNet (32,32,32,64) k3 s2": ((32, 32, 32, 64), (3, 3, 64, 128), 2, ((1, 1), (1, 1))),
    "(128,28,28,32) k3 s2": ((128, 28, 28, 32), (3, 3, 32, 64), 2, ((1, 1), (1, 1))),
}


def training_rows(options: dict[str, str] | None, rounds: int = 5) -> None:
  """The "strided convolutions in training" table: forward and both gradients, XLA's
  convolutions against im2col, medians of `rounds` interleaved timings; and the forward pass
  alone each way (what an evaluation would run)."""
  print("| layer | multiply-adds | patch matrix elements | picked | convolutions ms | im2col ms "
        "| speed-up | forward alone: convolution ms | im2col ms |")
  print("|---|---|---|---|---|---|---|---|---|")
  default = conv.IM2COL_MACS, conv.IM2COL_ELEMENTS
  for name, (xs, ws, s, pad) in TRAINING.items():
    nd = len(xs) - 2
    x = jax.random.normal(jax.random.key(0), xs)
    w = jax.random.normal(jax.random.key(1), ws)
    y = lax.conv_general_dilated(x, w, (s,) * nd, pad, dimension_numbers=SPECS[nd])
    g = jax.random.normal(jax.random.key(2), y.shape)
    pads = tuple(conv._explicit_pads(pad, xs[1:-1], ws[:nd], (s,) * nd, (1,) * nd))
    picked = "im2col" if conv._use_im2col(x, w, (s,) * nd, pads) else "convolutions"
    compiled = {}
    for way, bound in (("convolutions", 0), ("im2col", 1 << 62)):
      conv.IM2COL_MACS = conv.IM2COL_ELEMENTS = bound  # read when traced, each traced afresh
      compiled[way] = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(conv.conv_general_dilated(
          x, w, (s,) * nd, pad, dimension_numbers=SPECS[nd]) * g), (0, 1))).lower(
              x, w).compile(options)
      # the forward pass alone: XLA's convolution (undifferentiated) or the patch product
      compiled[way + " forward"] = jax.jit(
          lambda x, w: conv._strided_fwd(x, w, (s,) * nd, pads, None)[0]).lower(
              x, w).compile(options)
    conv.IM2COL_MACS, conv.IM2COL_ELEMENTS = default
    times = {way: [] for way in compiled}
    for _ in range(rounds):
      for way, c in compiled.items():
        times[way].append(median_ms(lambda c=c: c(x, w), repeats=20))
    a, fa, b, fb = (statistics.median(times[way]) for way in compiled)
    elements = y.size // y.shape[-1] * (w.size // w.shape[-1])
    print(f"| {name} | {elements * ws[-1] / 1e6:.1f}M | {elements:,} | {picked} | {a:.3f} | "
          f"{b:.3f} | {a / b:.2f}x | {fa:.3f} | {fb:.3f} |")


def torch_times(xs: tuple, ws: tuple, kind: str, s: int) -> tuple[float, float, float] | None:
  """PyTorch's forward, input-gradient and kernel-gradient times for the layer, or None."""
  try:
    import torch
    import torch.nn.functional as F
  except ImportError:
    return None
  nd = len(xs) - 2
  k = ws[0]
  x = torch.randn((xs[0], xs[-1]) + tuple(xs[1:-1]))
  if kind == "conv":
    w = torch.randn((ws[-1], ws[-2]) + tuple(ws[:nd]))
    f = getattr(F, f"conv{nd}d")
    op = lambda x, w: f(x, w, stride=s, padding=(k - 1) // 2 if s == 1 else 1)  # noqa: E731
  else:  # output = s * input, as SAME
    w = torch.randn((ws[-2], ws[-1]) + tuple(ws[:nd]))
    f = getattr(F, f"conv_transpose{nd}d")
    op = lambda x, w: f(x, w, stride=s, padding=1, output_padding=k % 2)  # noqa: E731

  def fwd():
    with torch.no_grad():
      op(x, w)

  def grad(wrt: int):
    a, b = x.detach().requires_grad_(wrt == 0), w.detach().requires_grad_(wrt == 1)
    return lambda: torch.autograd.grad(op(a, b).square().sum(), (a, b)[wrt])
  return median_ms(fwd), median_ms(grad(0)), median_ms(grad(1))


def step_options() -> dict[str, str] | None:
  """The XLA options of strata's compiled CPU steps (`train.run.compiler_options` of the default
  config: no YNNPACK calls), for timing single ops as the steps compile them."""
  from train import config as config_lib
  from train import run

  return run.compiler_options(config_lib.base(), "cpu")


def median_ms(f, repeats: int = 50) -> float:
  jax.block_until_ready(f())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f())
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def main(training: bool = False) -> None:
  options = step_options()
  if training:
    training_rows(options)
    return
  try:
    cpu_conv.ensure()
    onednn = True
  except cpu_kernels.KernelUnavailable as e:
    print(f"(no oneDNN rows: {e})")
    onednn = False
  print("| layer | implementation | forward ms | input gradient ms | kernel gradient ms |")
  print("|---|---|---|---|---|")
  for name, (xs, ws, kind, s, pad) in LAYERS.items():
    x = jax.random.normal(jax.random.key(0), xs)
    w = jax.random.normal(jax.random.key(1), ws)
    nd = len(xs) - 2
    impls = {
        "jax.lax": (lambda x, w: lax.conv_general_dilated(x, w, (s,) * nd, pad,
                                                          dimension_numbers=SPECS[nd]))
        if kind == "conv" else (lambda x, w: lax.conv_transpose(x, w, (s,) * nd, pad)),
        "arch.conv": (lambda x, w: conv.conv_general_dilated(x, w, (s,) * nd, pad,
                                                             dimension_numbers=SPECS[nd]))
        if kind == "conv" else (lambda x, w: conv.conv_transpose(x, w, (s,) * nd, pad)),
    }
    if kind == "conv" and s == 1:
      del impls["arch.conv"]  # it is jax.lax's convolution at stride 1
    if kind == "conv" and nd == 2 and onednn:
      impls["oneDNN (arch.cpu_conv)"] = lambda x, w: cpu_conv.conv_general_dilated(
          x, w, (s,) * nd, pad, dimension_numbers=SPECS[nd])
    for impl, f in impls.items():
      fns = (f, lambda x, w, f=f: jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), 0)(x, w),
             lambda x, w, f=f: jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), 1)(x, w))
      compiled = [jax.jit(g).lower(x, w).compile(options) for g in fns]
      print(f"| {name} | {impl} | " + " | ".join(
          f"{median_ms(lambda c=c: c(x, w)):.3f}" for c in compiled) + " |")
    theirs = torch_times(xs, ws, kind, s)
    if theirs is not None:
      print(f"| {name} | PyTorch | " + " | ".join(f"{t:.3f}" for t in theirs) + " |")
  print()
  training_rows(options)


if __name__ == "__main__":
  parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--training", action="store_true",
                      help="only the table of strided convolutions in training")
  args = parser.parse_args()
  cli.guarded(lambda: main(args.training))
