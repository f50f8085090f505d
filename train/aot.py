"""Will it fit, and how fast should it go? A run compiled for a TPU slice it does not have.

    python -m train --config experiments/imagenet_resnet50.py --dry_run --topology v5e-16

compiles the run's real init, train step and evaluation step for the slice's abstract devices
(`train.topology`, through libtpu on this CPU host) over the run's mesh and global batch, with no
dataset on disk (`data.abstract`), and reports per chip: parameters, optimizer state, batch,
temporaries and their total against the chip's HBM; the step's FLOPs; the step time the TPU
compiler's cost model estimates, and from it examples/s (tokens/s) and MFU; the compile times.
A run that does not fit is refused with one line naming the fixes, as on the devices themselves
(`train.memory`).

The estimate is checked before it is printed. The cost model's `optimal_seconds` has come out
shifted by whole seconds on some programs (about -1.0 per `ConcatBitcast` in the optimised HLO),
so it is compared with the roofline bound, max(FLOPs / peak, HBM bytes / bandwidth, bytes sent
to other chips / interconnect bandwidth; `train.hlo.collectives` reads the last from the compiled
program): an estimate below the bound cannot be, and the bound is reported instead, saying which
term binds. The cost model counts a loop body once: a scanned stack's FLOPs and HBM bytes are
scaled by the unrolled model's counts (`train.run.scan_cost_factors`); any other loop of the
program is named beside the FLOPs. The collectives count each loop's trips themselves.

The compile runs in a child process (`in_child`): libtpu aborts the whole process when one of
its internal checks fails, and the parent turns that into one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import jax
import ml_collections as mlc

from arch import common as arch_common
from data import abstract as data_abstract
from train import hlo, memory, throughput, topology
from train.errors import CompilerError
from train.run import Run, build, global_costs, scan_cost_factors

CHILD = "STRATA_AOT_CHILD"  # set in the child process that compiles (`in_child`)
# libtpu's crash report: glog lines (F1203 12:00:00.000000 ...), its stack and core-dump lines.
_CRASH_LINE = re.compile(r"^([FEWI]\d{4} |\s+@ |\*\*\* |https://symbolize|=== Source)")
# The first line of a crash: nothing after it is the run's own output.
_CRASH_START = re.compile(r"^(F\d{4} |Fatal Python error)")


class CompilerCrash(CompilerError):
  """libtpu died compiling (an internal check failed): one line, exit status 1."""


def in_child(argv: list[str], name: str, command: list[str] | None = None) -> None:
  """Runs `python -m train` with `argv` again in a child process that compiles, so that a crash
  of libtpu (an internal check failing aborts the whole process, as compiling
  `experiments/mnist1d_vae.py:tiny` for a v5e does with libtpu 0.0.42) becomes one line
  instead of a dead process and a page of stack. The child's lines pass through as they come,
  its exit status too. `command` replaces `python -m train argv[1:]` (tests).

  Raises:
    CompilerCrash: the child died of a signal.
  """
  env = {**os.environ, CHILD: "1"}
  command = command or [sys.executable, "-m", "train", *argv[1:]]
  child = subprocess.Popen(command, env=env,
                           stderr=subprocess.PIPE, text=True, errors="replace")
  failed, crashed = None, False
  for line in child.stderr:
    crashed = crashed or bool(_CRASH_START.match(line))
    if crashed or _CRASH_LINE.match(line):
      if failed is None and "Check failed" in line:
        failed = line.split("] ", 1)[-1].strip()
      continue
    sys.stderr.write(line)
    sys.stderr.flush()
  status = child.wait()
  if status >= 0:
    if status:
      raise SystemExit(status)
    return
  raise CompilerCrash(
      f"libtpu crashed compiling for --topology={name} ({signal.Signals(-status).name}"
      + (f": {failed}" if failed else "") + "): an internal error of the TPU compiler, not of "
      "the run; another libtpu version may compile it (the tpu extra pins one)")


@dataclasses.dataclass
class Report:
  """One compile of a run for a slice; bytes, FLOPs and seconds are per chip and per step."""
  slice: topology.Slice
  chip: throughput.Chip
  mesh: dict[str, int]
  global_batch: int
  tokens_per_example: int
  memory: dict[str, int]          # memory.report of the train step
  parameters_total: int           # the parameters' bytes over all chips (unsharded)
  eval_memory: int                # the evaluation step's total
  flops: float                    # the compiled program's count (train.run.scan_cost_factors)
  model_flops: float              # the model's, over the chips (train.run.global_costs): MFU's
  bytes_accessed: float
  collective_bytes: dict[str, float]  # sent by a chip's collectives, by kind (train.hlo)
  compiler_seconds: float | None  # the cost model's optimal_seconds
  step_seconds: float             # the estimate reported: the compiler's, or the roofline bound
  estimate_source: str
  loops: bool                     # the step holds a loop: FLOPs count its body once
  compile_seconds: dict[str, float]

  @property
  def fits(self) -> bool:
    return max(self.memory["total"], self.eval_memory) <= self.chip.hbm

  @property
  def mfu(self) -> float:
    return (self.model_flops or self.flops) / (self.step_seconds * self.chip.bf16)

  def lines(self) -> list[str]:
    """The report as console lines."""
    m, size = self.memory, memory.size
    examples = self.global_batch / self.step_seconds
    rate = (f"{examples * self.tokens_per_example:,.0f} tokens/s" if self.tokens_per_example
            else f"{examples:,.0f} examples/s")
    return [
        f"compiled for {self.slice.describe()}, {self.chip.kind}: mesh "
        + " x ".join(f"{k}={v}" for k, v in self.mesh.items())
        + f", global batch {self.global_batch} "
        f"({self.global_batch // self.mesh['data'] // self.mesh['fsdp']} a chip)",
        f"memory per chip: parameters {size(m['parameters'])} (of {size(self.parameters_total)}"
        f"), optimizer state "
        f"{size(m['optimizer_state'])}, batch {size(m['batch'])}, temporaries "
        f"{size(m['temporaries'])}, outputs {size(m['outputs'])}; total {size(m['total'])} of "
        f"{size(self.chip.hbm)} HBM ({'fits' if self.fits else 'does not fit'}); evaluation "
        f"step {size(self.eval_memory)}",
        f"per chip a step: {self.flops / 1e9:,.4g} GFLOP compiled, "
        f"{self.model_flops / 1e9:,.4g} GFLOP of the model's"
        + (" (a loop's body counted once: more in truth)" if self.loops else "")
        + f", {self.bytes_accessed / 1e9:,.4g} GB of HBM traffic, "
        f"{sum(self.collective_bytes.values()) / 1e9:,.4g} GB sent to other chips; estimated "
        f"{self.step_seconds * 1e3:,.4g} ms ({self.estimate_source}): {rate}, MFU "
        # a roofline bound is the fastest the step could be: its MFU is a ceiling
        + ("at most " if self.estimate_source.startswith("roofline") else "")
        + f"{100 * self.mfu:.1f}%",
        "compile: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.compile_seconds.items()),
    ]


def _abstract(x: Any, sharding: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _out_of_memory(error: Exception, run: Run, config: mlc.ConfigDict, what: str,
                   slice_: topology.Slice, chip: throughput.Chip) -> memory.OutOfMemoryError:
  """The compiler's refusal (RESOURCE_EXHAUSTED) as the one line with the fixes."""
  text = str(error)
  need = re.search(r"required for [^(]*\(([\d.]+)([KMGT])\)", text)
  scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
  temporaries = int(float(need.group(1)) * scale[need.group(2)]) if need else 0
  rep = memory.report(run.abstract, 0, None)
  rep["temporaries"] = temporaries
  said = re.search(r"Ran out of memory[^\n]*?\([\d.]+[KMGT]?\)[^\n]*?(?:\([\d.]+[KMGT]?\)|$)",
                   text)
  ways = memory.fixes(config, rep, run.mesh.devices.size)
  return memory.OutOfMemoryError(
      f"the {what} does not fit a {chip.kind} chip of {slice_.describe()}: "
      f"{said.group(0) if said else text.splitlines()[0][:200]}; parameters and optimizer state "
      f"take {memory.size(rep['parameters'] + rep['optimizer_state'])} a chip; try "
      + "; or ".join(ways))


