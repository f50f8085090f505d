"""Adversarial training: a generator G and a discriminator D (`arch.gan.GAN`) in one state, each
with its own optimizer, updated in one jitted step.

State: `params = {"generator": ..., "discriminator": ...}`, `opt_state` likewise (two optax
states: `config.optim` for G, the same with `adversarial.d_learning_rate` for D, the two time-scale
update rule of Heusel et al. 2017), `model_state` the generator's batch statistics and the
spectral-norm power-iteration vectors, `ema_params` an exponential moving average of G's
parameters, used for every sample the run reports.

One train step = `adversarial.n_critic` discriminator updates, each on its own 1/n_critic slice of
the batch's real examples against as many fresh fakes, then one generator update on a full batch
of fakes. A conditional GAN draws its fakes' labels from the real batch (the data's class
frequencies). Losses, averaged over examples (real terms weighted by the batch's `mask`):

- `non_saturating` (Goodfellow et al. 2014): D minimises softplus(-D(x)) + softplus(D(G(z))),
  G minimises softplus(-D(G(z))).
- `hinge` (Lim & Ye 2017; Miyato et al. 2018): D minimises relu(1 - D(x)) + relu(1 + D(G(z))),
  G minimises -D(G(z)).
- R1 (Mescheder et al. 2018): D also minimises gamma / 2 * ||grad_x D(x)||^2 on real x,
  `adversarial.r1_gamma` = gamma.

Metrics: `loss` = d_loss + g_loss (what the loop checks for NaN/inf), the two losses, D's mean
logit on reals and fakes, the R1 term, and each network's gradient norm. Evaluation, on held-out
reals against as many fakes of the averaged generator: the same losses, D's mean logits and its
accuracy (the share it classifies correctly). Sample quality (Frechet distance, class coverage,
precision and recall in a reference classifier's features) is `python -m eval.generative`.

The model (any class; `arch.gan.GAN` is the registered one) provides:
- `generate(z, labels, train) -> (B, *data_shape)` from latents (B, latent_dim), and
  `discriminate(x, labels, train) -> (B,)` real-vs-fake logits;
- `__call__(z, labels, train)`, which initialises both, with their parameters under the top-level
  names `generator` and `discriminator` (each gets its own optimizer);
- attributes `latent_dim`, `data_shape`, `num_classes` (0: unconditional; else labels (B,) go to
  both networks) and `output` ("sigmoid" draws samples in [0, 1]).

Config sections: `adversarial` and `generative` (sample grids, the reference classifier).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

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

LOSSES = ("non_saturating", "hinge")
PRECISIONS = ("float32", "bfloat16")  # bfloat16: training; evaluation stays float32
CONSOLE_METRICS = ("d_loss", "g_loss", "d_accuracy")  # shown on the console line
INTERFACE = {"generate": "(z, labels, train) -> samples",
             "discriminate": "(x, labels, train) -> logits", "latent_dim": "int",
             "data_shape": "one example's shape", "num_classes": "int, 0 = unconditional",
             "output": "the generator's output activation"}


def defaults() -> dict[str, mlc.ConfigDict]:
  """The `adversarial` and `generative` config sections with their defaults."""
  a = mlc.ConfigDict()
  a.loss = "non_saturating"     # non_saturating|hinge
  a.d_learning_rate = 0.0       # discriminator's; 0 = optim.learning_rate
  a.n_critic = 1                # discriminator updates per generator update
  a.r1_gamma = 0.0              # R1 penalty weight on real data, 0 = off
  a.ema_decay = 0.999           # generator average, 0 = off
  return {"adversarial": a, "generative": generative_defaults()}


def validate(config: Any) -> None:
  """Checks the `adversarial` and `generative` sections. Raises ConfigError naming the field."""
  a = config.adversarial
  check_choice(a.loss, LOSSES, "adversarial.loss")
  check_positive(a.d_learning_rate, "adversarial.d_learning_rate", allow_zero=True)
  check_positive(a.n_critic, "adversarial.n_critic")
  check_positive(a.r1_gamma, "adversarial.r1_gamma", allow_zero=True)
  check_fraction(a.ema_decay, "adversarial.ema_decay")
  validate_generative(config)


def d_losses(real: jnp.ndarray, fake: jnp.ndarray, loss: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The discriminator's per-example losses on real logits (B,) and fake logits (M,)."""
  if loss == "hinge":
    return nn.relu(1.0 - real), nn.relu(1.0 + fake)
  return nn.softplus(-real), nn.softplus(fake)


