"""Training-speed benchmark of one workload per paradigm, measured the same way for each.

  python -m benchmarks.run [--quick] [--only mnist1d_cnn,digits_unet] [--out benchmarks/results]
                           [--notorch]

Each workload is an experiment file's full config, built by `train.loop.build` exactly as
`python -m train` builds it. For each, the report gives:
- compile: seconds to lower and compile the jitted train step;
- steps/s: the median over timed windows (after warm-up) of steady-state training steps per
  second, fed by the real grain pipeline, and fed from batches already on the device; their
  ratio is the input pipeline's overhead. The kinds of window alternate, each round in a rotated
  order, so a drift in the machine's speed touches all alike;
- FLOPs per step from XLA's cost analysis of the compiled step, the achieved FLOP/s (in-memory
  rate), and that as a fraction of this machine's dense float32 matmul rate (a 1024 x 1024 x
  1024 jitted matmul, median of repeats), the figure the training records' MFU divides by:
  kept beside the CLI's compilation cache (`train.throughput.cpu_matmul_flops`), measured
  again at the start of each benchmark run, and the faster of the two kept;
- memory: XLA's buffer sizes for the step (arguments + outputs + temporaries) and the
  process's peak resident set so far;
- PyTorch (`benchmarks/torch_workloads.py`, needs the `bench` extra): the same model, batch,
  loss and optimizer written in eager PyTorch, built in this process, checked to have strata's
  parameter count, and timed on the same in-memory batches in windows interleaved with strata's
  (each round: strata in memory, strata pipeline, PyTorch), so the ratio strata / PyTorch is
  measured side by side.
Writes OUT/benchmark.json and OUT/benchmark.md, and prints the table.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any, Callable

from absl import flags

from train import cli, huge_pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# workload -> (experiment file, paradigm shown in the table)
WORKLOADS = {
    "mnist1d_cnn": ("mnist1d_cnn", "supervised"),
    "charlm_transformer": ("charlm_transformer", "supervised, sequence"),
    "digits_vae": ("digits_vae", "reconstruction"),
    "digits_dcgan": ("digits_dcgan", "adversarial"),
    "digits_unet": ("digits_ddpm", "denoising diffusion"),
}


def matmul_flops(n: int = 1024, repeats: int = 20) -> float:
  """This machine's dense float32 matmul rate in FLOP/s (`train.throughput.matmul_flops`)."""
  from train import throughput

  return throughput.matmul_flops(n, repeats)


def alternated_windows(steps: dict[str, Callable[[Any, int], Any]], states: dict[str, Any],
                       windows: int, count: int) -> dict[str, list[float]]:
  """{variant: [steps/s of each window]}: each round, every variant in turn runs
  `steps[v](state, i) -> state` for i < `count` from its own state (`states[v]`, updated), so
  that a drift of the machine's speed touches every variant alike."""
  import jax

  rates: dict[str, list[float]] = {v: [] for v in steps}
  for _ in range(windows):
    for v, step in steps.items():
      s = states[v]
      t = time.perf_counter()
      for i in range(count):
        s = step(s, i)
      jax.block_until_ready(s)
      rates[v].append(count / (time.perf_counter() - t))
      states[v] = s
  return rates


def workload_config(name: str, tiny: bool = False, data_dir: str | None = None) -> Any:
  """Workload `name`'s experiment config (its tiny mode with `tiny`), in `data_dir` if given."""
  from train import config as config_lib

  config = config_lib.load(os.path.join(ROOT, "experiments", f"{WORKLOADS[name][0]}.py")
                           + (":tiny" if tiny else ""))
  if data_dir:
    config.data.data_dir = data_dir
  return config


def _cost(compiled) -> float:
  from train import throughput

  return throughput.step_flops(compiled)