def _compile(fn: Any, args: tuple, what: str, run: Run, config: mlc.ConfigDict,
             slice_: topology.Slice, chip: throughput.Chip) -> tuple[Any, Any, float]:
  """(the lowered program, the compiled one, seconds to lower and compile)."""
  t = time.perf_counter()
  try:
    lowered = fn.lower(*args)
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" in str(e):
      raise _out_of_memory(e, run, config, what, slice_, chip) from None
    raise
  return lowered, compiled, time.perf_counter() - t


def estimate(cost: dict[str, float], chip: throughput.Chip, executed: float = 0.0,
             sent: float = 0.0) -> tuple[float, float, str]:
  """(the compiler's optimal_seconds or nan, the step time to report, where it comes from):
  the compiler's estimate unless it is below the roofline bound, which no program can beat;
  then the bound. The bound is the largest of FLOPs / peak, HBM bytes / HBM bandwidth and
  `sent` (the bytes a chip's collectives send, `train.hlo.collectives`) over the chip's
  outgoing interconnect bandwidth (half its bidirectional figure: every link busy, so a bound
  too). `flops` is the larger of the compiled count and `executed` (a chip's share of the
  global program's: the compiled count misses the loops the compiler makes)."""
  flops, traffic = max(cost.get("flops", 0.0), executed), cost.get("bytes accessed", 0.0)
  terms = {"compute": flops / chip.bf16, "HBM": traffic / chip.hbm_bandwidth,
           "interconnect": sent / (chip.interconnect / 2)}
  binding = max(terms, key=terms.get)
  bound = terms[binding]
  compiler = float(cost.get("optimal_seconds", float("nan")))
  if compiler == compiler and compiler >= bound > 0:
    return compiler, compiler, "the TPU compiler's cost model"
  why = "none given" if compiler != compiler else f"its {compiler * 1e3:.4g} ms is below it"
  return compiler, bound, f"roofline bound ({binding}); the compiler's estimate rejected: {why}"


