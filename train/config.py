"""The experiment schema: every field that changes a result, with its default, validated before
any compute.

An experiment file starts from `base()`, sets its fields, and returns `lock(config)`. A locked
ConfigDict rejects unknown keys (a typo in an experiment or in `--config.train.stepz=1` is an
error) and ml-collections rejects a value of the wrong type. `validate` checks values.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from typing import Any

import ml_collections as mlc
from ml_collections import config_dict

from data import pipeline as data_pipeline
from data import transforms as data_transforms

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
LOSSES = ("cross_entropy", "mse")


PRECISIONS = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A config field with a value that cannot run."""


def base() -> mlc.ConfigDict:
  """All fields with their defaults. `model` is free-form: its fields are the model's."""
  c = mlc.ConfigDict()
  c.seed = 0
  c.paradigm = "supervised"

  c.data = mlc.ConfigDict()
  c.data.source = "mnist1d"
  c.data.data_dir = config_dict.placeholder(str)  # default ~/tensorflow_datasets
  c.data.builder_config = mlc.ConfigDict()          # builder arguments (mnist1d's generator)
  c.data.download = False                           # catalog datasets: try to download
  c.data.input_key = ""                             # "" = the source's supervised keys
  c.data.label_key = ""
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.batch_size = 100                           # global, across processes
  c.data.eval_batch_size = 500
  c.data.seq_len = 0                                # text sources: next-token windows of this
  c.data.normalize = "none"                         # none|global|per_channel|per_feature|unit
  c.data.binarize = False                           # after normalize="unit": x >= 0.5 -> 1
  c.data.keep_classes = ()                          # only these labels, in every split; () = all
  c.data.sampler = "shuffle"                        # shuffle|sequential|balanced
  c.data.class_weights = "none"                     # none|balanced
  c.data.prefetch = 0                               # batches made ahead on a thread
  c.data.augment = mlc.ConfigDict()
  c.data.augment.shift = 0                          # 1-D: max translation in samples
  c.data.augment.noise_std = 0.0                    # additive Gaussian, normalised units
  c.data.augment.crop_padding = 0                   # images: pad-and-crop
  c.data.augment.flip = False                       # images: random left-right flip

  c.model = mlc.ConfigDict()
  c.model.name = "cnn.CNN"

  c.supervised = mlc.ConfigDict()
  c.supervised.loss = "cross_entropy"               # cross_entropy|mse
  c.supervised.label_smoothing = 0.0

  c.reconstruction = mlc.ConfigDict()
  c.reconstruction.beta = 1.0                       # VAE: KL weight after warm-up (beta-VAE)
  c.reconstruction.kl_warmup_steps = 0              # VAE: KL weight rises linearly from 0
  c.reconstruction.eval_samples = 1                 # VAE: posterior samples of the eval ELBO
  c.reconstruction.iwae_samples = 0                 # VAE: k of the eval IWAE bound, 0 = off

  c.adversarial = mlc.ConfigDict()
  c.adversarial.loss = "non_saturating"             # non_saturating|hinge
  c.adversarial.d_learning_rate = 0.0               # discriminator's; 0 = optim.learning_rate
  c.adversarial.n_critic = 1                        # discriminator updates per generator update
  c.adversarial.r1_gamma = 0.0                      # R1 penalty weight on real data, 0 = off
  c.adversarial.ema_decay = 0.999                   # generator average, 0 = off

  c.diffusion = mlc.ConfigDict()
  c.diffusion.schedule = "cosine"                   # linear|cosine
  c.diffusion.steps = 1000                          # T, noising steps
  c.diffusion.prediction = "eps"                    # eps|v: what the denoiser outputs
  c.diffusion.weighting = "simple"                  # simple|min_snr
  c.diffusion.snr_gamma = 5.0                       # min_snr: the SNR cap
  c.diffusion.label_dropout = 0.0                   # conditional: P(null class), for guidance
  c.diffusion.guidance_scale = 1.0                  # sampling: 1 = the conditional model
  c.diffusion.sampler = "ddim"                      # ddpm|ddim
  c.diffusion.sample_steps = 50                     # ddim: timesteps used
  c.diffusion.eta = 0.0                             # ddim: 0 deterministic, 1 DDPM-like noise
  c.diffusion.clip = 0.0                            # bound x0 estimates to [-clip, clip], 0 off
  c.diffusion.ema_decay = 0.999                     # parameter average used for sampling

  c.generative = mlc.ConfigDict()                   # generative paradigms' samples
  c.generative.grid_samples = 100                   # in the grids drawn at every evaluation
  c.generative.reference = ""                       # classifier workdir for eval.generative

  c.report = mlc.ConfigDict()                       # python -m eval, for classifiers
  c.report.threshold_metric = "recall"              # binary: choose the decision threshold...
  c.report.threshold_target = 0.95                  # ...that reaches this recall|precision
  c.report.bins = 15                                # calibration bins
  c.report.examples = 4                             # attribution examples drawn

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
  c.optim.freeze = ()                               # regexes of parameter paths kept fixed

  c.init_from = mlc.ConfigDict()                    # transfer: start from a trained run
  c.init_from.workdir = ""                          # its workdir ("" = random initialisation)
  c.init_from.include = ()                          # regexes of the paths to take; () = every
                                                    # path whose shape matches
  c.init_from.prune = 0.0                           # zero this fraction of the copied kernels
                                                    # (global magnitude); they stay zero

  c.train = mlc.ConfigDict()
  c.train.steps = 1000
  c.train.epochs = config_dict.placeholder(float)   # if set, overrides steps
  c.train.log_every = 100
  c.train.eval_every = 1000                         # 0 = only at the end
  c.train.checkpoint_every = 1000                   # 0 = only at the end
  c.train.keep_checkpoints = 3
  c.train.precision = "float32"                     # float32|bfloat16: the compute dtype;
                                                    # parameters and optimizer state stay float32

  c.mesh = mlc.ConfigDict()
  c.mesh.data = -1                                  # -1 = all devices left over
  c.mesh.fsdp = 1
  return c


