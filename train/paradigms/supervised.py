"""Supervised learning: classification (softmax cross-entropy with label smoothing and class
weights), next-token prediction, and regression (mean squared error).

Batches are `{"inputs": (B, ...), "label": (B,) int or (B, ...) float, "mask": (B,) float}`.
In training, `mask` carries per-example weights (class weights, else ones) and the loss is
`sum(mask * loss) / B`; in evaluation it is 1 for real examples and 0 for padding.

Next-token prediction is classification at every position: `label` and `mask` are (B, T), the
model's outputs (B, T, V), and the loss and accuracy are per token (`sum(mask * loss) / (B T)`
in training; sums over unmasked tokens in evaluation). Evaluation also reports
`bits_per_token`, the cross-entropy in bits (bits per character for byte-level text).

The model: any Flax module called as `model.apply(variables, inputs, train=...)` (with a
`dropout` rng stream and mutable `batch_stats` where it has them) that returns outputs of shape
(B, num_classes), (B, T, vocab_size) for next-token windows, or (B, ...) for regression. Token
windows also need `vocab_size`; classification checks labels against `num_classes` where the
model has it.

Classification can mix examples on the device (`supervised.mixup`, `supervised.cutmix`: Beta
parameters; `train/mixing.py`): the loss is then the cross-entropy against the mixed soft
targets, and training accuracy compares with each example's own label.

A classifier can learn from trained teachers instead of (or beside) its labels: the `distill`
section (`train/distill.py`), the teachers run on the same augmented batch inside the step.

Config sections: `supervised` (loss, label smoothing, mixing), `distill` (teachers, temperature,
label weight) and `report` (what `python -m eval` draws and chooses for a classifier).
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

import data as data_lib
from data import preprocess, transforms
from data import text as data_text
from train import batch_slices as slices_lib
from train import distill as distill_lib
from train import lora as lora_lib
from train import mixing as mixing_lib
from train import optim
from train import state as state_lib
from train.errors import ConfigError, check_choice, check_fraction, check_positive
from train.paradigms.common import Paradigm

LOSSES = ("cross_entropy", "mse")
PRECISIONS = ("float32", "bfloat16")
CONSOLE_METRICS = ("loss", "accuracy", "bits_per_token", "mae")  # shown on the console line


def defaults() -> dict[str, mlc.ConfigDict]:
  """The `supervised` and `report` config sections with their defaults."""
  s = mlc.ConfigDict()
  s.loss = "cross_entropy"               # cross_entropy|mse
  s.label_smoothing = 0.0
  s.mixup = 0.0                          # Beta(a, a) mixing ratio on the device; 0 = off
  s.cutmix = 0.0                         # Beta(a, a) CutMix (images); 0 = off
  r = mlc.ConfigDict()                   # python -m eval, for classifiers
  r.threshold_metric = "recall"          # binary: choose the decision threshold...
  r.threshold_target = 0.95              # ...that reaches this recall|precision
  r.bins = 15                            # calibration bins
  r.examples = 4                         # attribution examples drawn
  return {"supervised": s, "distill": distill_lib.defaults(), "report": r}


def validate(config: Any) -> None:
  """Checks the `supervised` and `report` sections. Raises ConfigError naming field and value."""
  check_choice(config.supervised.loss, LOSSES, "supervised.loss")
  check_fraction(config.supervised.label_smoothing, "supervised.label_smoothing")
  for field in ("mixup", "cutmix"):
    check_positive(config.supervised[field], f"supervised.{field}", allow_zero=True)
    if config.supervised[field] > 0 and (config.supervised.loss != "cross_entropy" or
                                         config.data.seq_len > 0):
      raise ConfigError(f"supervised.{field}={config.supervised[field]} mixes class targets: "
                        "expected supervised.loss='cross_entropy' and data.seq_len=0")
  distill_lib.validate(config)
  r = config.report  # train.config.validate has checked that the sections are there
  check_choice(r.threshold_metric, ("recall", "precision"), "report.threshold_metric")
  if not 0.0 < r.threshold_target <= 1.0:
    raise ConfigError(f"report.threshold_target={r.threshold_target}; expected a "
                      f"{r.threshold_metric} in (0, 1]")
  check_positive(r.bins, "report.bins")
  check_positive(r.examples, "report.examples", allow_zero=True)


def per_example_loss(outputs: jnp.ndarray, labels: jnp.ndarray, loss: str,
                     label_smoothing: float = 0.0) -> jnp.ndarray:
  """Losses in nats (cross-entropy: shape of `labels`, (B,) or (B, T)) or squared units (mse:
  (B,)) from float32 outputs."""
  outputs = outputs.astype(jnp.float32)
  if loss == "cross_entropy":
    targets = jax.nn.one_hot(labels, outputs.shape[-1])
    if label_smoothing > 0:
      targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(outputs, targets)
  target = labels.astype(jnp.float32).reshape(labels.shape[0], -1)
  return jnp.mean(jnp.square(outputs.reshape(outputs.shape[0], -1) - target), axis=-1)


def _check_model_tokens(config: Any, model) -> None:
  """Next-token windows: every token of both splits must be in the model's vocabulary."""
  vocab = getattr(model, "vocab_size", 0)
  if not vocab:
    raise ConfigError(
        f"data.seq_len={config.data.seq_len} trains on token ids; model {config.model.name} "
        "needs model.vocab_size > 0")
  for split in (config.data.train_split, config.data.eval_split):
    if data_lib.is_streaming(config.data, split):
      # Not read whole: the first batch's tokens (byte values; a vocabulary of 256 covers any).
      stream = data_lib.build_pipeline(config.data, split, train=False, seed=0).dataset[0][
          "label"]
    else:
      stream = data_text.token_stream(config.data, split)  # bytes, or data.tokenizer's ids
    top = int(stream.max()) if len(stream) else 0
    for field, size in (("vocab_size", vocab), ("num_classes", getattr(model, "num_classes",
                                                                       vocab))):
      if top >= size:
        raise data_lib.DataError(
            f"data.source={config.data.source!r} split {split!r}: token id {top} is out of "
            f"range for model.{field}={size} (expected ids in [0, {size - 1}])")


