"""Where the character LM's step time goes: the whole training step against the same step with
attention replaced by the identity (q, k and the softmax gone, v passed through), for strata and
its PyTorch twin, and strata's attention by XLA's ops with other numbers of causal blocks and by
the compiled CPU kernel (`model.attention_kernel`, which the experiment sets to "cpu").

  python -m benchmarks.lm_ablation [--blocks 2,4,8]

Prints the median ms per step over 7 windows of 5 steps (after 3 warm-up steps).
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import numpy as np

from arch import attention
from train import cli, loop, parallel
from train import config as config_lib


def _config(kernel: str = "cpu"):
  config = config_lib.load("experiments.charlm_transformer")
  config.model.attention_kernel = kernel
  return config


def _median_ms(step, windows: int = 7, per: int = 5) -> float:
  for _ in range(3):
    step()
  times = []
  for _ in range(windows):
    t = time.perf_counter()
    for _ in range(per):
      step()
    times.append((time.perf_counter() - t) / per)
  return 1e3 * statistics.median(times)


def strata_ms(attend, kernel: str = "xla") -> float:
  """strata's jitted step with `attention.dot_product_attention` replaced by `attend`, the model
  built with `model.attention_kernel=kernel`."""
  original = attention.dot_product_attention
  attention.dot_product_attention = attend
  try:
    built = loop.build(_config(kernel))
    state = built.init_state()
    compiled = built.train_step.lower(state, built.example, built.step_rng).compile()
  finally:
    attention.dot_product_attention = original
  batch = parallel.global_batch(next(built.train_pipe.iterator()), built.batch_sharding)

  def step():
    nonlocal state
    state, _ = compiled(state, batch, built.step_rng)
    jax.block_until_ready(state)
  return _median_ms(step)


def torch_ms(identity: bool) -> float:
  import torch.nn.functional as F

  from benchmarks import torch_workloads

  config = _config()
  example = jax.tree.map(np.asarray, loop.build(config).example)
  original = F.scaled_dot_product_attention
  if identity:
    F.scaled_dot_product_attention = lambda q, k, v, is_causal=False: v
  try:
    twin = torch_workloads.build(config, example)
    batch = twin.convert(example)
    return _median_ms(lambda: twin.step(batch))
  finally:
    F.scaled_dot_product_attention = original


def main(argv: list[str] | None = None) -> None:
  parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--blocks", default="4", help="causal block counts, comma-separated")
  args = parser.parse_args(argv)
  try:
    blocks = [int(b) for b in args.blocks.split(",")]
  except ValueError:
    cli.fail(f"--blocks={args.blocks!r}: expected whole numbers separated by commas, e.g. 2,4,8", 2)
  identity = lambda q, k, v, **_: v  # noqa: E731
  rows = [(f"strata, XLA's ops, {b} causal blocks",
           strata_ms(functools.partial(attention.dot_product_attention, causal_blocks=b)))
          for b in blocks]
  rows.append(("strata, CPU kernel", strata_ms(attention.dot_product_attention, "cpu")))
  rows.append(("strata, attention as identity", strata_ms(identity)))
  rows.append(("PyTorch", torch_ms(False)))
  rows.append(("PyTorch, attention as identity", torch_ms(True)))
  print("| charlm_transformer step | ms |\n|---|---|")
  for name, ms in rows:
    print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
  cli.guarded(main)
