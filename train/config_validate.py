"""Validation of an experiment's config: every value that types alone do not catch, checked
before any compute, each refusal one line naming the field, the value and what was expected
(`train.config.validate`, re-exported there)."""

from __future__ import annotations

import re
from typing import Any

import ml_collections as mlc

from data import label_noise as data_label_noise
from data import object_storage
from data import pipeline as data_pipeline
from data import preprocess as data_preprocess
from data import synthetic as data_synthetic
from data import tokenizer as data_tokenizer
from data import transforms as data_transforms
from train import (
  batch_slices,
  cpu_optimizer,
  evaluators,
  field_use,
  files,
  paradigms,
  writers,
)
from train.errors import ConfigError, check_choice, check_positive

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
PRECISIONS = ("float32", "bfloat16")


def validate(config: mlc.ConfigDict) -> None:
  """Checks values that types alone do not catch: the common fields here, the paradigm's own
  sections in its module's `validate`. Raises ConfigError naming field and value. Its reads are
  not reads by the run (`train.field_use`)."""
  with field_use.unrecorded():
    _validate(config)


def _validate(config: mlc.ConfigDict) -> None:
  for key in ("seed", "paradigm", "data", "model", "optim", "train", "mesh"):
    if key not in config:
      raise ConfigError(f"config has no field {key!r}; start experiments from train.config.base()")
  paradigm = paradigms.get(config.paradigm)
  d = config.data
  check_choice(d.normalize, data_transforms.NORMALIZATIONS, "data.normalize")
  check_choice(d.sampler, data_pipeline.SAMPLERS, "data.sampler")
  check_choice(d.dtype, tuple(data_transforms.DTYPES), "data.dtype")
  check_choice(d.class_weights, data_pipeline.CLASS_WEIGHTS, "data.class_weights")
  if d.binarize and d.normalize != "unit":
    raise ConfigError(f"data.binarize=True with data.normalize={d.normalize!r}; binarising "
                      "thresholds inputs scaled to [0, 1]: expected data.normalize='unit'")
  check_positive(d.batch_size, "data.batch_size")
  check_positive(d.eval_batch_size, "data.eval_batch_size")
  if not object_storage.is_remote(d.data_dir):  # a URL: data/remote_data_dir.py, at its use
    files.check_directory(d.data_dir, "data.data_dir")
  for f in ("prefetch", "workers", "seq_len"):
    check_positive(d[f], f"data.{f}", allow_zero=True)
  if d.device_prefetch < -1:
    raise ConfigError(f"data.device_prefetch={d.device_prefetch}; expected -1 (2 on GPU and "
                      "TPU, 0 on CPU) or a count >= 0")
  if d.eval_workers < -1:
    raise ConfigError(f"data.eval_workers={d.eval_workers}; expected -1 (as data.workers) or a "
                      "count >= 0")
  try:
    data_label_noise.check(d.label_noise)
    data_synthetic.check(d.synthetic)
    data_preprocess.check(d.image)
    data_pipeline.in_memory_setting(d.in_memory)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  for f in ("shift", "crop_padding", "noise_std"):
    check_positive(d.augment[f], f"data.augment.{f}", allow_zero=True)
  batch_slices.check(config.train.xla_cpu_batch_slices, d.batch_size, config.paradigm)
  if d.image.normalize_on_device and config.paradigm != "supervised":
    raise ConfigError(f"data.image.normalize_on_device=True with paradigm "
                      f"{config.paradigm!r}; the supervised step alone normalises uint8 "
                      "pixels: expected paradigm 'supervised' or normalize_on_device=False")
  if d.image.normalize_on_device and (d.augment.noise_std > 0 or d.binarize):
    raise ConfigError("data.image.normalize_on_device=True with data.augment.noise_std="
                      f"{d.augment.noise_std} / data.binarize={d.binarize}: both act on "
                      "normalised pixels on the host; expected noise_std=0 and binarize=False")
  o = config.optim
  check_choice(o.name, OPTIMIZERS, "optim.name")
  check_choice(o.schedule, SCHEDULES, "optim.schedule")
  check_choice(o.mu_dtype, ("float32", "bfloat16"), "optim.mu_dtype")
  check_positive(o.learning_rate, "optim.learning_rate")
  for f in ("warmup_steps", "weight_decay", "clip_norm", "end_lr_factor"):
    check_positive(o[f], f"optim.{f}", allow_zero=True)
  check_positive(o.grad_accum_steps, "optim.grad_accum_steps")
  cpu_optimizer.check(config)
  t = config.train
  check_positive(t.steps, "train.steps")
  if t.epochs is not None:
    check_positive(t.epochs, "train.epochs")
  check_positive(t.log_every, "train.log_every")
  for f in ("eval_every", "checkpoint_every", "keep_every", "checkpoint_every_secs"):
    check_positive(t[f], f"train.{f}", allow_zero=True)
  check_positive(t.keep_checkpoints, "train.keep_checkpoints")
  check_positive(t.memory_limit_gb, "train.memory_limit_gb", allow_zero=True)
  check_positive(t.first_step_timeout_secs, "train.first_step_timeout_secs", allow_zero=True)
  _check_evals(config.get("evals", {}))
  if "logging" in config:  # runs saved before the section existed
    writers.check(config.logging)
  a, b = (tuple(t.profile_steps) + (None, None))[:2]
  if len(tuple(t.profile_steps)) != 2 or (a, b) != (0, 0) and not (
      isinstance(a, int) and isinstance(b, int) and 1 <= a <= b):
    raise ConfigError(f"train.profile_steps={tuple(t.profile_steps)}; expected (A, B) with "
                      "1 <= A <= B, or (0, 0) for no trace")
  for field, patterns in (("optim.freeze", config.optim.get("freeze", ())),
                          ("init_from.include", config.get("init_from", {}).get("include", ())),
                          ("init_from.skip", config.get("init_from", {}).get("skip", ()))):
    _check_patterns(field, patterns)
  if d.get("tokenizer", "bytes") != "bytes":  # a bad spec or file: one line, before any work
    data_tokenizer.get(d.tokenizer)
  _check_init_from(config.get("init_from", {}))
  _check_lora(config)
  prune = config.get("init_from", {}).get("prune", 0.0)
  if not 0.0 <= prune < 1.0:
    raise ConfigError(f"init_from.prune={prune}; expected a fraction in [0, 1)")
  if prune and not config.init_from.workdir:
    raise ConfigError(f"init_from.prune={prune} prunes a trained run's weights; set "
                      "init_from.workdir")
  precision = t.get("precision", "float32")  # runs saved before the field existed
  check_choice(precision, PRECISIONS, "train.precision")
  if precision not in paradigm.PRECISIONS:
    raise ConfigError(f"train.precision={precision!r} is not implemented for "
                      f"paradigm={config.paradigm!r}; expected one of {list(paradigm.PRECISIONS)}")
  for section in paradigm.defaults():
    if section not in config:
      raise ConfigError(f"paradigm={config.paradigm!r} needs the config section {section!r}; "
                        f"start experiments from train.config.base({config.paradigm!r})")
  paradigm.validate(config)
  m = config.mesh
  if m.fsdp < 1 or m.tensor < 1 or (m.data < 1 and m.data != -1):
    raise ConfigError(f"mesh=(data={m.data}, fsdp={m.fsdp}, tensor={m.tensor}); expected "
                      "positive sizes (data may be -1: all devices left over)")
  if config.sharding.sequence_parallel and m.tensor == 1:
    raise ConfigError("sharding.sequence_parallel=True with mesh.tensor=1; expected mesh.tensor "
                      "> 1 (it splits along the sequence the activations that tensor "
                      "parallelism leaves whole on each device of a tensor group)")
  for i, rule in enumerate(config.sharding.rules):
    if (not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str)
        or not isinstance(rule[1], (tuple, list))):
      raise ConfigError(f"sharding.rules[{i}]={rule!r}; expected (regex, spec) with spec a "
                        "tuple of mesh axes or None, one per dimension")
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ConfigError(f"sharding.rules[{i}] regex {rule[0]!r}: {e}") from None


