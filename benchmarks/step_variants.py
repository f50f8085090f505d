"""Variants of a workload's train step, A/B in alternated windows of one process: the attempts
docs/speed_attempts.md lists as tried (dropped, or adopted: the batch slices).

  python -m benchmarks.step_variants --workload charlm_transformer \
      --variants strata,fused_qkv,causal_blocks_1,causal_blocks_2,head_major_attention
  python -m benchmarks.step_variants --workload digits_unet --variants strata,flat_optimizer
  python -m benchmarks.step_variants --workload charlm_transformer \
      --variants strata,one_pass,batch_slices_4
  python -m benchmarks.step_variants --workload digits_unet \
      --variants strata,vector_width_512,no_concurrency_scheduler,fast_math,opt_level_1
  python -m benchmarks.step_variants --workload digits_unet \
      --variants strata,xnn_graph,onednn_custom_call
  python -m benchmarks.step_variants --workload charlm_transformer \
      --variants strata,column_sums_as_dots,layernorm_as_dots

Each variant builds the workload (`benchmarks.run.WORKLOADS`) with one change, compiles its
train step (timing the compile), and the variants' windows of `--steps` steps then alternate
for `--windows` rounds on one in-memory batch. Prints the median steps/s with the slowest and
fastest window, each window's ratio to the first variant's window of the same round (median and
range), and the compile seconds. The attention variants are in `attention_variants`, those that
swap reductions in `reductions_as_dots`.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from typing import Any, Callable

from absl import flags

from benchmarks import attention_variants, conv_variants, reductions_as_dots
from train import cli, huge_pages

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
_patched = reductions_as_dots.patched


def _fused_qkv() -> contextlib.AbstractContextManager:
  """Self-attention's query, key and value projections as one matmul over their kernels side
  by side (the same parameters, created as `nn.DenseGeneral` creates them): the "query"
  projection computes all three and hands key and value on. Multi-head attention only (as many
  key/value heads as query heads)."""
  import flax.linen as nn
  import jax.numpy as jnp
  import numpy as np

  from arch import attention

  class Params(nn.Module):
    width: int
    heads: int
    head: int
    use_bias: bool
    param_dtype: Any
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self):
      flat = (self.width, self.heads * self.head)
      kernel = self.param("kernel", lambda r, s, d: self.kernel_init(r, flat, d).reshape(s),
                          (self.width, self.heads, self.head), self.param_dtype)
      bias = (self.param("bias", nn.initializers.zeros_init(), (self.heads, self.head),
                         self.param_dtype) if self.use_bias else None)
      return kernel, bias

  original_layer = attention.dense_layer
  state: dict[str, Any] = {}

  def dense_general(features, *args, name=None, original=None, **kwargs):
    if name not in ("query", "key", "value") or not isinstance(features, tuple):
      return original(features, *args, name=name, **kwargs)

    def project(x):
      if name != "query":
        return state.pop(name)
      heads, head = features
      parts = [Params(x.shape[-1], heads, head, kwargs.get("use_bias", True),
                      kwargs.get("param_dtype", jnp.float32), name=n)() for n in
               ("query", "key", "value")]
      kernel = jnp.concatenate([k for k, _ in parts], axis=1).astype(x.dtype)
      out = jnp.einsum("btd,dnh->btnh", x, kernel)
      if parts[0][1] is not None:
        out = out + jnp.concatenate([b for _, b in parts]).astype(x.dtype)
      q, state["key"], state["value"] = jnp.split(out, np.cumsum([heads] * 2), axis=2)
      return q
    return project

  def dense_layer(kernel, general=False):  # the fused projection, whichever dense_kernel
    return functools.partial(dense_general, original=original_layer(kernel, general))
  return _patched(attention, "dense_layer", dense_layer)


def _repeat_upsample() -> contextlib.AbstractContextManager:
  """Nearest-neighbour upsampling by whole factors (the UNet's) as a broadcast and a reshape:
  the same values as `jax.image.resize(..., "nearest")`, whose XLA form is a gather (and its
  gradient scatter-adds); the gradient is then a sum over each block."""
  import jax
  import jax.numpy as jnp

  resize = jax.image.resize

  def repeat(image, shape, method, *args, **kwargs):
    factors = [n // m if m and n % m == 0 else 0 for n, m in zip(shape, image.shape)]
    if method != "nearest" or args or kwargs or not all(factors):
      return resize(image, shape, method, *args, **kwargs)
    expanded = image.reshape([d for m in image.shape for d in (m, 1)])
    tiled = jnp.broadcast_to(expanded, [d for m, f in zip(image.shape, factors) for d in (m, f)])
    return tiled.reshape(shape)
  return _patched(jax.image, "resize", repeat)


def _gather_upsample() -> contextlib.AbstractContextManager:
  """The UNet's upsampling by `jax.image.resize(..., "nearest")` (a gather; the UNet's own until
  2026-12-05, `arch.unet.upsample`)."""
  import jax

  from arch import unet

  def resize(h):
    size = tuple(2 * s for s in h.shape[1:-1])
    return jax.image.resize(h, (h.shape[0],) + size + (h.shape[-1],), "nearest")
  return _patched(unet, "upsample", resize)


def _causal_blocks(n: int) -> contextlib.AbstractContextManager:
  from arch import attention

  return _patched(attention, "dot_product_attention",
                  functools.partial(attention.dot_product_attention, causal_blocks=n))


def _flat_optimizer() -> contextlib.AbstractContextManager:
  """The optimizer over one flattened vector (`optax.flatten`); weight decay's mask then sees
  one vector, so this is for timing only."""
  import optax

  from train import optim

  make = optim.make

  def flat(*args, **kwargs):
    tx, schedule = make(*args, **kwargs)
    return optax.flatten(tx), schedule
  return _patched(optim, "make", flat)


def _batch_slices(k: int) -> contextlib.AbstractContextManager:
  """The model's training pass over `k` equal slices of the batch, in any paradigm: the built
  model's `apply` in training goes through `train.batch_slices.sliced` (which the supervised
  step uses for `train.xla_cpu_batch_slices`), its positional arrays sliced and its `rngs`
  folded per slice."""
  import arch
  from train import batch_slices

  build = arch.build

  def sliced_build(model_config):
    model = build(model_config)
    apply = model.apply

    def sliced_apply(variables, *args, train=False, rngs=None, mutable=False, **kwargs):
      if not train:
        return apply(variables, *args, train=train, rngs=rngs, mutable=mutable, **kwargs)
      return batch_slices.sliced(
          lambda cut, r: apply(variables, *cut, train=train, rngs=r, **kwargs), k, args, rngs,
          mutable)
    object.__setattr__(model, "apply", sliced_apply)
    return model
  return _patched(arch, "build", sliced_build)


# name -> (context that changes the build, compiler options)
VARIANTS: dict[str, tuple[Callable[[], contextlib.AbstractContextManager], dict[str, Any]]] = {
    "strata": (contextlib.nullcontext, NO_YNN),
    "fused_qkv": (_fused_qkv, NO_YNN),
    "causal_blocks_1": (lambda: _causal_blocks(1), NO_YNN),
    "causal_blocks_2": (lambda: _causal_blocks(2), NO_YNN),
    "flat_optimizer": (_flat_optimizer, NO_YNN),
    "head_major_attention": (attention_variants.head_major, NO_YNN),
    "late_normalised_attention": (attention_variants.late_normalised, NO_YNN),
    "layernorm_as_dots": (reductions_as_dots.layernorm, NO_YNN),
    "groupnorm_as_dots": (reductions_as_dots.groupnorm, NO_YNN),
    "column_sums_as_dots": (reductions_as_dots.column_sums, NO_YNN),
    "column_sums_as_rows": (lambda: reductions_as_dots.column_sums(as_rows=True), NO_YNN),
    "column_sums_by_kernel": (lambda: reductions_as_dots.column_sums(kernel=True), NO_YNN),
    # the training pass as K slices, in any paradigm (on the experiment's one pass); and the
    # experiment's pass unsliced where it sets train.xla_cpu_batch_slices (CONFIG below)
    "batch_slices_2": (lambda: _batch_slices(2), NO_YNN),
    "batch_slices_4": (lambda: _batch_slices(4), NO_YNN),
    "one_pass": (contextlib.nullcontext, NO_YNN),
    # the attention by XLA's ops or by arch.cpu_attention's compiled kernel (model.
    # attention_kernel, CONFIG below), whatever the experiment sets
    "attention_kernel_xla": (contextlib.nullcontext, NO_YNN),
    "attention_kernel_cpu": (contextlib.nullcontext, NO_YNN),
    # the dense layers' backward by XLA's ops or by arch.cpu_dense (model.dense_kernel), and
    # arch.cpu_dense with XLA's reduce for its bias gradients
    "dense_kernel_xla": (contextlib.nullcontext, NO_YNN),
    "dense_kernel_cpu": (contextlib.nullcontext, NO_YNN),
    "dense_kernel_cpu_xla_sums": (reductions_as_dots.dense_sums_by_xla, NO_YNN),
    # the norms (the UNet's GroupNorms, the Transformers' LayerNorms) by XLA's ops or by
    # arch.cpu_norm's compiled kernels (model.norm_kernel)
    "norm_kernel_xla": (contextlib.nullcontext, NO_YNN),
    "norm_kernel_cpu": (contextlib.nullcontext, NO_YNN),
    "norm_and_dense_kernel_cpu": (contextlib.nullcontext, NO_YNN),
    "layers_xla": (contextlib.nullcontext, NO_YNN),  # dense layers and norms both XLA's
    # the optimizer update (with the EMA and the logged norms) by optax's ops or as one call
    # of train.cpu_optimizer's compiled kernel (optim.kernel)
    "optim_kernel_xla": (contextlib.nullcontext, NO_YNN),
    "optim_kernel_cpu": (contextlib.nullcontext, NO_YNN),
    # the 2-D convolutions by XLA or by oneDNN (model.conv_kernel, arch.cpu_conv)
    "conv_kernel_xla": (contextlib.nullcontext, NO_YNN),
    "conv_kernel_onednn": (contextlib.nullcontext, NO_YNN),
    # the step without its logged gradient, update and parameter norms (train.log_norms)
    "no_log_norms": (contextlib.nullcontext, NO_YNN),
    "vector_width_512": (contextlib.nullcontext, {**NO_YNN, "xla_cpu_prefer_vector_width": 512}),
    "no_concurrency_scheduler": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_enable_concurrency_optimized_scheduler": False}),
    "fast_math": (contextlib.nullcontext, {**NO_YNN, "xla_cpu_enable_fast_math": True}),
    # (a no-op on the UNet since its own upsampling is the broadcast, arch.unet.upsample)
    "repeat_upsample": (_repeat_upsample, NO_YNN),
    "gather_upsample": (_gather_upsample, NO_YNN),
    "conv_weight_grad_as_dots": (conv_variants.weight_grad_as_dots, NO_YNN),
    # the convolutions handed to YNNPACK (XNNPACK's successor in jax 0.10), nothing else
    "ynn_convolutions": (contextlib.nullcontext, {
        "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}),
    # Eigen's matmuls and convolutions on the calling thread alone
    "single_thread_eigen": (contextlib.nullcontext,
                            {**NO_YNN, "xla_cpu_multi_thread_eigen": False}),
    "opt_level_1": (contextlib.nullcontext, {**NO_YNN, "xla_backend_optimization_level": 1}),
    # jax 0.10's other library paths: XNNPACK subgraphs, oneDNN's custom calls (which this
    # jaxlib leaves unused) and oneDNN dot fusions (which stop the process with SIGILL).
    "xnn_graph": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"}),
    "onednn_custom_call": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_use_onednn": True, "xla_cpu_experimental_onednn_custom_call": True}),
    "onednn_dots": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_use_onednn": True,
        "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}),
    # XLA:CPU's switches of jax 0.10 that its compile options accept (others its jaxlib names,
    # custom matmul tiling, MLIR tiling and fusion, the tiled emitter, are refused as options)
    "no_fusion_emitters": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_use_fusion_emitters": False}),
    "opt_preset_fast_runtime": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"}),
    "scheduler_concurrency": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"}),
    "scheduler_memory": (contextlib.nullcontext, {
        **NO_YNN, "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}),
}


# variant -> config fields it sets on the experiment's (`train.*` unless the name has a dot)
CONFIG: dict[str, dict[str, Any]] = {
    **{name: {"xla_cpu_batch_slices": 1}
       for name in ("batch_slices_2", "batch_slices_4", "one_pass")},
    "attention_kernel_xla": {"model.attention_kernel": "xla"},
    "attention_kernel_cpu": {"model.attention_kernel": "cpu"},
    "dense_kernel_xla": {"model.dense_kernel": "xla"},
    "dense_kernel_cpu": {"model.dense_kernel": "cpu"},
    "dense_kernel_cpu_xla_sums": {"model.dense_kernel": "cpu"},
    "norm_kernel_xla": {"model.norm_kernel": "xla"},
    "norm_kernel_cpu": {"model.norm_kernel": "cpu"},
    "norm_and_dense_kernel_cpu": {"model.norm_kernel": "cpu", "model.dense_kernel": "cpu"},
    "layers_xla": {"model.norm_kernel": "xla", "model.dense_kernel": "xla"},
    "no_log_norms": {"train.log_norms": False},
    "optim_kernel_xla": {"optim.kernel": "xla"},
    "optim_kernel_cpu": {"optim.kernel": "cpu"},
    "conv_kernel_xla": {"model.conv_kernel": "xla"},
    "conv_kernel_onednn": {"model.conv_kernel": "onednn"},
}
# variants of XLA's own ops, built with the model fields whose compiled CPU kernels would bypass
# their change at "xla", where the experiment has those fields: the attention's, and the
# reductions' (flax's dense layers and norms)
XLA_OPS = {**dict.fromkeys(("causal_blocks_1", "causal_blocks_2", "head_major_attention",
                            "late_normalised_attention"), ("attention_kernel",)),
           **dict.fromkeys(("layernorm_as_dots", "groupnorm_as_dots", "column_sums_as_dots",
                            "column_sums_as_rows", "column_sums_by_kernel"),
                           ("dense_kernel", "norm_kernel"))}


def build(name: str, variant: str, tiny: bool = False, data_dir: str | None = None,
          fields: dict[str, Any] | None = None) -> dict[str, Any]:
  """Workload `name`'s train step with `variant`'s change, config fields (then `fields`, more
  `train.*` fields) and compile options: {"run", "state", "step" (compiled), "compile_s",
  "batch" (one, on the run's devices)}."""
  from benchmarks.run import workload_config
  from train import loop, parallel

  context, options = VARIANTS[variant]
  config = workload_config(name, tiny, data_dir)
  config.train.xla_cpu_ynnpack = True  # the jit's options: none; the variant's below
  for field in XLA_OPS.get(variant, ()):
    if field in config.model:
      config.model[field] = "xla"
  for field, value in {**CONFIG.get(variant, {}), **(fields or {})}.items():
    section, _, key = field.rpartition(".")
    if key not in config[section or "train"]:
      raise ValueError(f"--variants {variant}: workload {name}'s config has no field "
                       f"{section or 'train'}.{key}")
    config[section or "train"][key] = value
  with context():
    run = loop.build(config)
    state = run.init_state()
    t = time.perf_counter()
    step = run.train_step.lower(state, run.example, run.step_rng).compile(
        compiler_options=options)
    compile_s = time.perf_counter() - t
  batch = parallel.global_batch(next(run.train_pipe.iterator()), run.batch_sharding)
  return {"run": run, "state": state, "step": step, "compile_s": compile_s, "batch": batch}


def measure(name: str, variants: list[str], windows: int = 7, steps: int = 8,
            tiny: bool = False, data_dir: str | None = None) -> dict[str, dict[str, Any]]:
  """{variant: {"rates": [steps/s of each window], "compile_s": float}} for workload `name`."""
  from benchmarks.run import alternated_windows

  built = {v: build(name, v, tiny, data_dir) for v in variants}
  rates = alternated_windows(
      {v: lambda s, i, b=b: b["step"](s, b["batch"], b["run"].step_rng)[0]
       for v, b in built.items()},
      {v: b["state"] for v, b in built.items()}, windows, steps)
  return {v: {"rates": rates[v], "compile_s": b["compile_s"]} for v, b in built.items()}


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workload", "charlm_transformer", "A workload of benchmarks.run.")
  flags.DEFINE_list("variants", ["strata", "fused_qkv"], f"Some of {list(VARIANTS)}.")
  flags.DEFINE_integer("windows", 7, "Timed windows per variant.")
  flags.DEFINE_integer("steps", 8, "Steps per window.")


def main(argv: list[str]) -> None:
  from benchmarks.run import WORKLOADS, workload_config
  from train import throughput

  if FLAGS.workload not in WORKLOADS:
    raise ValueError(f"--workload={FLAGS.workload!r}: expected one of {list(WORKLOADS)}")
  unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"--variants {unknown}: expected some of {list(VARIANTS)}")
  huge_pages.restart_for([workload_config(FLAGS.workload)], __spec__)  # as `python -m train`
  print(f"dense float32 matmul: {throughput.matmul_flops(2048, 10) / 1e9:.0f} GFLOP/s")
  results = measure(FLAGS.workload, FLAGS.variants, FLAGS.windows, FLAGS.steps)
  print(table(results))


def table(results: dict[str, dict[str, Any]]) -> str:
  """Markdown of `measure`'s results: each variant's median steps/s (slowest and fastest
  window), and the median of its windows' ratios to the first variant's window of the same
  round (timed back to back, so a drift of the machine's speed cancels), with their range."""
  first = next(iter(results.values()))["rates"]
  lines = ["| variant | steps/s, median (range) | / first variant, window pairs: median "
           "(range) | compile s |", "|---|---|---|---|"]
  for v, r in results.items():
    rates = r["rates"]
    ratios = [a / b for a, b in zip(rates, first)]
    lines.append(f"| {v} | {statistics.median(rates):.2f} ({min(rates):.2f}-{max(rates):.2f}) "
                 f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
                 f"{r['compile_s']:.1f} |")
  return "\n".join(lines)

if __name__ == "__main__":
  define_flags()
  cli.run(main)
