"""A run before it trains: `build(config)` validates the config and makes the mesh, both data
pipelines, the model, the paradigm, the shardings and the jitted steps (`Run`);
`compile_train_step(run)` compiles the train step ahead of time for the run's layouts (its cost
and memory analyses feed `train.throughput` and `train.memory`). `train.loop` drives a Run;
`benchmarks/` and the evaluation tools build one the same way."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc

import arch
import data as data_lib
from arch import common as arch_common
from data import abstract as data_abstract
from data import synthetic as data_synthetic
from train import (
  batch_slices,
  field_use,
  histograms,
  huge_pages,
  optim,
  paradigms,
  parallel,
  synthetic,
  throughput,
)
from train import config as config_lib
from train import evaluators as evaluators_lib


def _packed(train_step, names: list[str], histograms_every: int = 0):
  """`train_step` with its metrics packed into one (len(names),) float32 vector; with
  `histograms_every` > 0, `(packed, train.histograms.stats)` in its place, the histograms
  computed at the steps divisible by it.

  A logging window then fetches one array per step instead of one per metric and step (fetching
  40,000 scalars one by one took 1.4 s of a 26 s MNIST-1D CNN run).
  """
  def step(state, batch, rng):
    with optim.watch() as trees:
      state, metrics = train_step(state, batch, rng)
    packed = jnp.stack([metrics[k].astype(jnp.float32) for k in names])
    if histograms_every <= 0:
      return state, packed
    return state, (packed, histograms.stats(histograms.trees_of(trees, state.params),
                                            state.step % histograms_every == 0))
  return step



@dataclasses.dataclass
class Run:
  """Everything a run computes with, before any state exists: the mesh, both pipelines, the
  paradigm, the shardings and the jitted steps (`train_step(state, batch, rng) -> (state,
  packed metrics)` with metric names `names`; `eval_step(state, batch, rng) -> sums`).
  `train.loop.train_and_evaluate` drives it; `benchmarks/` times it."""
  config: mlc.ConfigDict
  mesh: jax.sharding.Mesh
  train_pipe: data_lib.Pipeline | None  # None: built over abstract devices (`build`)
  eval_pipe: data_lib.Pipeline | None
  model: Any
  paradigm: Any
  steps: int
  batch_sharding: Any
  replicated: Any
  state_sharding: Any
  abstract: Any               # the state's ShapeDtypeStructs, with their shardings
  example: Any                # the first training batch, on the mesh
  init_rng: jax.Array
  step_rng: jax.Array
  names: list[str]
  train_step: Any
  eval_step: Any
  sample_grid: Any
  # Named evaluations (`config.evals`) of type "paradigm": name -> (pipeline, period in steps;
  # 0 = at the end); of the other types: name -> (evaluator, period).
  evals: dict[str, tuple[data_lib.Pipeline, int]] = dataclasses.field(default_factory=dict)
  evaluators: dict[str, tuple[Any, int]] = dataclasses.field(default_factory=dict)
  # `logging.histograms_every` > 0: the step's second output is (packed metrics, histograms),
  # one row per tag ("grad/Dense_0/kernel", ...; train.histograms)
  histogram_tags: list[str] = dataclasses.field(default_factory=list)

  def init_state(self):
    """A fresh state. init runs once, so it is compiled without backend optimisation: 0.6 s
    instead of 2.3 s for the MNIST-1D CNN on 2 CPU cores (threefry kernels are slow to
    optimise). Its values are deterministic; they differ from an optimised build's only in float
    rounding."""
    init = jax.jit(self.paradigm.init, out_shardings=self.state_sharding).lower(
        self.init_rng, self.example).compile(
            compiler_options={"xla_backend_optimization_level": 0})
    return init(self.init_rng, self.example)


def keys(config: mlc.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """(the key the state is initialised with, the key of the steps and evaluations: each folds
  in its step or batch index), split from `config.seed`."""
  init, step = jax.random.split(jax.random.key(config.seed))
  return init, step


def eval_pipeline(config: mlc.ConfigDict, section: Any, stats: Any, process_index: int = 0,
                  process_count: int = 1) -> data_lib.Pipeline:
  """The pipeline of a "paradigm" evaluation `section` (`split`, `source`, `batch_size`),
  normalised with the training data's statistics `stats`, whatever the evaluation's source."""
  d = config.data
  ed = d.copy_and_resolve_references()
  with ed.unlocked():
    ed.source = section.get("source") or d.source
    ed.eval_batch_size = section.get("batch_size") or d.eval_batch_size
  return data_lib.build_pipeline(ed, section["split"], process_index, process_count, train=False,
                                 seed=config.seed, stats=stats)


def build(config: mlc.ConfigDict, devices: list | None = None) -> Run:
  """Validates `config` and builds its `Run`: nothing is compiled or written yet.

  `devices` (abstract TPU devices of `train.topology`, for compiling ahead of time) builds the
  run over them without its data: no pipeline (`train_pipe`, `eval_pipe` and `evals` are None
  and empty), the batch's shapes from the source's description (`data.abstract`), no data checks
  and no evaluators beside the evaluation step.

  Raises:
    ConfigError, DataError, ValueError: invalid config, data or model.
  """
  config_lib.validate(config)
  pi, pc = jax.process_index(), jax.process_count()
  mesh = parallel.make_mesh(config.mesh, devices)
  d = config.data
  abstract_data = devices is not None
  evals = {}
  if abstract_data:
    train_pipe = eval_pipe = None
    # The schedule's length changes no shape or cost of the compiled program: an epoch counts 1.
    steps_per_epoch = 1
  else:
    pool = synthetic.pool(config) if data_synthetic.enabled(d) else None
    train_pipe = data_lib.build_pipeline(d, d.train_split, pi, pc, train=True, seed=config.seed,
                                         synthetic=pool)
    eval_pipe = data_lib.build_pipeline(d, d.eval_split, pi, pc, train=False, seed=config.seed)
    steps_per_epoch = train_pipe.steps_per_epoch
    for name, e in config.evals.items():  # named evaluations beside data.eval_split
      if evaluators_lib.type_of(e) != evaluators_lib.BUILT_IN:
        continue  # built below, once the model and the paradigm exist
      evals[name] = (eval_pipeline(config, e, eval_pipe.stats, pi, pc),
                     evaluators_lib.every(name, e))
  devices_n = mesh.devices.size
  sizes = [("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size)]
  sizes += [(f"evals.{name}.batch_size", p.global_batch_size) for name, (p, _) in evals.items()]
  for field, size in sizes:
    if size % devices_n:
      raise config_lib.ConfigError(f"{field}={size} is not divisible by the {devices_n} devices "
                                   "of the mesh")
  steps = config_lib.total_steps(config, steps_per_epoch)
  model = arch.build(config.model)
  module = paradigms.get(config.paradigm)
  if not abstract_data:  # the paradigm's own data requirements, before any compute
    module.check_data(config, model)
  slices = batch_slices.of_mesh(config, mesh)  # XLA:CPU's independent chains; else 1
  paradigm = module.make(model, config, total_steps=steps,
                         **({"batch_slices": slices} if slices > 1 else {}))

  batch_sharding = parallel.batch_sharding(mesh)
  replicated = parallel.replicated(mesh)
  init_rng, step_rng = keys(config)
  if abstract_data:
    example = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding) for k, (shape, dtype)
               in data_abstract.batch_shapes(d, d.train_split, train=True, seed=config.seed,
                                             global_batch=d.batch_size).items()}
  else:
    example = parallel.global_batch(train_pipe.dataset[0], batch_sharding)
    if pc == 1:
      example = jax.device_put(example, batch_sharding)
  abstract = jax.eval_shape(paradigm.init, init_rng, example)
  state_sharding = parallel.state_shardings(mesh, abstract,
                                            parallel.rules_of(config.mesh, config.sharding))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_sharding)

  # Donation lets XLA update the state in place on accelerators; on CPU, where a device buffer
  # may back the host copy a pending asynchronous checkpoint is writing, it is left off.
  donate = (0,) if mesh.devices.flat[0].platform != "cpu" else ()
  options = compiler_options(config, mesh.devices.flat[0].platform)
  with optim.watch() as trees:
    names = sorted(jax.eval_shape(paradigm.train_step, abstract, example, step_rng)[1])
  every = int(config.logging.histograms_every)
  histogram_tags = histograms.tags(histograms.trees_of(trees, abstract.params)) if every else []
  paradigm = _batch_split(paradigm, mesh, config.sharding.sequence_parallel)
  train_step = jax.jit(_packed(paradigm.train_step, names, every),
                       in_shardings=(state_sharding, batch_sharding, replicated),
                       out_shardings=(state_sharding, replicated), donate_argnums=donate,
                       compiler_options=options)
  eval_step = jax.jit(paradigm.eval_step, in_shardings=(state_sharding, batch_sharding,
                                                        replicated), out_shardings=replicated,
                      compiler_options=options)
  sample_grid = None
  if paradigm.samples is not None:
    sample_grid = jax.jit(paradigm.samples, in_shardings=(state_sharding,),
                          out_shardings=replicated, compiler_options=options)
  run = Run(config, mesh, train_pipe, eval_pipe, model, paradigm, steps, batch_sharding,
            replicated, state_sharding, abstract, example, init_rng, step_rng, names,
            train_step, eval_step, sample_grid, evals, histogram_tags=histogram_tags)
  for name, e in config.evals.items():
    if not abstract_data and evaluators_lib.type_of(e) != evaluators_lib.BUILT_IN:
      run.evaluators[name] = (evaluators_lib.build(name, e, run), evaluators_lib.every(name, e))
  return run


def compiler_options(config: mlc.ConfigDict, platform: str) -> dict[str, Any] | None:
  """XLA options of the run's compiled steps on `platform` ("cpu", "gpu", "tpu"): on CPU without
  `train.xla_cpu_ynnpack`, no YNNPACK library calls (jax's default hands dots and reductions to
  them); XLA_FLAGS would set the same for the whole process instead."""
  ynnpack = bool(config.train.xla_cpu_ynnpack)  # read on every platform: a set field is used
  if platform != "cpu" or ynnpack:
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": ""}


def _batch_split(paradigm: Any, mesh: Any, sequence_parallel: bool = False) -> Any:
  """`paradigm` whose train and evaluation steps trace their models inside
  `arch.common.batch_sharding` over `mesh`: activations keep the batch's split across the
  data and fsdp axes (`arch.common.constrain_batch`). Unchanged on one device."""
  if mesh.devices.size == 1:
    return paradigm

  sharding_of = parallel.activation_sharding(mesh, sequence_parallel)

  def traced(fn: Any) -> Any:
    @functools.wraps(fn)
    def step(*args, **kwargs):
      with arch_common.batch_sharding(sharding_of):
        return fn(*args, **kwargs)
    return step
  return paradigm._replace(train_step=traced(paradigm.train_step),
                           eval_step=traced(paradigm.eval_step))


def abstract_batch(run: Run) -> Any:
  """The first training batch as ShapeDtypeStructs on the batch sharding."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=run.batch_sharding), run.example)