def compile_for(config: mlc.ConfigDict, slice_: topology.Slice) -> Report:
  """Builds `config` over `slice_`'s abstract devices and compiles its init, train step and
  evaluation step there (module docstring).

  Raises:
    ConfigError, FlagError: a bad config or slice.
    ImportError: libtpu is not installed.
    OutOfMemoryError: a step needs more HBM than a chip has (one line with the fixes).
  """
  with arch_common.compiling_for("tpu"):  # arch's CPU-only rewrites stay out of the program
    return _compile_for(config, slice_)


def _compile_for(config: mlc.ConfigDict, slice_: topology.Slice) -> Report:
  devices = topology.devices(slice_)
  chip = throughput.chip(devices[0])
  if chip is None:
    raise memory.OutOfMemoryError(f"no figures for {devices[0].device_kind!r} in "
                                  "train.throughput.PEAKS")
  run = build(config, devices)
  replicated = run.replicated
  init_rng, step_rng = _abstract(run.init_rng, replicated), _abstract(run.step_rng, replicated)
  batch = run.example
  times = {}
  init = jax.jit(run.paradigm.init, in_shardings=(replicated, run.batch_sharding),
                 out_shardings=run.state_sharding)
  where = (run, config, slice_, chip)
  _, _, times["init"] = _compile(init, (init_rng, batch), "initialisation", *where)
  lowered, train_step, times["train step"] = _compile(
      run.train_step, (run.abstract, batch, step_rng), "train step", *where)
  d = config.data
  # The evaluation split's own batch, built as its pipeline builds it (evaluation ops may give
  # other shapes than training's), at the evaluation batch size.
  eval_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=run.batch_sharding)
                for k, (shape, dtype) in data_abstract.batch_shapes(
                    d, d.eval_split, train=False, seed=config.seed,
                    global_batch=d.eval_batch_size).items()}
  _, eval_step, times["evaluation step"] = _compile(
      run.eval_step, (run.abstract, eval_batch, step_rng), "evaluation step", *where)
  rep = memory.report(run.abstract, memory.device_bytes(batch), train_step)
  eval_total = memory.report(run.abstract, memory.device_bytes(eval_batch), eval_step)["total"]
  cost = throughput.cost_analysis(train_step)
  executed, own = global_costs(run)
  factors = scan_cost_factors(run, executed)  # XLA counts a scanned stack's body once
  for key, factor in factors.items():
    cost[key] = cost.get(key, 0.0) * factor
  chips = slice_.chips * slice_.slices
  per_chip = own.get("flops", 0.0) / chips
  sent = hlo.collectives(train_step.as_text(), len(devices))
  compiler, seconds, source = estimate(cost, chip, executed.get("flops", 0.0) / chips,
                                       sum(sent.values()))
  # A loop of the program itself (a scan over steps), not one the TPU compiler made, and not
  # the scanned layers, which `factor` accounts for.
  loops = factors["flops"] == 1.0 and "stablehlo.while" in lowered.as_text()
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract.params))
  return Report(slice_, chip, dict(run.mesh.shape), d.batch_size,
                throughput.tokens_per_example(batch), rep, total,
                eval_total, cost.get("flops", 0.0), per_chip, cost.get("bytes accessed", 0.0),
                sent, compiler,
                seconds, source, loops, times)


def dry_run(config: mlc.ConfigDict, name: str, slices: int = 1) -> Report:
  """`python -m train --dry_run --topology NAME`: compiles, prints the report, and refuses (one
  line, the fixes) a run that does not fit a chip's HBM."""
  from train import progress

  slice_ = topology.parse(name, slices)
  report = compile_for(config, slice_)
  for line in report.lines():
    progress.console(line)
  rep = dict(report.memory, total=max(report.memory["total"], report.eval_memory))
  memory.check(rep, report.chip.hbm, f"a {report.chip.kind} chip's HBM", config,
               report.slice.chips * report.slice.slices, per="a chip")
  return report
