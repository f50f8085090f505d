"""XLA:CPU compiler options on the five benchmark workloads, A/B in one process.

  python -m benchmarks.xla_options [--only charlm_transformer] [--windows 7] [--seconds 2]

Each workload's train step (`benchmarks.run.WORKLOADS`, the experiment's full config built as
`python -m train` builds it) is lowered once and compiled once per variant below; timed windows
then alternate between the variants on the same in-memory batches, so a drift in the machine's
speed touches each alike. Prints, per workload and variant, the median steps/s, the slowest and
fastest window, and the median's ratio to jax's default.

The variants are values of `xla_cpu_experimental_ynn_fusion_type`, which ops XLA:CPU hands to
the YNNPACK library (jax 0.10's default: single dots and reductions) instead of compiling them
itself (Eigen's dots, XLA's own loops); `train.xla_cpu_ynnpack` picks between jax's default and
none for a run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from absl import flags

from train import cli

FLAG = "xla_cpu_experimental_ynn_fusion_type"
# variant name -> compiler options of the step (None: jax's own defaults)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "jax default (YNNPACK dots, reductions)": None,
    "no YNNPACK (strata's default)": {FLAG: ""},
    "YNNPACK reductions only": {FLAG: "LIBRARY_FUSION_TYPE_REDUCE"},
    "YNNPACK dots only": {FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
}


def measure(name: str, windows: int, seconds: float, tiny: bool = False,
            data_dir: str | None = None) -> dict[str, list[float]]:
  """{variant: [steps/s of each window]} for workload `name` (its tiny mode with `tiny`)."""
  import jax

  from benchmarks.run import alternated_windows, workload_config
  from train import loop, parallel

  config = workload_config(name, tiny, data_dir)
  config.train.xla_cpu_ynnpack = True  # the jit's own options: none; each variant sets its own
  run = loop.build(config)
  state = run.init_state()
  rng = run.step_rng
  lowered = run.train_step.lower(state, run.example, rng)
  steps = {v: lowered.compile(compiler_options=o) for v, o in VARIANTS.items()}
  iterator = run.train_pipe.iterator()
  batches = [parallel.global_batch(next(iterator), run.batch_sharding) for _ in range(8)]
  states = {}
  for v, step in steps.items():  # warm-up; each variant trains its own copy of the state
    s = state
    for b in batches[:3]:
      s, _ = step(s, b, rng)
    states[v] = jax.block_until_ready(s)
  t = time.perf_counter()
  jax.block_until_ready(steps[next(iter(steps))](state, batches[0], rng))
  count = max(2, int(seconds / max(time.perf_counter() - t, 1e-6)))

  return alternated_windows(
      {v: lambda s, i, step=step: step(s, batches[i % len(batches)], rng)[0]
       for v, step in steps.items()}, states, windows, count)


def table(results: dict[str, dict[str, list[float]]]) -> str:
  """Markdown: workload, variant, median steps/s (slowest-fastest window), ratio to default."""
  lines = ["| workload | variant | steps/s, median (range) | / jax default |", "|---|---|---|---|"]
  for name, rates in results.items():
    base = statistics.median(next(iter(rates.values())))
    for v, r in rates.items():
      m = statistics.median(r)
      lines.append(f"| {name} | {v} | {m:,.1f} ({min(r):,.1f}-{max(r):,.1f}) | "
                   f"{m / base:.2f}x |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_list("only", None, "Run only these workloads (default all five).")
  flags.DEFINE_integer("windows", 7, "Timed windows per variant.")
  flags.DEFINE_float("seconds", 2.0, "Seconds per window.")


def main(argv: list[str]) -> None:
  from benchmarks.run import WORKLOADS
  from train import progress, throughput

  names = FLAGS.only or list(WORKLOADS)
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown:
    raise ValueError(f"--only {unknown}: expected some of {list(WORKLOADS)}")
  results = {}
  for name in names:
    progress.console(f"[xla_options] {name}")
    results[name] = measure(name, FLAGS.windows, FLAGS.seconds)
    progress.console(table({name: results[name]}))
  print(f"dense float32 matmul: {throughput.matmul_flops(2048, 10) / 1e9:.0f} GFLOP/s")
  print(table(results))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