def parse_sets(items: list[str] | None) -> dict[str, str]:
  """{"SECTION.FIELD": "VALUE"} from command-line `--set SECTION.FIELD=VALUE` items."""
  out = {}
  for item in items or []:
    key, sep, value = item.partition("=")
    if not sep:
      raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. diffusion.sampler=ddpm")
    out[key] = value
  return out


def override(config: mlc.ConfigDict, overrides: dict[str, Any]) -> mlc.ConfigDict:
  """`config` with SECTION.FIELD values replaced, each cast to the field's type (strings from a
  command line's `--set SECTION.FIELD=VALUE`), then validated.

  Raises:
    ConfigError: a field the config does not have, a value of the wrong type, or a value
      `validate` refuses.
  """
  for key, value in (overrides or {}).items():
    old = get_field(config, key, f"--set {key}={value}")
    try:
      new = (str(value).lower() in ("1", "true")) if isinstance(old, bool) else type(old)(value)
    except (TypeError, ValueError):
      raise ConfigError(f"--set {key}={value!r}: expected a value of type {type(old).__name__}"
                        ) from None
    set_field(config, key, new, f"--set {key}={value}")
  validate(config)
  return config


def fields(config: mlc.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf field's dotted path, e.g. ["data.augment.flip", ..., "seed"]."""
  out = []
  for key in sorted(config.keys()):
    value = config[key]
    path = f"{prefix}{key}"
    out.extend(fields(value, path + ".") if isinstance(value, mlc.ConfigDict) else [path])
  return out


def get_field(config: mlc.ConfigDict, path: str, where: str = "") -> Any:
  """The value at dotted `path`. Raises ConfigError naming the path and the closest fields."""
  node = config
  for part in path.split("."):
    if not isinstance(node, mlc.ConfigDict) or part not in node:
      close = difflib.get_close_matches(path, fields(config), n=3, cutoff=0.6)
      hint = f"; did you mean {' or '.join(close)}?" if close else ""
      raise ConfigError(f"{where or path}: the config has no field {path!r}{hint}")
    node = node[part]
  if isinstance(node, mlc.ConfigDict):
    raise ConfigError(f"{where or path}: {path!r} is a section, not a field; expected one of "
                      f"{fields(node, path + '.')[:8]}")
  return node


def set_field(config: mlc.ConfigDict, path: str, value: Any, where: str = "") -> None:
  """Sets dotted `path` to `value` if it has the field's type: an int for an int field (a bool
  for a bool), an int or float for a float field, a list or tuple for a tuple field (stored as a
  tuple), anything for a field that is None. Does not validate the config as a whole.

  Raises:
    ConfigError: an unknown field, or a value of another type, naming both.
  """
  old = get_field(config, path, where)
  parent, _, leaf = path.rpartition(".")
  node = config
  for part in parent.split(".") if parent else []:
    node = node[part]
  kind = type(old)
  if isinstance(old, bool) or isinstance(value, bool):
    ok = isinstance(old, bool) and isinstance(value, bool)
  elif isinstance(old, int):
    ok = isinstance(value, int)
  elif isinstance(old, float):
    ok = isinstance(value, (int, float))
    value = float(value) if ok else value
  elif isinstance(old, (tuple, list)):
    ok = isinstance(value, (tuple, list))
    value = tuple(value) if ok else value
  elif old is None:
    ok = True
  else:
    ok = isinstance(value, kind)
  if not ok:
    expected = "a list or tuple" if isinstance(old, (tuple, list)) else f"a {kind.__name__}"
    raise ConfigError(f"{where or path}: {path}={value!r} is a {type(value).__name__}; "
                      f"expected {expected} (the field's default is {old!r})")
  try:
    node[leaf] = value
  except TypeError as e:
    raise ConfigError(f"{where or path}: {path}={value!r}: {e}") from None


def load_file(spec: str) -> mlc.ConfigDict:
  """The config of an experiment file, `path/to/X.py` or `path/to/X.py:arg`, as `python -m train
  --config` loads it: `get_config(arg)` (or `get_config()` without an argument).

  Raises:
    ConfigError: the file does not exist or defines no get_config.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config {spec}: no experiment file at {os.path.abspath(path)}")
  name = os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(f"_strata_experiment_{name}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config {spec}: {path} defines no get_config(arg); it is not an "
                      "experiment file")
  return module.get_config(arg) if arg else module.get_config()


def lock(config: mlc.ConfigDict) -> mlc.ConfigDict:
  config.lock()
  return config


def _choice(value, options, field):
  if value not in options:
    raise ConfigError(f"{field}={value!r}; expected one of {list(options)}")


def _positive(value, field, allow_zero=False):
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{field}={value!r}; expected a {'non-negative' if allow_zero else 'positive'} "
                      "number")


def validate(config: mlc.ConfigDict) -> None:
  """Checks values that types alone do not catch. Raises ConfigError naming field and value."""
  from train import paradigms

  for key in ("seed", "paradigm", "data", "model", "optim", "train", "mesh"):
    if key not in config:
      raise ConfigError(f"config has no field {key!r}; start experiments from train.config.base()")
  if config.paradigm not in paradigms.REGISTRY:
    raise ConfigError(f"paradigm={config.paradigm!r}; expected one of {sorted(paradigms.REGISTRY)}")
  d = config.data
  _choice(d.normalize, data_transforms.NORMALIZATIONS, "data.normalize")
  _choice(d.sampler, data_pipeline.SAMPLERS, "data.sampler")
  _choice(d.class_weights, data_pipeline.CLASS_WEIGHTS, "data.class_weights")
  if d.binarize and d.normalize != "unit":
    raise ConfigError(f"data.binarize=True with data.normalize={d.normalize!r}; binarising "
                      "thresholds inputs scaled to [0, 1]: expected data.normalize='unit'")
  _positive(d.batch_size, "data.batch_size")
  _positive(d.eval_batch_size, "data.eval_batch_size")
  _positive(d.prefetch, "data.prefetch", allow_zero=True)
  _positive(d.seq_len, "data.seq_len", allow_zero=True)
  for f in ("shift", "crop_padding", "noise_std"):
    _positive(d.augment[f], f"data.augment.{f}", allow_zero=True)
  o = config.optim
  _choice(o.name, OPTIMIZERS, "optim.name")
  _choice(o.schedule, SCHEDULES, "optim.schedule")
  _positive(o.learning_rate, "optim.learning_rate")
  for f in ("warmup_steps", "weight_decay", "clip_norm", "end_lr_factor"):
    _positive(o[f], f"optim.{f}", allow_zero=True)
  _positive(o.grad_accum_steps, "optim.grad_accum_steps")
  t = config.train
  _positive(t.steps, "train.steps")
  if t.epochs is not None:
    _positive(t.epochs, "train.epochs")
  _positive(t.log_every, "train.log_every")
  for f in ("eval_every", "checkpoint_every"):
    _positive(t[f], f"train.{f}", allow_zero=True)
  _positive(t.keep_checkpoints, "train.keep_checkpoints")
  for field, patterns in (("optim.freeze", config.optim.get("freeze", ())),
                          ("init_from.include", config.get("init_from", {}).get("include", ()))):
    for pattern in patterns:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ConfigError(f"{field} pattern {pattern!r} is not a regular expression ({e})")
  prune = config.get("init_from", {}).get("prune", 0.0)
  if not 0.0 <= prune < 1.0:
    raise ConfigError(f"init_from.prune={prune}; expected a fraction in [0, 1)")
  if prune and not config.init_from.workdir:
    raise ConfigError(f"init_from.prune={prune} prunes a trained run's weights; set "
                      "init_from.workdir")
  precision = t.get("precision", "float32")  # runs saved before the field existed
  _choice(precision, PRECISIONS, "train.precision")
  if precision != "float32" and config.paradigm != "supervised":
    raise ConfigError(f"train.precision={precision!r} is implemented for "
                      f"paradigm='supervised'; got paradigm={config.paradigm!r} (use 'float32')")
  if "supervised" in config:
    _choice(config.supervised.loss, LOSSES, "supervised.loss")
    if not 0.0 <= config.supervised.label_smoothing < 1.0:
      raise ConfigError(f"supervised.label_smoothing={config.supervised.label_smoothing}; "
                        "expected a value in [0, 1)")
  if "reconstruction" in config:
    r = config.reconstruction
    _positive(r.beta, "reconstruction.beta", allow_zero=True)
    _positive(r.kl_warmup_steps, "reconstruction.kl_warmup_steps", allow_zero=True)
    _positive(r.eval_samples, "reconstruction.eval_samples")
    _positive(r.iwae_samples, "reconstruction.iwae_samples", allow_zero=True)
  if "adversarial" in config:
    a = config.adversarial
    from train.paradigms import adversarial

    _choice(a.loss, adversarial.LOSSES, "adversarial.loss")
    _positive(a.d_learning_rate, "adversarial.d_learning_rate", allow_zero=True)
    _positive(a.n_critic, "adversarial.n_critic")
    _positive(a.r1_gamma, "adversarial.r1_gamma", allow_zero=True)
    if not 0.0 <= a.ema_decay < 1.0:
      raise ConfigError(f"adversarial.ema_decay={a.ema_decay}; expected a value in [0, 1)")
  if "report" in config:
    r = config.report
    _choice(r.threshold_metric, ("recall", "precision"), "report.threshold_metric")
    if not 0.0 < r.threshold_target <= 1.0:
      raise ConfigError(f"report.threshold_target={r.threshold_target}; expected a "
                        f"{r.threshold_metric} in (0, 1]")
    _positive(r.bins, "report.bins")
    _positive(r.examples, "report.examples", allow_zero=True)
  if "diffusion" in config:
    from train.paradigms import diffusion

    f = config.diffusion
    _choice(f.schedule, diffusion.SCHEDULES, "diffusion.schedule")
    _choice(f.prediction, diffusion.PREDICTIONS, "diffusion.prediction")
    _choice(f.weighting, diffusion.WEIGHTINGS, "diffusion.weighting")
    _choice(f.sampler, diffusion.SAMPLERS, "diffusion.sampler")
    _positive(f.steps, "diffusion.steps")
    if not 1 <= f.sample_steps <= f.steps:
      raise ConfigError(f"diffusion.sample_steps={f.sample_steps}; expected 1..{f.steps} "
                        "(diffusion.steps)")
    _positive(f.snr_gamma, "diffusion.snr_gamma")
    for field in ("eta", "clip", "guidance_scale"):
      _positive(f[field], f"diffusion.{field}", allow_zero=True)
    if not 0.0 <= f.label_dropout < 1.0:
      raise ConfigError(f"diffusion.label_dropout={f.label_dropout}; expected a value in [0, 1)")
    if not 0.0 <= f.ema_decay < 1.0:
      raise ConfigError(f"diffusion.ema_decay={f.ema_decay}; expected a value in [0, 1)")
  if "generative" in config:
    _positive(config.generative.grid_samples, "generative.grid_samples", allow_zero=True)
  if config.mesh.fsdp < 1 or (config.mesh.data < 1 and config.mesh.data != -1):
    raise ConfigError(f"mesh=(data={config.mesh.data}, fsdp={config.mesh.fsdp}); expected "
                      "positive sizes (data may be -1: all devices left over)")


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
  return config


def unknown_arg(experiment: str, arg: str, valid: tuple[str, ...] = ("tiny",)) -> ValueError:
  """The error for an experiment argument the file does not define."""
  return ValueError(f"experiments/{experiment}.py: unknown argument {arg!r}; expected one of "
                    f"{list(valid)}")
