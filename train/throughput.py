"""Throughput and model FLOPs utilisation (MFU) of the compiled train step.

FLOPs per step come from XLA's cost analysis of the compiled step, counted once at compile; for
a program partitioned over a mesh it is one device's share. XLA counts a loop's body once, so a
model with scanned layers is scaled by `run.scan_cost_factors` (the unrolled model's count
over the scanned one's). MFU is that times steps/s over one
device's peak rate at the run's precision:

- TPUs and NVIDIA GPUs: the dense peak of the chip from `PEAKS` (cited there). A float32 matmul
  at JAX's default precision runs on the bfloat16 units of a TPU and as TF32 on an Ampere or
  Hopper GPU, so the float32 column holds those rates.
- CPU: this machine's measured dense float32 matmul rate (`matmul_flops`, the rate
  `benchmarks.run` divides by), measured once and cached beside the XLA compilation cache.

Every train record gets steps/s, examples/s (tokens/s when each example is a sequence of
targets), FLOPs per step, achieved TFLOP/s per device and MFU in `WORKDIR/throughput.jsonl`, the
console line and TensorBoard; `metrics.jsonl` stays free of timings, so it is the same bytes for
the same seed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator's published figures, per chip: `kind` is matched as a substring of jax's
  `device_kind`; `bf16` and `fp32` are dense FLOP/s (float32 as JAX runs it: on a TPU's bfloat16
  units, as TF32 on an Ampere or Hopper GPU); `hbm` bytes of memory; `hbm_bandwidth` bytes/s;
  `interconnect` the chip's bidirectional bandwidth to the other chips of its slice (ICI on a
  TPU, NVLink on a GPU) in bytes/s, over all its links, so a chip sends at most half of it."""
  kind: str
  bf16: float
  fp32: float
  hbm: float
  hbm_bandwidth: float
  interconnect: float
  source: str


GIB = 2 ** 30
# Matched in order, so "TPU v5 lite" (v5e) comes before "TPU v5" (v5p).
PEAKS: tuple[Chip, ...] = (
    Chip("TPU v4", 275e12, 275e12, 32 * GIB, 1228e9, 540e9,
         "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1,228 GB/s per chip; "
         "ICI (not on that page): 6 links of 90 GB/s both ways (jax-ml.github.io/scaling-book, "
         "'How to think about TPUs')"),
    Chip("TPU v5 lite", 197e12, 197e12, 16 * GIB, 819e9, 400e9,
         "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s, "
         "bidirectional ICI 400 GB/s per chip"),
    Chip("TPU v5", 459e12, 459e12, 95 * GIB, 2765e9, 1200e9,
         "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s, "
         "bidirectional ICI 1,200 GB/s per chip"),
    Chip("TPU v6 lite", 918e12, 918e12, 32 * GIB, 1640e9, 800e9,
         "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s, "
         "bidirectional ICI 800 GB/s per chip"),
    Chip("A100", 312e12, 156e12, 80e9, 2039e9, 600e9,
         "NVIDIA A100 80GB SXM datasheet: BF16 312, TF32 156 TFLOP/s dense, 2,039 GB/s, NVLink "
         "600 GB/s"),
    Chip("H100", 989e12, 494e12, 80e9, 3350e9, 900e9,
         "NVIDIA H100 SXM datasheet: BF16 1,979, TF32 989 TFLOP/s with sparsity (half of each "
         "dense), 80 GB at 3.35 TB/s, NVLink 900 GB/s"),
    Chip("H200", 989e12, 494e12, 141e9, 4800e9, 900e9,
         "NVIDIA H200 datasheet: BF16 1,979, TF32 989 TFLOP/s with sparsity (half of each "
         "dense), 141 GB at 4.8 TB/s, NVLink 900 GB/s"),
)


def chip(device: Any) -> Chip | None:
  """The `PEAKS` entry of `device` (None when it has none: CPUs, unknown accelerators)."""
  kind = getattr(device, "device_kind", "")
  return next((c for c in PEAKS if c.kind in kind), None)


_CACHE_NAME = "strata-cpu-matmul-flops.json"


