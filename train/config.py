"""The experiment schema: every field that changes a result, with its default, validated before
any compute.

An experiment file starts from `base(paradigm)` (the common fields here, the paradigm's own
sections from its module), sets its fields, and returns `lock(config)`. A locked
ConfigDict rejects unknown keys (a typo in an experiment or in `--config.train.stepz=1` is an
error) and ml-collections rejects a value of the wrong type. `validate` checks values.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import traceback
from typing import Any

import ml_collections as mlc
from ml_collections import config_dict

from data import label_noise as data_label_noise
from data import preprocess as data_preprocess
from data import synthetic as data_synthetic
from data import transforms as data_transforms
from train import paradigms
from train import writers as train_writers
from train.config_fields import (  # noqa: F401  (the field helpers, re-exported)
  closest_fields,
  fields,
  get_field,
  parse_sets,
  parse_value,
  set_field,
)
from train.config_validate import (  # noqa: F401  (validation, re-exported)
  EVAL_FIELDS,
  OPTIMIZERS,
  PRECISIONS,
  SCHEDULES,
  validate,
)
from train.errors import ConfigError, FlagError


def base(paradigm: str = "supervised") -> mlc.ConfigDict:
  """The common fields with their defaults, plus the sections `paradigm` owns (its module's
  `defaults()`). `model` is free-form: its fields are the model's.

  Raises:
    ConfigError: an unknown paradigm, listing the registered ones.
  """
  c = mlc.ConfigDict()
  c.seed = 0
  c.paradigm = paradigm

  c.data = mlc.ConfigDict()
  c.data.source = "mnist1d"                         # or a catalog name, "folder:PATH",
                                                    # "table:PATH" (data/folder.py, table.py)
  c.data.data_dir = config_dict.placeholder(str)  # default ~/tensorflow_datasets
  c.data.builder_config = mlc.ConfigDict()          # builder arguments (mnist1d's generator)
  c.data.download = False                           # catalog datasets: try to download
  c.data.label = ""                                 # "table:PATH": the label column
  c.data.features = ()                              # ... the feature columns; () = the others
  c.data.input_key = ""                             # "" = the source's supervised keys
  c.data.label_key = ""
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.batch_size = 100                           # global, across processes
  c.data.eval_batch_size = 500
  c.data.seq_len = 0                                # text sources: next-token windows of this
  c.data.tokenizer = "bytes"                        # text: bytes|hf:FILE|sentencepiece:FILE
  c.data.normalize = "none"                         # none|global|per_channel|per_feature|unit
  c.data.binarize = False                           # after normalize="unit": x >= 0.5 -> 1
  c.data.dtype = "float32"                          # float32|bfloat16: floating inputs as
                                                    # batches leave the pipeline
  c.data.keep_classes = ()                          # only these labels, in every split; () = all
  c.data.sampler = "shuffle"                        # shuffle|sequential|balanced
  c.data.class_weights = "none"                     # none|balanced
  c.data.prefetch = 0                               # batches made ahead on a thread
  c.data.device_prefetch = -1                       # batches sent to the devices ahead; -1:
                                                    # 2 on GPU and TPU, 0 on CPU
  c.data.in_memory = "auto"                         # auto|True|False (auto: streams past 2 GiB)
  c.data.workers = 0                                # streaming: processes making batches
  c.data.eval_workers = -1                          # ...for evaluation (-1 = data.workers)
  c.data.image = data_preprocess.defaults()        # per-example image ops (data/preprocess.py)
  c.data.augment = data_transforms.defaults()       # batch augmentation (data/transforms.py)
  c.data.label_noise = data_label_noise.defaults()  # known wrong training labels, for audits
  c.data.synthetic = data_synthetic.defaults()      # a generator's samples in every batch
  c.data.exclude_examples = ""                      # JSON list of training examples to leave out

  c.model = mlc.ConfigDict()
  c.model.name = "cnn.CNN"

  c.optim = mlc.ConfigDict()
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.end_lr_factor = 0.0                       # cosine: final lr / peak lr
  c.optim.step_boundaries = (0.5, 0.75)             # step: fractions of the run
  c.optim.step_factor = 0.1
  c.optim.momentum = 0.9
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0                        # skips biases and norm scales
  c.optim.clip_norm = 0.0                           # global-norm clipping, 0 = off
  c.optim.grad_accum_steps = 1                      # optax.MultiSteps
  c.optim.mu_dtype = "float32"                      # float32|bfloat16: first moment's dtype
  c.optim.kernel = "xla"                            # xla|cpu: adam(w) as one CPU call
  c.optim.freeze = ()                               # regexes of parameter paths kept fixed
  c.optim.lora = mlc.ConfigDict()                   # LoRA adapters (train/lora.py)
  c.optim.lora.rank = 0                             # 0 = off; > 0: only adapters train
  c.optim.lora.alpha = 16.0                         # the update is alpha / rank x A @ B
  c.optim.lora.targets = (r"attn/(query|key|value|out)/kernel$",)  # regexes of kernels

  c.init_from = mlc.ConfigDict()                    # transfer: start from a trained run
  c.init_from.workdir = ""                          # its workdir ("" = random initialisation)
  c.init_from.format = "strata"                     # strata|torchvision|timm|big_vision|hf
  c.init_from.path = ""                             # a published checkpoint's file or folder
  c.init_from.include = ()                          # regexes of the paths to take; () = every
                                                    # path whose shape matches
  c.init_from.skip = ()                             # regexes of paths kept at initialisation
  c.init_from.rename = ()                           # (regex, replacement): the source's paths
  c.init_from.prune = 0.0                           # zero this fraction of the copied kernels
                                                    # (global magnitude); they stay zero

  c.train = mlc.ConfigDict()
  c.train.steps = 1000
  c.train.epochs = config_dict.placeholder(float)   # if set, overrides steps
  c.train.log_every = 100
  c.train.eval_every = 1000                         # 0 = only at the end
  c.train.checkpoint_every = 1000                   # 0 = only at the end
  c.train.keep_checkpoints = 3                      # the newest K steps ...
  c.train.keep_every = 0                            # ... and every step divisible by N, for good
  c.train.checkpoint_every_secs = 0.0               # also save when this long since the last
  c.train.profile_steps = (0, 0)                    # (A, B): a jax.profiler trace of steps A..B
  c.train.memory_limit_gb = 0.0                     # per device; 0 = the device's own
  # The first step not done by then (a collective waiting for a process that never comes): one
  # line naming the process, its stacks in the workdir, exit status 1 (train/watchdog.py); 0: off.
  c.train.first_step_timeout_secs = 1800.0
  c.train.log_norms = True                          # gradient, update and parameter norms
                                                    # in the train records (train/optim.norms)
  # XLA:CPU's YNNPACK library calls for dots and reductions (jax's default) in the compiled
  # steps; off (Eigen's dots, XLA's own reductions): the DCGAN and the UNet 1.3-1.4x faster, the
  # other three benchmark workloads within the noise (docs/benchmarks.md). CPU only.
  c.train.xla_cpu_ynnpack = False
  # supervised: the training pass over K independent slices of the batch, which XLA:CPU runs
  # side by side on its threads (train/batch_slices.py: faster for a small Transformer on CPU)
  c.train.xla_cpu_batch_slices = 1
  # malloc's transparent huge pages for XLA:CPU's per-step temporaries: the programs restart once
  # with them (train/huge_pages.py). Steps faster where a step's temporaries are large (the LM's
  # 24%), at about 0.25 s more a process; Linux with glibc 2.35+.
  c.train.huge_pages = False
  c.train.precision = "float32"                     # float32|bfloat16: the compute dtype;
                                                    # parameters and optimizer state stay float32

  # Where the records go besides metrics.jsonl (TensorBoard, W&B) and histograms of the
  # gradients, updates and parameters every N steps (train/writers.py)
  c.logging = train_writers.defaults()

  # Named evaluations beside data.eval_split, big_vision's `config.evals` (train/evaluators.py):
  # NAME = dict(type="paradigm" (default) | "fewshot" | "frechet" | ..., every=steps (0 = at the
  # end), and the type's fields; "paradigm": split=..., batch_size=0 (= data.eval_batch_size),
  # source="" (= data.source)), written to metrics.jsonl with `split` = NAME.
  c.evals = mlc.ConfigDict()

  c.mesh = mlc.ConfigDict()
  c.mesh.data = -1                                  # -1 = all devices left over
  c.mesh.fsdp = 1
  c.mesh.tensor = 1     # > 1: Transformer blocks split over devices (parallel.TENSOR_RULES)
  # Where each array of the train state lives (train/parallel.py): ((regex on its path, spec),
  # ...), first match wins; spec: one mesh axis, tuple of axes or None per dimension.
  c.sharding = mlc.ConfigDict()
  c.sharding.rules = ()
  # With mesh.tensor > 1: a Transformer's activations between its tensor-parallel layers split
  # over "tensor" along the sequence too (Megatron's sequence parallelism; parallel.py)
  c.sharding.sequence_parallel = False
  for name, section in paradigms.get(paradigm).defaults().items():
    c[name] = section
  return c


def with_defaults(saved: dict[str, Any]) -> mlc.ConfigDict:
  """A saved run's config (its config.json) with the fields and sections added to the codebase
  since it was written filled in at their defaults, so tools that restore old runs validate
  them. Saved values always win; free-form sections (`model`, `evals`) are kept as saved."""
  merged = base(saved.get("paradigm", "supervised")).to_dict()

  def merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
      if isinstance(value, dict) and isinstance(into.get(key), dict) and key not in FREE_FORM:
        merge(into[key], value)
      else:
        into[key] = value

  merge(merged, saved)
  return mlc.ConfigDict(merged)


FREE_FORM = ("model", "evals")


def override(config: mlc.ConfigDict, overrides: dict[str, Any],
             flag: str = "--set ") -> mlc.ConfigDict:
  """`config` with SECTION.FIELD values replaced, strings (from a command line's
  `--config.SECTION.FIELD=VALUE` or `--set SECTION.FIELD=VALUE`) parsed as the field's type
  (`parse_value`), then validated. Errors name the item as `flag` + `SECTION.FIELD=VALUE`.

  Raises:
    FlagError: (a ConfigError) with overrides from a command line (`flag` not ""): a field the
      config does not have, a value of the wrong type, or a value `validate` refuses.
    ConfigError: the same with `flag=""` or no overrides.
  """
  try:
    for key, value in (overrides or {}).items():
      where = f"{flag}{key}={value}"
      old = get_field(config, key, where)
      set_field(config, key, parse_value(old, value) if isinstance(value, str) else value, where)
    validate(config)
  except ConfigError as e:
    if overrides and flag:
      raise FlagError(str(e)) from None
    raise
  return config



def load(spec: str) -> mlc.ConfigDict:
  """The config of an experiment, as `python -m train --config SPEC` loads it: SPEC is a file
  `path/to/X.py` or a module `experiments.X`, optionally followed by `:arg`; the result is
  `get_config(arg)` (or `get_config()` without an argument). A file may import the `experiments`
  package's recipes (`from experiments.recipes import gan`) like any module.

  Raises:
    ConfigError: no such file or module, one that defines no get_config, one that does not
      compile or raises while it runs (where; the traceback with STRATA_TRACEBACK=1), or a
      get_config that returns something other than a ConfigDict.
  """
  target, _, arg = spec.partition(":")
  try:
    if target.endswith(".py") or os.sep in target:
      if not os.path.isfile(target):
        raise ConfigError(f"--config={spec}: no experiment file at {os.path.abspath(target)}")
      name = os.path.splitext(os.path.basename(target))[0]
      module_spec = importlib.util.spec_from_file_location(f"_strata_experiment_{name}", target)
      module = importlib.util.module_from_spec(module_spec)
      module_spec.loader.exec_module(module)
    else:
      try:
        module = importlib.import_module(target)
      except ModuleNotFoundError as e:
        if e.name is not None and not target.startswith(e.name):
          raise  # the experiment imports a module that is missing: where, below
        raise ConfigError(f"--config={spec}: no experiment module {target!r} ({e}); expected a "
                          "file path/to/X.py or a module such as experiments.mnist1d_cnn") from None
    if not hasattr(module, "get_config"):
      raise ConfigError(f"--config={spec}: {target} defines no get_config(arg); it is not an "
                        "experiment")
    config = module.get_config(arg) if arg else module.get_config()
  except ConfigError:
    raise
  except SyntaxError as e:
    raise ConfigError(f"--config={spec}: {e.filename}, line {e.lineno}: {e.msg}") from e
  except Exception as e:  # an experiment file is code: say where it failed, in one line
    frame = traceback.extract_tb(e.__traceback__)[-1]
    raise ConfigError(f"--config={spec}: {type(e).__name__}: {e} (at {frame.filename}, line "
                      f"{frame.lineno}; STRATA_TRACEBACK=1 shows the traceback)") from e
  if not isinstance(config, mlc.ConfigDict):
    raise ConfigError(f"--config={spec}: get_config returned a {type(config).__name__}; expected "
                      "an ml_collections.ConfigDict (start from train.config.base())")
  return config


def experiment_name(spec: str) -> str:
  """The experiment's name in a `--config` spec: `mnist1d_cnn` for `experiments/mnist1d_cnn.py`,
  `experiments.mnist1d_cnn` or either with `:arg`."""
  target = spec.partition(":")[0]
  if target.endswith(".py") or os.sep in target:
    return os.path.splitext(os.path.basename(target))[0]
  return target.rpartition(".")[2]


def from_command_line(spec: str, overrides: dict[str, str]) -> mlc.ConfigDict:
  """The experiment `spec` (`--config`) with the `--config.SECTION.FIELD=VALUE` overrides,
  validated and locked: what `python -m train` and `experiments.sweep` run.

  Raises:
    FlagError: the experiment cannot be loaded, or an override names no field or has a value of
      the wrong type or range (naming the field and the closest ones).
  """
  try:
    config = load(spec)
  except ConfigError as e:  # no such experiment, or an argument it does not define
    raise FlagError(str(e)) from None
  with config.unlocked():
    override(config, overrides, flag="--config.")
  return lock(config)


def lock(config: mlc.ConfigDict) -> mlc.ConfigDict:
  config.lock()
  return config


def total_steps(config: mlc.ConfigDict, steps_per_epoch: int) -> int:
  """The run's length in steps: `train.epochs` (if set) converted once, else `train.steps`."""
  if config.train.epochs is not None:
    return max(1, int(round(config.train.epochs * steps_per_epoch)))
  return int(config.train.steps)


def tiny(config: mlc.ConfigDict, steps: int = 20) -> mlc.ConfigDict:
  """The smoke-run schedule every experiment's `tiny` mode shares: `steps` steps, logging,
  evaluating and checkpointing every half of it. Model and data shrinking stay per file."""
  config.train.steps = steps
  config.train.epochs = None
  config.train.log_every = config.train.eval_every = config.train.checkpoint_every = steps // 2
  config.train.huge_pages = False  # a smoke run's steps are small: no restart (train.huge_pages)
  return config


def unknown_arg(experiment: str, arg: str, valid: tuple[str, ...] = ("tiny",)) -> ConfigError:
  """The error for an experiment argument the file does not define."""
  return ConfigError(f"experiments/{experiment}.py: unknown argument {arg!r}; expected one of "
                    f"{list(valid)}")