def measure(name: str, quick: bool = False, tiny: bool = False, data_dir: str | None = None,
            windows: int | None = None, window_seconds: float | None = None,
            torch: bool = True) -> dict[str, Any]:
  """The module docstring's measurements for workload `name` (its tiny mode with `tiny`);
  `torch=False` leaves out the PyTorch side.

  Raises:
    ImportError: `torch` without PyTorch installed.
    ValueError: the PyTorch twin's parameter count differs from strata's.
  """
  import jax
  import numpy as np

  from train import loop, parallel

  experiment, paradigm = WORKLOADS[name]
  config = workload_config(name, tiny, data_dir)
  windows = windows or (3 if quick else 7)
  window_seconds = window_seconds or (1.0 if quick else 4.0)

  run = loop.build(config)
  state = run.init_state()
  rng = run.step_rng
  t = time.perf_counter()
  step = run.train_step.lower(state, run.example, rng).compile()
  compile_s = time.perf_counter() - t
  flops = _cost(step)
  memory = step.memory_analysis()
  xla_bytes = (None if memory is None else int(memory.argument_size_in_bytes
                                               + memory.output_size_in_bytes
                                               + memory.temp_size_in_bytes))

  iterator = run.train_pipe.iterator()
  put = lambda b: parallel.global_batch(b, run.batch_sharding)  # noqa: E731
  host_batches = [next(iterator) for _ in range(8)]
  in_memory = [put(b) for b in host_batches]
  for b in in_memory[:3]:  # warm-up
    state, metrics = step(state, b, rng)
  jax.block_until_ready(state)
  t = time.perf_counter()
  state, metrics = step(state, in_memory[0], rng)
  jax.block_until_ready(state)
  steps = max(3, int(window_seconds / max(time.perf_counter() - t, 1e-6)))
  params = sum(int(np.size(p)) for p in jax.tree.leaves(state.params))

  twin = None
  if torch:
    twin, torch_batches, torch_first_s, torch_steps = _torch_side(
        config, host_batches, params, window_seconds)

  def window(source: str) -> float:
    nonlocal state
    if source == "torch":
      t = time.perf_counter()
      for i in range(torch_steps):
        twin.step(torch_batches[i % len(torch_batches)])
      return torch_steps / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(steps):
      batch = in_memory[i % len(in_memory)] if source == "memory" else put(next(iterator))
      state, _ = step(state, batch, rng)
    jax.block_until_ready(state)
    return steps / (time.perf_counter() - t)

  rates: dict[str, list[float]] = {"memory": [], "pipeline": []}
  if twin is not None:
    rates["torch"] = []
  # each round in another order (rotated), so that no source always follows the same one (the
  # LM's in-memory windows, always right after PyTorch's, had run 0.8-1.0x the pipeline's)
  sources = list(rates)
  for i in range(windows):
    for source in sources[i % len(sources):] + sources[:i % len(sources)]:
      rates[source].append(window(source))
  memory_rate = statistics.median(rates["memory"])
  pipeline_rate = statistics.median(rates["pipeline"])
  torch_fields: dict[str, Any] = {}
  if twin is not None:
    import torch as torch_lib

    torch_rate = statistics.median(rates["torch"])
    torch_fields = {
        "torch_version": torch_lib.__version__, "torch_threads": torch_lib.get_num_threads(),
        "torch_parameters": twin.parameters, "torch_first_step_s": torch_first_s,
        "torch_steps_per_window": torch_steps, "steps_per_s_torch": torch_rate,
        "speedup_vs_torch": memory_rate / torch_rate}
  return {
      "workload": name, "experiment": experiment, "paradigm": paradigm, "parameters": params,
      "batch_size": int(config.data.batch_size), "compile_s": compile_s,
      "steps_per_window": steps, "windows": windows,
      "steps_per_s_pipeline": pipeline_rate, "steps_per_s_in_memory": memory_rate,
      "pipeline_overhead": 1.0 - pipeline_rate / memory_rate,
      "flops_per_step": flops, "flops_per_s": flops * memory_rate,
      "xla_step_bytes": xla_bytes,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "rates": rates, **torch_fields,
  }