def matmul_flops(n: int = 1024, repeats: int = 20) -> float:
  """This machine's dense float32 matmul rate in FLOP/s: median over `repeats` of one jitted
  (n, n) @ (n, n) product (2 n^3 FLOPs)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times)


@functools.cache
def cpu_matmul_flops(cache_dir: str | None = None, refresh: bool = False) -> float:
  """`matmul_flops()`, measured once per machine and kept in `cache_dir` (default: the XLA
  compilation cache directory, when one is set). One figure per machine makes MFU comparable
  across runs and with `benchmarks.run`: on a shared 2-core VM, back-to-back measurements
  ranged 160-240 GFLOP/s. With `refresh` (`benchmarks.run` asks for it), measured again, and
  the faster of that and the kept figure is kept: a peak, which a first measurement taken on a
  busy minute (58 GFLOP/s on a machine that does 170-210) would understate for good, and with
  it overstate every run's MFU. Delete the file to start over."""
  cache_dir = cache_dir or _cache_dir()
  key = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|{jax.__version__}"
  path = os.path.join(os.path.expanduser(cache_dir), _CACHE_NAME) if cache_dir else None
  kept = 0.0
  if path and os.path.exists(path):
    try:
      with open(path) as f:
        cached = json.load(f)
      if cached.get("key") == key:
        kept = float(cached["flops"])
        if not refresh:
          return kept
    except (OSError, ValueError, KeyError):
      pass
  rate = matmul_flops()
  if rate <= kept:
    return kept
  if path:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp"
      with open(tmp, "w") as f:
        json.dump({"key": key, "flops": rate}, f)
      os.replace(tmp, path)
    except OSError:
      pass
  return rate


def _cache_dir() -> str | None:
  return jax.config.jax_compilation_cache_dir


def peak_flops(device: Any, precision: str) -> tuple[float | None, str]:
  """(one device's peak FLOP/s at `precision`, where the figure comes from); None when the
  device is not in `PEAKS`."""
  if device.platform == "cpu":
    return cpu_matmul_flops(), "measured float32 matmul rate of this CPU"
  c = chip(device)
  if c is None:
    return None, f"no peak known for {getattr(device, 'device_kind', '')!r}"
  return (c.bf16 if precision == "bfloat16" else c.fp32), c.source


def cost_analysis(program: Any) -> dict[str, float]:
  """XLA's cost analysis of a lowered or compiled program as one dict ("flops", "bytes
  accessed", ...; {} when there is none)."""
  cost = program.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  return dict(cost or {})


def step_flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled step (one device's share), from XLA's cost analysis."""
  return float(cost_analysis(compiled).get("flops", float("nan")))


@dataclasses.dataclass
class Throughput:
  """Rates of a train record from its steps/s (module docstring)."""

  flops_per_step: float        # one device's
  peak: float | None           # one device's FLOP/s
  global_batch: int            # examples a step
  tokens_per_example: int      # 0 unless examples are sequences of targets

  def record(self, steps_per_sec: float) -> dict[str, float]:
    out = {"steps_per_sec": steps_per_sec,
           "examples_per_sec": steps_per_sec * self.global_batch,
           "flops_per_step": self.flops_per_step,
           "tflops_per_sec_per_device": steps_per_sec * self.flops_per_step / 1e12}
    if self.tokens_per_example:
      out["tokens_per_sec"] = out["examples_per_sec"] * self.tokens_per_example
    if self.peak:
      out["mfu"] = steps_per_sec * self.flops_per_step / self.peak
    return out

  @staticmethod
  def text(record: dict[str, float]) -> str:
    """The console's part: examples/s (or tokens/s) and MFU."""
    if "tokens_per_sec" in record:
      text = f"{record['tokens_per_sec']:,.0f} tokens/s"
    else:
      text = f"{record['examples_per_sec']:,.0f} examples/s"
    if "mfu" in record:
      text += f" | MFU {100 * record['mfu']:.1f}%"
    return text


def for_run(compiled: Any, example: dict[str, Any], precision: str,
            flops_factor: float = 1.0) -> Throughput:
  """The Throughput of a run whose compiled train step is `compiled` and whose (global) batch
  looks like `example`; token targets (B, T) of integer ids count T tokens an example (float
  targets (B, H), a forecast's, are one example each)."""
  first = next(iter(example.values()))
  peak, _ = peak_flops(jax.devices()[0], precision)
  return Throughput(step_flops(compiled) * flops_factor, peak, int(first.shape[0]),
                    tokens_per_example(example))


def tokens_per_example(example: dict[str, Any]) -> int:
  """T when the batch's targets are token ids (B, T) (integer `label`), else 0 (float targets
  (B, H), a forecast's, are one example each)."""
  label = example.get("label")
  return (int(label.shape[1]) if label is not None and len(label.shape) == 2
          and jnp.issubdtype(label.dtype, jnp.integer) else 0)
