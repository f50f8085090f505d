"""Where a workload's compiled train step spends its time on XLA:CPU, op by op.

  python -m benchmarks.step_profile --workload charlm_transformer [--steps 10] [--top 15]
                                   [--modules] [--one_pass] [--variant NAME]

Builds the workload (`benchmarks.run.WORKLOADS`: the experiment's full config, as `python -m
train` builds it), compiles its train step, times `--steps` steps, then traces as many with
`jax.profiler` and reads the trace back (`jax.profiler.ProfileData`). Prints:
- the step's wall time, its page faults and CPU time (user, system), and the sum of the XLA
  ops' times over XLA's worker threads (their ratio is how many ops run at once on average);
- the ops grouped by kind (an op's name without its number: `dot`, `transpose_copy_fusion`,
  `wrapped_reduce-window`, ...), with the count per step;
- the `--top` single ops with their output shapes, from the compiled HLO;
- with `--modules`, the op time by the model's module that each op comes from (the flax module
  path in the op's HLO metadata, repeated layers merged: `block*/attn`), forward and backward
  apart; ops XLA made itself (its tree reductions' partial sums) have no source and are one row.
  Ops that run side by side (the LM's two batch slices) share the cores, so their times
  overlap; `--one_pass` profiles such an experiment's step as one pass.
`--variant` profiles one of `benchmarks.step_variants`'s variants of the step instead.
"""

from __future__ import annotations

import collections
import os
import re
import resource
import statistics
import tempfile
import time
from typing import Any, Callable

from absl import flags

from train import cli, huge_pages

# Trace events on XLA's threads that are not ops: the executor's own spans, the thread pool's
# parallel-region markers (one set per region inside an op), and each op's end marker.
NOT_OPS = ("ThunkExecutor", "ThreadpoolListener::", "end: ")


def _ops(path: str) -> dict[str, list[int]]:
  """{op name: [total ns, count]} of the XLA ops on XLA:CPU's worker threads in a trace."""
  import jax

  ops: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for event in line.events:
        if event.name.startswith(NOT_OPS):
          continue
        ops[event.name][0] += event.duration_ns
        ops[event.name][1] += 1
  return ops