def g_loss(fake: jnp.ndarray, loss: str) -> jnp.ndarray:
  """The generator's per-example loss on the discriminator's logits of its samples (M,)."""
  return -fake if loss == "hinge" else nn.softplus(-fake)


def r1_penalty(model: Any, variables: Any, x: jnp.ndarray,
               labels: jnp.ndarray | None = None) -> jnp.ndarray:
  """||grad_x D(x)||^2 per example (B,), D evaluated without updating its statistics. D has no
  cross-example layers, so the gradient of the sum over the batch is every example's own."""
  def total(x):
    return jnp.sum(model.apply(variables, x, labels, method=model.discriminate, train=False))

  g = jax.grad(total)(x)
  return jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1)


def check_model(model: nn.Module, model_name: str) -> None:
  """The model has the generator/discriminator interface this paradigm calls (`INTERFACE`)."""
  require(model, INTERFACE, "adversarial", model_name)


def check_data(config: Any, model: nn.Module) -> None:
  """The data must be whole examples of the model's `data_shape`, labels (conditional GAN) in
  range, and a bounded generator output must match the data's range.

  Raises:
    ConfigError: a model without the GAN interface, next-token windows, gradient accumulation, a
      batch not divisible by `adversarial.n_critic`, or a sigmoid output on data not scaled to [0, 1].
    DataError: examples of another shape than `model.data_shape`, or a label out of range.
  """
  check_model(model, config.model.name)
  a, d = config.adversarial, config.data
  if config.optim.grad_accum_steps != 1:
    raise ConfigError(f"optim.grad_accum_steps={config.optim.grad_accum_steps}: the adversarial "
                      "step updates both networks every step; expected 1")
  devices = jax.device_count()
  if d.batch_size % (a.n_critic * devices):
    raise ConfigError(f"data.batch_size={d.batch_size} with adversarial.n_critic={a.n_critic}: "
                      "each discriminator update takes an equal slice of the batch, split over "
                      f"{devices} device(s); expected a multiple of {a.n_critic * devices}")
  if model.output == "sigmoid" and d.normalize != "unit":
    raise ConfigError(f"model.output='sigmoid' draws samples in [0, 1]; data.normalize="
                      f"{d.normalize!r} does not put the data there: expected data.normalize="
                      "'unit'")
  check_examples(config, model, "adversarial")


def _d_optim(config: Any) -> mlc.ConfigDict:
  o = config.optim.copy_and_resolve_references()
  with o.unlocked():
    o.learning_rate = config.adversarial.d_learning_rate or config.optim.learning_rate
  return o


class Updates(NamedTuple):
  """The two halves of a train step, each updating one network only:
  `discriminator(params, opt_d, model_state, x, labels, weight, key)` and
  `generator(params, opt_g, model_state, labels, n, key)` -> (params, opt state, model_state,
  metrics); `apply(params, model_state, *args, method, train)` -> (output, model_state)."""

  apply: Callable[..., Any]
  discriminator: Callable[..., Any]
  generator: Callable[..., Any]