def _variant(run: Run, **fields: Any) -> Any:
  """The run's paradigm over its model with `fields` of `config.model` replaced."""
  config = run.config
  module = paradigms.get(config.paradigm)
  return module.make(arch.build({**config.model.to_dict(), **fields}), config,
                     total_steps=run.steps)


def _global_cost(paradigm: Any, run: Run) -> dict[str, float]:
  """XLA's cost analysis of `paradigm`'s train step on the whole batch, lowered (not compiled)
  without shardings: the global program, before it is split over devices."""
  state = jax.eval_shape(paradigm.init, run.init_rng, run.example)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), run.example)
  return throughput.cost_analysis(jax.jit(paradigm.train_step).lower(state, batch, run.step_rng))


def scan_cost_factors(run: Run, unrolled: dict[str, float] | None = None) -> dict[str, float]:
  """How many times more FLOPs and HBM bytes a step has than XLA's cost analysis counts
  ({"flops": ..., "bytes accessed": ...}): XLA counts a loop's body once, so with
  `model.scan_layers` both counts are low by about the depth. Each factor is the unrolled
  model's count over the scanned one's, both from the lowered (not compiled) global program;
  1.0 for a model that is not scanned. `unrolled`: the unrolled model's cost when the caller
  has it (`global_costs`'s first)."""
  keys = ("flops", "bytes accessed")
  if not run.config.model.get("scan_layers", False):
    return dict.fromkeys(keys, 1.0)
  if unrolled is None:
    unrolled = _global_cost(_variant(run, scan_layers=False), run)
  scanned = _global_cost(run.paradigm, run)
  return {k: unrolled.get(k, 0.0) / scanned[k] if scanned.get(k) else 1.0 for k in keys}