def profile(name: str, steps: int = 10, tiny: bool = False, data_dir: str | None = None,
            one_pass: bool = False, variant: str = "strata") -> dict[str, Any]:
  """{"step_ms", "page_faults", "user_ms", "sys_ms" (a step's, the process's CPU time), "ops":
  {name: (ms per step, count per step)}, "shapes": {name: HLO shape}, "sources": {name: the
  op_name of its HLO metadata}} for workload `name`'s train step (its tiny mode with `tiny`;
  with `one_pass`, the training pass unsliced whatever `train.xla_cpu_batch_slices` says;
  `variant`: a `benchmarks.step_variants.VARIANTS` name, its change and compile options)."""
  import glob

  import jax

  from benchmarks import step_variants

  built = step_variants.build(name, variant, tiny, data_dir,
                              {"xla_cpu_batch_slices": 1} if one_pass else None)
  run, state, compiled, batch = built["run"], built["state"], built["step"], built["batch"]

  def step():
    nonlocal state
    state, _ = compiled(state, batch, run.step_rng)
    jax.block_until_ready(state)

  for _ in range(3):
    step()
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  after = resource.getrusage(resource.RUSAGE_SELF)
  # the process's page faults and CPU time over the timed steps (train.huge_pages: a step's
  # temporaries faulted in again every step, 4 KB at a time, without huge pages)
  per_step = {"page_faults": (after.ru_minflt - before.ru_minflt) / steps,
              "user_ms": 1e3 * (after.ru_utime - before.ru_utime) / steps,
              "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / steps}
  with tempfile.TemporaryDirectory() as trace:
    jax.profiler.start_trace(trace)
    for _ in range(steps):
      step()
    jax.profiler.stop_trace()
    ops = _ops(glob.glob(os.path.join(trace, "**", "*.xplane.pb"), recursive=True)[0])
  shapes, sources = {}, {}
  for line in compiled.as_text().splitlines():
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", line)
    if m:
      shapes[m.group(1)] = m.group(2)
      source = re.search(r'op_name="([^"]*)"', line)
      if source:
        sources[m.group(1)] = source.group(1)
  return {"step_ms": 1e3 * statistics.median(times), **per_step,
          "ops": {k: (ns / 1e6 / steps, n / steps) for k, (ns, n) in ops.items()},
          "shapes": shapes, "sources": sources}


def _summed(ops: dict[str, tuple[float, float]], key: Callable[[str], str]
            ) -> dict[str, tuple[float, float]]:
  """`ops` summed by `key(op name)`, largest time first."""
  out: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
  for name, (ms, count) in ops.items():
    k = key(name)
    out[k][0] += ms
    out[k][1] += count
  return dict(sorted(((k, (v[0], v[1])) for k, v in out.items()), key=lambda kv: -kv[1][0]))


def kinds(ops: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
  """`ops` summed by kind (the name without a trailing ".N"), largest time first."""
  return _summed(ops, lambda name: re.sub(r"\.\d+$", "", name))


NO_SOURCE = "(made by XLA: no source)"


def module_of(source: str | None) -> str:
  """'forward ' or 'backward ' and the module path of an op whose HLO metadata names
  `source` (e.g. "jit(step)/transpose(jvp(TransformerLM))/decoder/block1/attn/query/
  dot_general" -> "backward TransformerLM/decoder/block*/attn/query"): the model's name from
  jax's transformation wrappers, then the flax path; the primitive's own name, jitted helpers
  (`jit(_take)`) and einsum specs (`btnh,bsnh->bnts`, the module's own) are dropped, layer
  numbers become "*" so that repeated layers add up.
  Ops outside the model (the loss, the optimizer) are "(step)"."""
  if not source:
    return NO_SOURCE
  parts = []
  for p in source.split("/")[:-1]:
    wrapped = re.fullmatch(r"(?:(?:jvp|transpose|vmap|checkpoint|remat)\()+(\w+)\)+", p)
    if wrapped:
      parts.append(wrapped.group(1))
    elif p and not any(c in p for c in "(),>"):  # not jitted helpers nor einsum specs
      parts.append(re.sub(r"(?<=\D)\d+$", "*", p))
  direction = "backward " if "transpose(" in source else "forward "
  return direction + ("/".join(parts) or "(step)")


def modules(ops: dict[str, tuple[float, float]], sources: dict[str, str]
            ) -> dict[str, tuple[float, float]]:
  """`ops` summed by `module_of` their source, largest time first."""
  return _summed(ops, lambda name: module_of(sources.get(name)))


def report(name: str, result: dict[str, Any], top: int, by_module: bool = False) -> str:
  """Markdown: the step, the kinds that make up 90% of the op time, the `top` single ops;
  with `by_module`, the modules that make up 95% of it."""
  ops = result["ops"]
  total = sum(ms for ms, _ in ops.values())
  lines = [f"{name}: step {result['step_ms']:.1f} ms; XLA ops {total:.1f} ms summed over "
           f"threads ({total / result['step_ms']:.2f} ops at once on average), "
           f"{sum(n for _, n in ops.values()):.0f} ops a step; {result['page_faults']:,.0f} page "
           f"faults and {result['user_ms']:.0f} ms user + {result['sys_ms']:.0f} ms system CPU "
           f"time a step", "",
           "| op kind | ms a step | share of op time | ops a step |", "|---|---|---|---|"]
  shown = 0.0
  for k, (ms, count) in kinds(ops).items():
    if shown > 0.9 * total:
      break
    shown += ms
    lines.append(f"| {k} | {ms:.2f} | {ms / total:.1%} | {count:.0f} |")
  lines += ["", "| op | ms a step | output |", "|---|---|---|"]
  for op, (ms, _) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:top]:
    lines.append(f"| {op} | {ms:.2f} | `{result['shapes'].get(op, '?')[:48]}` |")
  if by_module:
    lines += ["", "| module | ms a step | share of op time | ops a step |", "|---|---|---|---|"]
    shown = 0.0
    for k, (ms, count) in modules(ops, result.get("sources", {})).items():
      if shown > 0.95 * total:
        break
      shown += ms
      lines.append(f"| {k} | {ms:.2f} | {ms / total:.1%} | {count:.0f} |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workload", "charlm_transformer", "A workload of benchmarks.run.")
  flags.DEFINE_integer("steps", 10, "Steps timed, then as many traced.")
  flags.DEFINE_integer("top", 15, "Single ops listed.")
  flags.DEFINE_bool("modules", False, "Also the op time by the model's module.")
  flags.DEFINE_bool("one_pass", False, "The training pass unsliced "
                    "(train.xla_cpu_batch_slices=1), so that per-op times do not overlap.")
  flags.DEFINE_string("variant", "strata", "A variant of benchmarks.step_variants.")


def main(argv: list[str]) -> None:
  from benchmarks.run import WORKLOADS, workload_config
  from train import throughput

  if FLAGS.workload not in WORKLOADS:
    raise ValueError(f"--workload={FLAGS.workload!r}: expected one of {list(WORKLOADS)}")
  from benchmarks.step_variants import VARIANTS

  if FLAGS.variant not in VARIANTS:
    raise ValueError(f"--variant={FLAGS.variant!r}: expected one of {list(VARIANTS)}")
  huge_pages.restart_for([workload_config(FLAGS.workload)], __spec__)  # as `python -m train`
  print(f"dense float32 matmul: {throughput.matmul_flops(2048, 10) / 1e9:.0f} GFLOP/s")
  print(report(FLAGS.workload, profile(FLAGS.workload, FLAGS.steps, one_pass=FLAGS.one_pass,
                                         variant=FLAGS.variant),
               FLAGS.top, FLAGS.modules))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