def _check_regression_width(config: Any, num_classes: int) -> None:
  """Regression: the model's outputs must be as many as the values of one example's target."""
  for split in (config.data.train_split, config.data.eval_split):
    if data_lib.is_streaming(config.data, split):
      continue
    labels = data_lib.load_split(config.data, split).labels
    width = int(np.prod(labels.shape[1:])) if labels.ndim > 1 else 1
    if width != num_classes:
      raise data_lib.DataError(
          f"model.num_classes={num_classes}: the regression targets of data.source="
          f"{config.data.source!r} split {split!r} have {width} value(s) per example; expected "
          f"model.num_classes={width}")


def check_data(config: Any, model: nn.Module) -> None:
  """Every label (or, for next-token windows, every token id) of both splits must index one of
  the model's outputs; a regression model has one output per target value.

  Raises:
    ConfigError: next-token windows for a model without a vocabulary.
    DataError: a label or token id out of range, naming the split and the model field.
  """
  if config.data.seq_len > 0:
    _check_model_tokens(config, model)
    return
  num_classes = getattr(model, "num_classes", None)
  if num_classes is None:
    return
  if config.supervised.loss == "mse":
    _check_regression_width(config, num_classes)
    return
  keep = tuple(config.data.keep_classes)
  for split in (config.data.train_split, config.data.eval_split):
    if data_lib.is_streaming(config.data, split):
      continue  # not read whole: each batch's labels are checked as it is read
    labels = data_lib.load_split(config.data, split).labels
    if keep:  # only these classes are trained and evaluated
      labels = labels[np.isin(labels, keep)]
    data_lib.check_labels(labels, num_classes, f"model.num_classes={num_classes} with "
                          f"data.source={config.data.source!r} split {split!r}")


