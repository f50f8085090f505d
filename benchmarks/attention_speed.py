"""Attention on XLA:CPU: `jax.nn.dot_product_attention` against `arch.attention`'s (XLA's ops and
the compiled kernel of `arch.cpu_attention`), and PyTorch's `scaled_dot_product_attention` when
torch is installed.

  python -m benchmarks.attention_speed

Median time of one forward + backward pass (gradients of q, k and v) at the benchmark workloads'
shapes: the character LM's causal self-attention and the digits UNet's attention over 4 x 4
positions, compiled with strata's options for its steps (`train.run.compiler_options`: no
YNNPACK calls).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from arch import attention
from benchmarks.conv_speed import median_ms, step_options
from train import cli

# name: (B, T, N, H, causal)
SHAPES = {"charlm_transformer (causal)": (32, 128, 4, 24, True),
          "digits_unet (4 x 4 positions)": (64, 16, 4, 16, False)}


def main() -> None:
  options = step_options()
  print("| shape | jax.nn.dot_product_attention | arch.attention, XLA's ops | arch.attention, "
        "CPU kernel | PyTorch SDPA |")
  print("|---|---|---|---|---|")
  for name, (b, t, n, h, causal) in SHAPES.items():
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, g = (jax.random.normal(key, (b, t, n, h)) for key in keys)
    times = []
    for f in (jax.nn.dot_product_attention, attention.dot_product_attention,
              functools.partial(attention.dot_product_attention, kernel="cpu")):
      def fwd_bwd(q, k, v, f=f):
        return jax.vjp(lambda *a: f(*a, is_causal=causal), q, k, v)[1](g)
      step = jax.jit(fwd_bwd).lower(q, k, v).compile(options)
      times.append(median_ms(lambda: jax.block_until_ready(step(q, k, v))))
    try:
      import torch
      import torch.nn.functional as F

      tq, tk, tv = (torch.tensor(np.asarray(a).transpose(0, 2, 1, 3), requires_grad=True)
                    for a in (q, k, v))
      tg = torch.tensor(np.asarray(g).transpose(0, 2, 1, 3))

      def torch_step():
        out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        torch.autograd.grad(out, (tq, tk, tv), tg)
      torch_ms = f"{median_ms(torch_step):.2f}"
    except ImportError:
      torch_ms = "(no torch)"
    print(f"| {name} | {times[0]:.2f} ms | {times[1]:.2f} ms | {times[2]:.2f} ms | {torch_ms} "
          "ms |")


if __name__ == "__main__":
  cli.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
  cli.guarded(main)
