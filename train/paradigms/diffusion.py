"""The denoising diffusion paradigm: training and evaluation steps and sampling over a denoiser,
with the schedules, targets and samplers of `train.paradigms.diffusion_math`.

The model (any class; `arch.unet.UNet` is the registered one) provides `__call__(x_t, t,
labels=None, train=False) -> (N, *data_shape)`, the eps or v prediction for noisy examples
x_t (N, *data_shape) at int timesteps t (N,), with a `dropout` rng stream when it trains with
dropout; a conditional model takes labels (N,) in [0, num_classes], num_classes being the null
class of classifier-free guidance. Attributes: `data_shape` and `num_classes` (0: unconditional).

Config sections: `diffusion` and `generative` (sample grids, the reference classifier).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc

from train import optim
from train import state as state_lib
from train.errors import ConfigError, check_choice, check_fraction, check_positive
from train.paradigms.common import (
  Paradigm,
  check_examples,
  fixed_inputs,
  generative_defaults,
  require,
  validate_generative,
)
from train.paradigms.diffusion_math import (
  PREDICTIONS,
  SCHEDULES,
  WEIGHTINGS,
  Denoiser,
  Schedule,
  _at,
  ddim_sample,
  ddpm_sample,
  guided,
  loss_weight,
  make_schedule,
  q_sample,
  target,
)

SAMPLERS = ("ddpm", "ddim")
PRECISIONS = ("float32", "bfloat16")  # bfloat16: training; evaluation stays float32
CONSOLE_METRICS = ("loss",)  # shown on the console line
INTERFACE = {"__call__": "(x_t, t, labels, train) -> eps or v", "data_shape": "one example's shape",
             "num_classes": "int, 0 = unconditional"}


def defaults() -> dict[str, mlc.ConfigDict]:
  """The `diffusion` and `generative` config sections with their defaults."""
  f = mlc.ConfigDict()
  f.schedule = "cosine"          # linear|cosine
  f.steps = 1000                 # T, noising steps
  f.prediction = "eps"           # eps|v: what the denoiser outputs
  f.weighting = "simple"         # simple|min_snr
  f.snr_gamma = 5.0              # min_snr: the SNR cap
  f.label_dropout = 0.0          # conditional: P(null class), for guidance
  f.guidance_scale = 1.0         # sampling: 1 = the conditional model
  f.sampler = "ddim"             # ddpm|ddim
  f.sample_steps = 50            # ddim: timesteps used
  f.eta = 0.0                    # ddim: 0 deterministic, 1 DDPM-like noise
  f.clip = 0.0                   # bound x0 estimates to [-clip, clip], 0 off
  f.ema_decay = 0.999            # parameter average used for sampling
  return {"diffusion": f, "generative": generative_defaults()}


def validate(config: Any) -> None:
  """Checks the `diffusion` and `generative` sections. Raises ConfigError naming the field."""
  f = config.diffusion
  check_choice(f.schedule, SCHEDULES, "diffusion.schedule")
  check_choice(f.prediction, PREDICTIONS, "diffusion.prediction")
  check_choice(f.weighting, WEIGHTINGS, "diffusion.weighting")
  check_choice(f.sampler, SAMPLERS, "diffusion.sampler")
  check_positive(f.steps, "diffusion.steps")
  if not 1 <= f.sample_steps <= f.steps:
    raise ConfigError(f"diffusion.sample_steps={f.sample_steps}; expected 1..{f.steps} "
                      "(diffusion.steps)")
  check_positive(f.snr_gamma, "diffusion.snr_gamma")
  for field in ("eta", "clip", "guidance_scale"):
    check_positive(f[field], f"diffusion.{field}", allow_zero=True)
  check_fraction(f.label_dropout, "diffusion.label_dropout")
  check_fraction(f.ema_decay, "diffusion.ema_decay")
  validate_generative(config)

# The paradigm: training and evaluation steps, and sampling, over a denoiser.

def check_model(model: Any, model_name: str) -> None:
  """The model has the denoiser interface this paradigm calls (`INTERFACE`)."""
  require(model, INTERFACE, "diffusion", model_name)


def check_data(config: Any, model: Any) -> None:
  """Whole examples of the model's `data_shape`, labels in [0, num_classes) for a conditional
  model, and a valid `diffusion` section.

  Raises:
    ConfigError: a model without the denoiser interface, next-token windows, or label dropout without
      classes.
    DataError: examples of another shape than `model.data_shape`, or a label out of range.
  """
  check_model(model, config.model.name)
  f = config.diffusion
  if f.label_dropout > 0 and not model.num_classes:
    raise ConfigError(f"diffusion.label_dropout={f.label_dropout} trains classifier-free "
                      "guidance, which needs a conditional model: expected model.num_classes > 0")
  check_examples(config, model, "diffusion")


def sampler(config: Any, schedule: Schedule, denoise: Denoiser, x_T: jnp.ndarray,
            rng: jax.Array) -> jnp.ndarray:
  """The sampler `config.diffusion` names (`ddpm`, or `ddim` with `sample_steps` and `eta`)."""
  f = config.diffusion
  clip = f.clip if f.clip > 0 else None
  if f.sampler == "ddpm":
    return ddpm_sample(schedule, denoise, f.prediction, x_T, rng, clip)
  return ddim_sample(schedule, denoise, f.prediction, x_T, rng, f.sample_steps, f.eta, clip)


def make(model: Any, config: Any, *, total_steps: int | None = None) -> Paradigm:
  """The diffusion step factory; `total_steps` sizes the learning-rate schedule."""
  check_model(model, config.model.name)
  f = config.diffusion
  tx, lr = optim.make(config.optim, total_steps or config.train.steps)
  schedule = make_schedule(f.schedule, f.steps)
  conditional = model.num_classes > 0
  null = model.num_classes
  compute = state_lib.compute_dtype(config)  # training in bfloat16 under train.precision
  log_norms = bool(config.train.log_norms)  # the norms' metrics (optim.norms)
  low_model = state_lib.in_compute_dtype(model, compute)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> state_lib.TrainState:
    x = batch["inputs"]
    labels = batch["label"].astype(jnp.int32) if conditional else None
    variables = dict(model.init(rng, x, jnp.zeros(x.shape[:1], jnp.int32), labels))
    params = variables.pop("params")
    ema = params if f.ema_decay > 0 else None
    return state_lib.create(params, tx.init(params), model_state=variables, ema_params=ema)

  def per_example_loss(params, model_state, batch, rng, train):
    """The weighted squared error of the denoiser's output (B,), at random t and noise."""
    x = batch["inputs"].astype(jnp.float32)
    t_rng, n_rng, d_rng, l_rng = jax.random.split(rng, 4)
    t = jax.random.randint(t_rng, x.shape[:1], 0, f.steps)
    noise = jax.random.normal(n_rng, x.shape)
    xt = q_sample(schedule, x, t, noise)
    labels = None
    if conditional:
      labels = batch["label"].astype(jnp.int32)
      if train and f.label_dropout > 0:
        labels = jnp.where(jax.random.bernoulli(l_rng, f.label_dropout, labels.shape), null,
                           labels)
    def net(params, xt, m=model):
      return m.apply({"params": params, **model_state}, xt, t, labels, train=train,
                     rngs={"dropout": d_rng})

    def low(params, xt):
      return net(params, xt, low_model)
    out = (state_lib.mixed(low, compute) if train else net)(params, xt)
    want = target(f.prediction, x, noise, _at(schedule.alpha_bars, t, x))
    err = jnp.mean(jnp.square(out - want).reshape(x.shape[0], -1), axis=-1)
    return err * loss_weight(schedule, t, f.prediction, f.weighting, f.snr_gamma), err

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      weighted, err = per_example_loss(params, state.model_state, batch, rng, True)
      mask = batch["mask"]
      return jnp.sum(weighted * mask) / mask.size, jnp.mean(err)

    (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, ema, norms = optim.apply(
        config.optim, tx, lr, grads, state.opt_state, state.params,
        ("grad", "param"), log_norms, average=state.ema_params,
        average_weight=state_lib.average_weight(f.ema_decay, state.step))
    metrics = {"loss": loss, "mse": mse, **norms}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema), metrics

  def sampling_params(state):
    return state.ema_params if state.ema_params is not None else state.params

  def eval_step(state, batch, rng):
    weighted, err = per_example_loss(sampling_params(state), state.model_state, batch, rng,
                                     False)
    mask = batch["mask"]
    return {"loss_sum": jnp.sum(weighted * mask), "mse_sum": jnp.sum(err * mask),
            "count": jnp.sum(mask)}

  def generate(state, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               rng: jax.Array | None = None) -> jnp.ndarray:
    """Samples (N, *data_shape) from noise z (N, *data_shape) with the averaged parameters, by
    `diffusion.sampler`; a conditional model is guided with `diffusion.guidance_scale`. `rng`
    drives the noise DDPM and DDIM with eta > 0 add at every step (None: a fixed key, so equal
    inputs give equal samples)."""
    variables = {"params": sampling_params(state), **state.model_state}
    rng = jax.random.key(0) if rng is None else rng
    if conditional:
      cond = lambda x, t, y: model.apply(variables, x, t, y)  # noqa: E731
      denoise = (guided(cond, labels, null, f.guidance_scale) if f.guidance_scale != 1.0
                 else (lambda x, t: cond(x, t, labels)))
    else:
      denoise = lambda x, t: model.apply(variables, x, t)  # noqa: E731
    return sampler(config, schedule, denoise, z, rng)

  grid_z, grid_labels = fixed_inputs(tuple(model.data_shape), model.num_classes,
                                     config.generative.grid_samples,
                                     jax.random.fold_in(jax.random.key(config.seed), 0xD1F))

  def samples(state) -> jnp.ndarray:
    """Samples from the run's fixed noise (the same every call; a conditional grid has one class
    per column)."""
    return generate(state, grid_z, grid_labels)

  return Paradigm(init=init, train_step=train_step, eval_step=eval_step, predict=None,
                  schedule=lr, samples=samples if config.generative.grid_samples else None,
                  generate=generate,
                  latent_shape=tuple(model.data_shape))