def make(model: nn.Module, config: Any, *, total_steps: int | None = None,
         batch_slices: int = 1) -> Paradigm:
  """The supervised step factory; `total_steps` sizes the learning-rate schedule;
  `batch_slices` > 1 runs the training pass over that many independent slices of the batch
  (`train.xla_cpu_batch_slices` on a one-CPU mesh: `train/batch_slices.py`)."""
  pruned = bool(config.get("init_from", {}).get("prune", 0.0))
  tx, lr = optim.make(config.optim, total_steps or config.train.steps, keep_zeros=pruned)
  loss_kind = config.supervised.loss
  smoothing = config.supervised.label_smoothing
  # mixed precision: the forward and backward passes in bfloat16 from a cast of the float32
  # parameters; losses (and so the gradients' accumulation into float32) in float32
  compute = state_lib.compute_dtype(config)
  log_norms = bool(config.train.log_norms)  # the norms' metrics (optim.norms)
  low = state_lib.in_compute_dtype(model, compute)  # the model computing in `compute`
  mixing = config.supervised.mixup > 0 or config.supervised.cutmix > 0
  lora = config.optim.get("lora")
  takes_segments = getattr(model, "takes_segments", False)
  num_classes = getattr(model, "num_classes", 0)
  teachers = config.get("distill", {}).get("teachers", ())
  teacher_probs = distill_lib.load_teachers(config, num_classes) if teachers else None
  temperature = float(config.distill.temperature) if teachers else 1.0
  label_weight = float(config.distill.label_weight) if teachers else 1.0
  # uint8 training pixels normalised here (`data.image.normalize_on_device`); float batches pass
  pixels = preprocess.device_normalizer(config.data.image, transforms.DTYPES[config.data.dtype])

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> state_lib.TrainState:
    params_rng, dropout_rng = jax.random.split(rng)
    variables = dict(model.init({"params": params_rng, "dropout": dropout_rng},
                                pixels(batch["inputs"]), train=False))
    variables.pop("intermediates", None)
    params = variables.pop("params")
    if lora_lib.enabled(lora):
      params = lora_lib.init(params, lora, jax.random.fold_in(params_rng, 1))
    return state_lib.create(params, tx.init(params), model_state=variables)

  def apply(state, params, inputs, train: bool, rng=None, segments=None):
    params = lora_lib.merged(params, lora)  # W + alpha / rank A @ B, where adapters train
    if compute is not None:
      params = state_lib.cast_params(params, compute)
      inputs = state_lib.cast_floating(inputs, compute)
    variables = {"params": params, **state.model_state}
    mutable = list(state.model_state) if train and state.model_state else False

    def call(batched, rng):
      inputs, segments = batched
      extra = {"segments": segments} if segments is not None and takes_segments else {}
      return low.apply(variables, inputs, train=train, rngs={"dropout": rng} if rng is not None
                       else None, mutable=mutable, **extra)
    # the training pass as independent chains of ops (train/batch_slices.py)
    out = slices_lib.sliced(call, batch_slices if train else 1, (inputs, segments), rng,
                              mutable)
    return out if mutable else (out, state.model_state)

  def train_step(state, batch, rng):
    chex.assert_equal_shape_prefix([batch["inputs"], batch["label"], batch["mask"]], 1)
    if loss_kind == "cross_entropy":
      chex.assert_equal_shape([batch["label"], batch["mask"]])
    else:
      chex.assert_rank(batch["mask"], 1)
    rng = jax.random.fold_in(rng, state.step)

    inputs, targets = pixels(batch["inputs"]), None
    if mixing:
      targets = jax.nn.one_hot(batch["label"], num_classes)
      if smoothing > 0:
        targets = optax.smooth_labels(targets, smoothing)
      inputs, targets = mixing_lib.mix(jax.random.fold_in(rng, 1), inputs, targets,
                                       config.supervised.mixup, config.supervised.cutmix)

    # consistent teaching: the teachers see exactly the student's (augmented, mixed) inputs
    taught = teacher_probs(inputs) if teacher_probs is not None else None

    def loss_fn(params):
      outputs, model_state = apply(state, params, inputs, True, rng, batch.get("segments"))
      aux = {}
      if targets is None:
        per = per_example_loss(outputs, batch["label"], loss_kind, smoothing)
      else:
        per = optax.softmax_cross_entropy(outputs.astype(jnp.float32), targets)
      if taught is not None:
        soft, kl = distill_lib.loss(outputs, taught, temperature)
        per = label_weight * per + (1.0 - label_weight) * soft
        aux["distill_kl"] = jnp.sum(kl * batch["mask"]) / kl.size
      return jnp.sum(per * batch["mask"]) / per.size, (outputs, model_state, aux)

    (loss, (outputs, model_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    params, opt_state, _, norms = optim.apply(config.optim, tx, lr, grads, state.opt_state,
                                              state.params, log_norms=log_norms)
    metrics = {"loss": loss, **norms}
    if loss_kind == "cross_entropy":
      metrics["accuracy"] = jnp.mean(jnp.argmax(outputs, -1) == batch["label"])
    if taught is not None:
      metrics["distill_kl"] = aux["distill_kl"]
      metrics["teacher_accuracy"] = jnp.mean(jnp.argmax(taught, -1) == batch["label"])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, metrics

  def eval_step(state, batch, rng):
    del rng
    outputs, _ = apply(state, state.params, pixels(batch["inputs"]), False,
                       segments=batch.get("segments"))
    m = batch["mask"]
    per = per_example_loss(outputs, batch["label"], loss_kind)
    sums = {"loss_sum": jnp.sum(per * m), "count": jnp.sum(m)}
    if loss_kind == "cross_entropy":
      sums["accuracy_sum"] = jnp.sum((jnp.argmax(outputs, -1) == batch["label"]) * m)
      if batch["label"].ndim > 1:
        sums["bits_per_token_sum"] = sums["loss_sum"] / jnp.log(2.0)
    else:
      err = outputs.reshape(outputs.shape[0], -1) - batch["label"].reshape(outputs.shape[0], -1)
      sums["mae_sum"] = jnp.sum(jnp.mean(jnp.abs(err), axis=-1) * m)
    return sums

  def predict(state, inputs):
    return apply(state, state.params, pixels(inputs), False)[0]

  return Paradigm(init=init, train_step=train_step, eval_step=eval_step, predict=predict,
                  schedule=lr)