def updates(model: Any, config: Any, tx_g: optax.GradientTransformation,
            tx_d: optax.GradientTransformation, lr_g: optax.Schedule | None = None,
            lr_d: optax.Schedule | None = None) -> Updates:
  """The discriminator and generator updates of `model` under `config.adversarial`, by the
  optimizers `optim.make` built (`tx_*`) with their schedules (`lr_*`, which `optim.kernel="cpu"`
  needs)."""
  a = config.adversarial
  latent = model.latent_dim
  d_optim = _d_optim(config)

  compute = state_lib.compute_dtype(config)  # training in bfloat16 under train.precision
  log_norms = bool(config.train.log_norms)  # the norms' metrics (optim.norms)
  low_model = state_lib.in_compute_dtype(model, compute)

  def raw(params, model_state, *args, method, train, net=model):
    variables = {"params": params, **model_state}
    if not (train and model_state):
      return net.apply(variables, *args, train=train, method=method), model_state
    out, new = net.apply(variables, *args, train=train, method=method,
                         mutable=list(model_state))
    return out, {**model_state, **new}

  def apply(params, model_state, *args, method, train):
    """Applies `method`; returns (output, model_state updated where train mode changed it).
    In training under bfloat16 the parameters and inputs are cast down and the outputs (and
    the batch statistics) come back in float32."""
    if not (train and compute is not None):
      return raw(params, model_state, *args, method=method, train=train)

    def low(p, *a):
      return raw(p, model_state, *a, method=method, train=train, net=low_model)
    return state_lib.mixed(low, compute)(params, *args)

  def d_update(params, opt_d, model_state, x, labels, weight, key):
    """One discriminator update on reals x (b, ...) against b fresh fakes."""
    z = jax.random.normal(key, (x.shape[0], latent))
    fake, model_state = apply(params, model_state, z, labels, method=model.generate, train=True)
    fake = jax.lax.stop_gradient(fake)
    both_labels = None if labels is None else jnp.concatenate([labels, labels])

    def loss_fn(d_params):
      p = {"generator": params["generator"], "discriminator": d_params}
      logits, ms = apply(p, model_state, jnp.concatenate([x, fake.astype(x.dtype)]), both_labels,
                         method=model.discriminate, train=True)
      real, fk = jnp.split(logits, 2)
      l_real, l_fake = d_losses(real, fk, a.loss)
      loss = jnp.sum(weight * l_real) / x.shape[0] + jnp.mean(l_fake)
      r1 = jnp.zeros(())
      if a.r1_gamma > 0:
        r1 = jnp.mean(r1_penalty(model, {"params": p, **model_state}, x, labels))
        loss = loss + 0.5 * a.r1_gamma * r1
      return loss, (ms, {"d_real": jnp.mean(real), "d_fake": jnp.mean(fk), "r1": r1})

    (loss, (model_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params["discriminator"])
    d, opt_d, _, norms = optim.apply(d_optim, tx_d, lr_d, grads, opt_d,
                                     params["discriminator"], ("grad",), log_norms, "d_")
    return {**params, "discriminator": d}, opt_d, model_state, {"d_loss": loss, **norms, **aux}

  def g_update(params, opt_g, model_state, labels, n, key):
    """One generator update on n fresh fakes."""
    z = jax.random.normal(key, (n, latent))

    def loss_fn(g_params):
      p = {"generator": g_params, "discriminator": params["discriminator"]}
      fake, ms = apply(p, model_state, z, labels, method=model.generate, train=True)
      logits, _ = apply(p, ms, fake, labels, method=model.discriminate, train=False)
      return jnp.mean(g_loss(logits, a.loss)), ms

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["generator"])
    g, opt_g, _, norms = optim.apply(config.optim, tx_g, lr_g, grads, opt_g,
                                     params["generator"], ("grad",), log_norms, "g_")
    return {**params, "generator": g}, opt_g, model_state, {"g_loss": loss, **norms}

  return Updates(apply, d_update, g_update)