EVAL_FIELDS = evaluators.PARADIGM_FIELDS


def _check_evals(evals: Any) -> None:
  for name, e in evals.items():
    where = f"evals.{name}"
    if name in ("train", "eval"):
      raise ConfigError(f"{where}: the name {name!r} is taken by the training records and "
                        "data.eval_split's evaluation; expected another name")
    kind = evaluators.type_of(e)
    evaluators.check_type(kind, where)
    if kind != evaluators.BUILT_IN:
      evaluators.every(name, e)
      continue  # the type's own fields are checked when it is built
    unknown = sorted(set(e.keys()) - set(EVAL_FIELDS))
    if unknown:
      raise ConfigError(f"{where} has field(s) {unknown}; expected some of {list(EVAL_FIELDS)}")
    if not isinstance(e.get("split"), str) or not e.get("split"):
      raise ConfigError(f"{where}.split={e.get('split')!r}; expected a split name such as "
                        "'test' or 'train[:10%]'")
    for f in ("every", "batch_size"):
      v = e.get(f, 0)
      if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"{where}.{f}={v!r}; expected an integer >= 0")
    if not isinstance(e.get("source", ""), str):
      raise ConfigError(f"{where}.source={e.get('source')!r}; expected a source name")


def _check_patterns(field: str, patterns: Any) -> None:
  """Raises ConfigError naming `field` and the first of `patterns` that is no regular
  expression."""
  for pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"{field} pattern {pattern!r} is not a regular expression ({e})")


