"""Single ops of the Transformer LM's step on XLA:CPU against PyTorch, at the LM's shapes.

  python -m benchmarks.op_speed [--repeats 50]

Where `benchmarks.step_profile` says where a compiled step's time goes, this times the ops it
names one at a time, each jitted alone with strata's compile options (`train.run.
compiler_options`: no YNNPACK calls) and, when torch is installed, the same op in PyTorch (eager,
its default threads). Shapes are the LM's at batch 32 (4,096 tokens of width 96, MLP width
384, 4 heads of 24, 128 steps), the per-head products of its attention at one query block of 32
and at the whole sequence. Median of `--repeats` calls, in microseconds.

- batched matmuls: the attention's per-(sequence, head) products, 128 of them a call;
- a dense layer's matmul, for comparison (the same rate on both sides);
- the column sum of a (4096, 384) gradient (a bias's): `jnp.sum` over the rows, which XLA:CPU
  computes as a reduce-window tree, the same of the (32, 128, 384) array it comes from in the
  model (jax's gradient of a bias sums over batch and steps: one strided reduce-window), and the
  sum as a product with a vector of ones;
- LayerNorm and GELU (tanh form), forward + backward.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.conv_speed import median_ms, step_options
from train import cli

TOKENS, WIDTH, MLP, HEADS, HEAD, STEPS = 4096, 96, 384, 4, 24, 128
BATCH = TOKENS // STEPS * HEADS  # matrices in a batched attention product


def _normal(*shape: int) -> np.ndarray:
  return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


def _layernorm(x, scale, bias):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias


def cases() -> dict[str, tuple[Callable[..., Any], str, list[np.ndarray]]]:
  """{name: (jax function, PyTorch expression of the same on `a`, `b`, ..., its inputs)}."""
  ones = np.ones(TOKENS, np.float32)
  x, g = _normal(TOKENS, WIDTH), _normal(TOKENS, WIDTH)
  h, gh = _normal(TOKENS, MLP), _normal(TOKENS, MLP)
  scale, bias = np.ones(WIDTH, np.float32), np.zeros(WIDTH, np.float32)

  def layernorm_grad(x, s, b, g):
    return jax.vjp(_layernorm, x, s, b)[1](g)

  def gelu_grad(h, g):
    return jax.vjp(lambda u: jax.nn.gelu(u, approximate=True), h)[1](g)

  def torch_layernorm_grad(x, s, b, g):
    import torch
    x, s, b = (t.detach().requires_grad_() for t in (x, s, b))
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), s, b, 1e-6)
    return torch.autograd.grad(y, (x, s, b), g)

  def torch_gelu_grad(h, g):
    import torch
    h = h.detach().requires_grad_()
    return torch.autograd.grad(torch.nn.functional.gelu(h, approximate="tanh"), h, g)

  bmm = lambda a, b: a @ b  # noqa: E731
  return {
      "logits, one query block: (128, 32, 24) @ (128, 24, 128)":
          (bmm, "bmm", [_normal(BATCH, 32, HEAD), _normal(BATCH, HEAD, STEPS)]),
      "output, one query block: (128, 32, 128) @ (128, 128, 24)":
          (bmm, "bmm", [_normal(BATCH, 32, STEPS), _normal(BATCH, STEPS, HEAD)]),
      "logits, whole sequence: (128, 128, 24) @ (128, 24, 128)":
          (bmm, "bmm", [_normal(BATCH, STEPS, HEAD), _normal(BATCH, HEAD, STEPS)]),
      "dense layer: (4096, 96) @ (96, 384)":
          (bmm, "mm", [x, _normal(WIDTH, MLP)]),
      "column sum of (4096, 384), jnp.sum":
          (lambda a: a.sum(0), "sum", [h]),
      "the same of (32, 128, 384), over its first two axes":
          (lambda a: a.sum((0, 1)), "sum01", [h.reshape(32, STEPS, MLP)]),
      "column sum of (4096, 384), ones @ x":
          (lambda a, o: o @ a, "ones", [h, ones]),
      "LayerNorm (4096, 96), forward + backward":
          (layernorm_grad, torch_layernorm_grad, [x, scale, bias, g]),
      "GELU (4096, 384), forward + backward": (gelu_grad, torch_gelu_grad, [h, gh]),
  }


def torch_op(how: Any, arrays: list[np.ndarray]) -> Callable[[], Any]:
  """A call of case `how` (`cases()`) in PyTorch on copies of `arrays`."""
  import torch

  ts = [torch.from_numpy(a.copy()) for a in arrays]
  if callable(how):
    return lambda: how(*ts)
  return {"bmm": lambda: ts[0] @ ts[1], "mm": lambda: ts[0] @ ts[1],
          "sum": lambda: ts[0].sum(0), "sum01": lambda: ts[0].sum((0, 1)),
          "ones": lambda: ts[1] @ ts[0]}[how]


def _torch_ms(how: Any, arrays: list[np.ndarray], repeats: int) -> float | None:
  try:
    return median_ms(torch_op(how, arrays), repeats)
  except ImportError:
    return None


def measure(repeats: int = 50) -> list[dict[str, Any]]:
  """[{"op", "xla_us", "torch_us" (None without torch)}] for each of `cases()`."""
  options = step_options()
  rows = []
  for name, (f, how, arrays) in cases().items():
    args = [jnp.asarray(a) for a in arrays]
    compiled = jax.jit(f).lower(*args).compile(options)
    xla = median_ms(lambda: compiled(*args), repeats)
    torch_ms = _torch_ms(how, arrays, repeats)
    rows.append({"op": name, "xla_us": 1e3 * xla,
                 "torch_us": None if torch_ms is None else 1e3 * torch_ms})
  return rows


def main(repeats: int) -> None:
  from train import throughput

  print(f"dense float32 matmul: {throughput.matmul_flops(2048, 10) / 1e9:.0f} GFLOP/s")
  print("| op | XLA:CPU us | PyTorch us | XLA / PyTorch |")
  print("|---|---|---|---|")
  for r in measure(repeats):
    t = r["torch_us"]
    ratio = "" if t is None else f"{r['xla_us'] / t:.2f}x"
    torch_us = "(no torch)" if t is None else f"{t:,.0f}"
    print(f"| {r['op']} | {r['xla_us']:,.0f} | {torch_us} | {ratio} |")


if __name__ == "__main__":
  parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=50)
  args = parser.parse_args()
  cli.guarded(lambda: main(args.repeats))