def _torch_side(config: Any, host_batches: list[Any], params: int,
                window_seconds: float) -> tuple[Any, list[Any], float, int]:
  """The PyTorch twin of `config` on the same batches: (twin, its batches, seconds of its first
  step, steps per timed window). Checks the parameter count against strata's `params`."""
  try:
    from benchmarks import torch_workloads
  except ImportError as e:
    raise ImportError(f"the PyTorch side of the benchmark needs torch ({e}): pip install -e "
                      "'.[bench]', or run with --notorch") from e
  import jax
  import numpy as np

  host = [jax.tree.map(np.asarray, b) for b in host_batches]
  twin = torch_workloads.build(config, host[0], seed=int(config.seed))
  if twin.parameters != params:
    raise ValueError(f"model.name={config.model.name!r}: the PyTorch twin has {twin.parameters:,}"
                     f" parameters, strata's model {params:,}; the comparison needs the same "
                     "model")
  batches = [twin.convert(b) for b in host]
  t = time.perf_counter()
  twin.step(batches[0])
  first = time.perf_counter() - t
  for b in batches[1:3]:  # warm-up
    twin.step(b)
  t = time.perf_counter()
  twin.step(batches[0])
  steps = max(3, int(window_seconds / max(time.perf_counter() - t, 1e-6)))
  return twin, batches, first, steps


def markdown(rows: list[dict[str, Any]], peak: float) -> str:
  """The table of `rows` (from `measure`); PyTorch columns when the rows have them."""
  torch = all("steps_per_s_torch" in r for r in rows)
  head = ("| workload | paradigm | parameters | batch | compile | steps/s (pipeline) | "
          "steps/s (in memory) | pipeline overhead | ")
  if torch:
    head += "PyTorch steps/s | strata / PyTorch | "
  head += "GFLOP/step | GFLOP/s | of matmul rate | XLA step buffers |"
  lines = [f"Dense float32 matmul rate of this machine: {peak / 1e9:.1f} GFLOP/s.", "", head,
           "|" + "---|" * (head.count(" | ") + 1)]
  for r in rows:
    buffers = "–" if r["xla_step_bytes"] is None else f"{r['xla_step_bytes'] / 2**20:.1f} MiB"
    line = (f"| {r['workload']} | {r['paradigm']} | {r['parameters']:,} | {r['batch_size']} | "
            f"{r['compile_s']:.2f} s | {r['steps_per_s_pipeline']:,.1f} | "
            f"{r['steps_per_s_in_memory']:,.1f} | {100 * r['pipeline_overhead']:.1f}% | ")
    if torch:
      line += f"{r['steps_per_s_torch']:,.1f} | {r['speedup_vs_torch']:.2f}x | "
    lines.append(line + f"{r['flops_per_step'] / 1e9:.3f} | {r['flops_per_s'] / 1e9:.1f} | "
                 f"{100 * r['flops_per_s'] / peak:.1f}% | {buffers} |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_bool("quick", False, "Shorter windows and fewer repeats (under 5 minutes).")
  flags.DEFINE_list("only", None, "Run only these workloads.")
  flags.DEFINE_string("out", os.path.join("benchmarks", "results"), "Output directory.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default the config's).")
  flags.DEFINE_bool("torch", True, "Time the PyTorch twin of each workload beside strata's.")


def main(argv: list[str]) -> None:
  from train import compilation_cache, files, progress

  names = FLAGS.only or list(WORKLOADS)
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown:
    raise ValueError(f"--only {unknown}: expected some of {list(WORKLOADS)}")
  # train.huge_pages, as `python -m train` runs those experiments: the whole process (the other
  # workloads and the PyTorch twins too) restarts with it when one of them sets it
  huge_pages.restart_for([workload_config(n, data_dir=FLAGS.data_dir) for n in names], __spec__)
  # the rate the training records divide by (measured once per machine, kept beside the CLI's
  # default compilation cache), so this table's share and their MFU share a denominator
  from train import throughput
  peak = throughput.cpu_matmul_flops(compilation_cache.DEFAULT_COMPILATION_CACHE, refresh=True)
  rows = []
  for name in names:
    progress.console(f"[benchmark] {name}")
    rows.append(measure(name, quick=FLAGS.quick, data_dir=FLAGS.data_dir, torch=FLAGS.torch))
    progress.console(markdown(rows[-1:], peak).splitlines()[-1])
  text = markdown(rows, peak)
  os.makedirs(FLAGS.out, exist_ok=True)
  files.write_json_atomic(os.path.join(FLAGS.out, "benchmark.json"), {
      "matmul_flops_per_s": peak, "quick": FLAGS.quick, "workloads": rows})
  files.write_text_atomic(os.path.join(FLAGS.out, "benchmark.md"), text + "\n")
  print(text)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