INIT_FORMATS = ("strata", "torchvision", "timm", "big_vision", "hf")


def _check_init_from(init: Any) -> None:
  """`init_from.format` names a known format, with `workdir` for "strata" and `path` for the
  others (`train.transfer`); `rename` holds (regex, replacement) pairs."""
  fmt = init.get("format", "strata")
  check_choice(fmt, INIT_FORMATS, "init_from.format")
  if fmt == "strata" and init.get("path"):
    raise ConfigError(f"init_from.path={init.path!r} names a published checkpoint; set "
                      "init_from.format to its layout (torchvision, timm, hf), or use "
                      "init_from.workdir for a strata run")
  if fmt != "strata" and (init.get("workdir") or not init.get("path")):
    raise ConfigError(f"init_from.format={fmt!r} reads a published checkpoint from "
                      "init_from.path (and init_from.workdir stays empty); "
                      f"got path={init.get('path', '')!r}, workdir={init.get('workdir', '')!r}")
  for pair in init.get("rename", ()):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and
            all(isinstance(x, str) for x in pair)):
      raise ConfigError(f"init_from.rename item {pair!r}; expected a (regex, replacement) pair")
    _check_patterns("init_from.rename", (pair[0],))


def _check_lora(config: Any) -> None:
  """`optim.lora`: a rank >= 0 (0 off), alpha > 0, regexes for targets; supervised runs only,
  and not with `optim.freeze` (LoRA already freezes everything but its adapters)."""
  lora = config.optim.get("lora", {})
  rank = lora.get("rank", 0)
  if not isinstance(rank, int) or rank < 0:
    raise ConfigError(f"optim.lora.rank={rank!r}; expected an int >= 0 (0: no LoRA)")
  if not rank:
    return
  check_positive(lora.alpha, "optim.lora.alpha")
  if config.paradigm != "supervised":
    raise ConfigError(f"optim.lora.rank={rank} with paradigm={config.paradigm!r}; LoRA adapts "
                      "the supervised paradigm's models (fine-tuning a classifier or an LM)")
  if tuple(config.optim.get("freeze", ())):
    raise ConfigError(f"optim.lora.rank={rank} with optim.freeze={tuple(config.optim.freeze)}: "
                      "LoRA trains only its adapters already; leave optim.freeze empty")
  _check_patterns("optim.lora.targets", lora.targets)