def global_costs(run: Run) -> tuple[dict[str, float], dict[str, float]]:
  """XLA's cost analysis of one training step on the whole batch, from the global program of
  the model unrolled (`scan_layers` off): (with its activation recomputation, what the devices
  execute; without it, `remat` off: the model's own FLOPs, MFU's numerator). The same dict twice
  when the model recomputes nothing. Divided by the devices, a device's share; a compiled
  per-device count can fall short of it, since the TPU compiler turns some sharded matmuls into
  loops (collective matmuls) whose bodies its cost analysis counts once."""
  model = run.config.model
  unrolled = {"scan_layers": False} if model.get("scan_layers", False) else {}
  own = dict(unrolled, **{k: v for k, v in (("remat", False), ("remat_policy", ""))
                          if k in model and model[k] != v})
  executed = _global_cost(_variant(run, **unrolled) if unrolled else run.paradigm, run)
  return executed, (executed if own == unrolled else _global_cost(_variant(run, **own), run))


def compile_train_step(run: Run) -> Any:
  """`run.train_step` compiled for the run's state and batch layouts (jax.stages.Compiled)."""
  return run.train_step.lower(run.abstract, abstract_batch(run), run.step_rng).compile()


@dataclasses.dataclass(frozen=True)
class Settings:
  """The fields of `config` the training loop reads after `build`, read once up front (so that
  `prepare` sees every field a run uses before anything is compiled or written)."""
  log_every: int
  eval_every: int
  checkpoint_every: int
  checkpoint_every_secs: float
  keep_checkpoints: int
  keep_every: int
  profile_steps: tuple[int, int]
  memory_limit_gb: float
  prefetch: int
  device_prefetch: int
  grad_accum_steps: int
  init_from: dict[str, Any] | None  # config.init_from when it names a workdir
  first_step_timeout_secs: float = 0.0
  logging: dict[str, Any] | None = None  # config.logging (train.writers)
  huge_pages_note: str = ""  # train.huge_pages asked for, not in effect here: why (one line)

  @classmethod
  def of(cls, config: mlc.ConfigDict) -> "Settings":
    t, d = config.train, config.data
    init = config.get("init_from")
    return cls(t.log_every, t.eval_every, t.checkpoint_every, float(t.checkpoint_every_secs),
               t.keep_checkpoints, t.keep_every, tuple(t.profile_steps), float(t.memory_limit_gb),
               d.prefetch, device_prefetch(d.device_prefetch), config.optim.grad_accum_steps,
               init.to_dict() if init is not None and (init.workdir or init.get("path"))
               else None,
               float(t.first_step_timeout_secs), config.logging.to_dict(),
               huge_pages.not_in_effect(bool(t.huge_pages)))