def make(model: nn.Module, config: Any, *, total_steps: int | None = None) -> Paradigm:
  """The adversarial step factory; `total_steps` (generator steps) sizes both schedules."""
  check_model(model, config.model.name)
  a = config.adversarial
  steps = total_steps or config.train.steps
  tx_g, lr = optim.make(config.optim, steps)
  tx_d, lr_d = optim.make(_d_optim(config), steps * a.n_critic)
  conditional = model.num_classes > 0
  latent = model.latent_dim
  step_fns = updates(model, config, tx_g, tx_d, lr, lr_d)
  apply = step_fns.apply

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> state_lib.TrainState:
    b = batch["inputs"].shape[0]
    labels = batch["label"].astype(jnp.int32) if conditional else None
    variables = dict(model.init(rng, jnp.zeros((b, latent)), labels, train=False))
    params = variables.pop("params")
    opt_state = {"generator": tx_g.init(params["generator"]),
                 "discriminator": tx_d.init(params["discriminator"])}
    ema = params["generator"] if a.ema_decay > 0 else None
    return state_lib.create(params, opt_state, model_state=variables, ema_params=ema)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    keys = jax.random.split(rng, a.n_critic + 1)
    x, mask = batch["inputs"], batch["mask"]
    labels = batch["label"].astype(jnp.int32) if conditional else None
    slices = lambda v: None if v is None else v.reshape((a.n_critic, -1) + v.shape[1:])  # noqa: E731
    xs, ys, ws = slices(x), slices(labels), slices(mask)
    params, ms = state.params, state.model_state
    opt_d, opt_g = state.opt_state["discriminator"], state.opt_state["generator"]
    d_metrics = []
    for i in range(a.n_critic):  # n_critic is small: unrolled
      y = None if ys is None else ys[i]
      params, opt_d, ms, m = step_fns.discriminator(params, opt_d, ms, xs[i], y, ws[i], keys[i])
      d_metrics.append(m)
    params, opt_g, ms, g_metrics = step_fns.generator(params, opt_g, ms, labels, x.shape[0],
                                                      keys[-1])
    ema = state_lib.update_average(state.ema_params, params["generator"], a.ema_decay,
                                   state.step)
    metrics = {k: jnp.mean(jnp.stack([m[k] for m in d_metrics])) for k in d_metrics[0]}
    metrics.update(g_metrics)
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    state = state.replace(step=state.step + 1, params=params, model_state=ms,
                          opt_state={"generator": opt_g, "discriminator": opt_d}, ema_params=ema)
    return state, metrics

  def generator_params(state) -> Any:
    return state.ema_params if state.ema_params is not None else state.params["generator"]

  def generate(state, z: jnp.ndarray, labels: jnp.ndarray | None = None,
               rng: jax.Array | None = None) -> jnp.ndarray:
    """Samples (N, *data_shape) of the averaged generator (eval mode) from latents (N, D); the
    generator is deterministic given z, so `rng` is unused."""
    del rng
    params = {"generator": generator_params(state),
              "discriminator": state.params["discriminator"]}
    return apply(params, state.model_state, z, labels, method=model.generate, train=False)[0]

  def eval_step(state, batch, rng):
    x, mask = batch["inputs"], batch["mask"]
    labels = batch["label"].astype(jnp.int32) if conditional else None
    fake = generate(state, jax.random.normal(rng, (x.shape[0], latent)), labels)
    both = None if labels is None else jnp.concatenate([labels, labels])
    logits = model.apply({"params": state.params, **state.model_state},
                         jnp.concatenate([x, fake.astype(x.dtype)]), both,
                         method=model.discriminate, train=False)
    real, fk = jnp.split(logits, 2)
    l_real, l_fake = d_losses(real, fk, a.loss)
    per = {"d_loss": l_real + l_fake, "g_loss": g_loss(fk, a.loss), "d_real": real, "d_fake": fk,
           "d_accuracy": 0.5 * ((real > 0).astype(jnp.float32) + (fk < 0))}
    per["loss"] = per["d_loss"] + per["g_loss"]
    sums = {f"{k}_sum": jnp.sum(v * mask) for k, v in per.items()}
    sums["count"] = jnp.sum(mask)
    return sums

  grid_z, grid_labels = grid_latents(model, config.generative.grid_samples, config.seed)

  def samples(state) -> jnp.ndarray:
    """The averaged generator's samples from the run's fixed grid latents (same every call)."""
    return generate(state, grid_z, grid_labels)

  return Paradigm(init=init, train_step=train_step, eval_step=eval_step, predict=None,
                  schedule=lr, samples=samples if config.generative.grid_samples else None,
                  generate=generate,
                  latent_shape=(model.latent_dim,))


def grid_latents(model: Any, n: int, seed: int) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """Fixed latents (n, latent_dim) for the run's sample grids, and for a conditional GAN the
  labels (n,): class i % num_classes, so each grid column is one class."""
  return fixed_inputs((model.latent_dim,), model.num_classes, n,
                      jax.random.fold_in(jax.random.key(seed), 0x6A1D))