def device_prefetch(size: int) -> int:
  """`data.device_prefetch` resolved: -1 is 2 on GPU and TPU, where a transfer runs beside the
  step, and 0 on CPU, where `jax.device_put` is a copy in the calling thread and the jitted step
  places a numpy batch itself for less (mnist1d_cnn: 3% of the wall time, 8% of the CPU time;
  docs/benchmarks.md)."""
  if size >= 0:
    return size
  return 0 if jax.default_backend() == "cpu" else 2


def prepare(config: mlc.ConfigDict) -> tuple[Run, Settings]:
  """`build(config)`, its evaluation and sampling steps traced (abstractly) and the loop's
  `Settings`, all under a `field_use.Record`: a field set to a non-default value that none of
  them reads has no effect on the run, and is refused. Nothing is compiled or written.

  Raises:
    ConfigError: as `build`, and a set field nothing reads (`field_use.check_unread`).
    DataError, ValueError: as `build`.
  """
  with field_use.Record(config) as record:
    run = build(config)
    state, batch = run.abstract, abstract_batch(run)
    run.eval_step.trace(state, batch, run.step_rng)
    if run.sample_grid is not None:
      run.sample_grid.trace(state)
    settings = Settings.of(config)
  field_use.check_unread(config, config_lib.base(config.paradigm), record)
  return run, settings
