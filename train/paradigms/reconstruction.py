"""Reconstruction: autoencoders, denoising autoencoders and VAEs (models in `arch.autoencoder`).

Batches are the supervised ones, `{"inputs": (B, ...), "label": (B,), "mask": (B,)}`; the target
is the input itself and the label is carried along only for analysis.

Losses, per example, weighted by `mask` and divided by B in training:
- `Autoencoder` / `DenoisingAutoencoder`: the mean over elements of the squared error (Gaussian
  decoder) or of the binary cross-entropy with logits (Bernoulli decoder; inputs in [0, 1]).
- `VAE`: the negative ELBO in nats, `-E_q[log p(x|z)] + w KL(q(z|x) || N(0, I))`, with the KL in
  closed form and one reparameterised sample for the reconstruction term. The KL weight `w` rises
  linearly from 0 to `reconstruction.beta` over `reconstruction.kl_warmup_steps` (beta-VAE:
  beta != 1; warm-up as in Bowman et al. 2016 and Sonderby et al. 2016).

Evaluation reports, per example: `mse` (mean squared error of the reconstruction over elements,
the VAE decoding its posterior mean) and `loss`; for a VAE also `neg_elbo` (w = 1, the bound on
-log p(x), with `reconstruction.eval_samples` posterior samples), its `nll` and `kl` parts, and
with `reconstruction.iwae_samples` = k > 0 `neg_iwae`, the importance-weighted bound of Burda et
al. (2016) on -log p(x) from k further samples. All are in nats per example (densities in the
input units for a Gaussian decoder); `neg_iwae <= neg_elbo` in expectation, tighter as k grows.

The model (any class; `arch.autoencoder`'s three are the registered ones) provides:
- `__call__(x, train) -> {"output": raw decoder outputs, ...}`, with rng streams `latent` and
  `noise`; a variational model also returns `mean`, `logvar` and, for a Gaussian decoder, `std`;
- `encode(x)` (a code, or `(mean, logvar)` when `variational`), `decode(z)` (raw outputs) and
  `reconstruct(output)` (raw outputs -> input units);
- attributes `likelihood` ("gaussian" or "bernoulli") and `variational` (bool); a variational
  Gaussian model also `observation_std()`.

Config section: `reconstruction`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

import data as data_lib
from train import optim
from train import state as state_lib
from train.errors import ConfigError, check_positive
from train.paradigms.common import Paradigm, require

PRECISIONS = ("float32", "bfloat16")  # bfloat16: training; evaluation stays float32
CONSOLE_METRICS = ("loss", "mse", "neg_elbo", "neg_iwae", "kl")  # shown on the console line
INTERFACE = {"encode": "x -> code", "decode": "code -> raw outputs",
             "reconstruct": "raw outputs -> input units", "likelihood": "gaussian|bernoulli",
             "variational": "bool: encode returns (mean, logvar)"}


def defaults() -> dict[str, mlc.ConfigDict]:
  """The `reconstruction` config section with its defaults."""
  r = mlc.ConfigDict()
  r.beta = 1.0                 # VAE: KL weight after warm-up (beta-VAE)
  r.kl_warmup_steps = 0        # VAE: KL weight rises linearly from 0
  r.eval_samples = 1           # VAE: posterior samples of the eval ELBO
  r.iwae_samples = 0           # VAE: k of the eval IWAE bound, 0 = off
  return {"reconstruction": r}


def validate(config: Any) -> None:
  """Checks the `reconstruction` section. Raises ConfigError naming field and value."""
  r = config.reconstruction
  check_positive(r.beta, "reconstruction.beta", allow_zero=True)
  check_positive(r.kl_warmup_steps, "reconstruction.kl_warmup_steps", allow_zero=True)
  check_positive(r.eval_samples, "reconstruction.eval_samples")
  check_positive(r.iwae_samples, "reconstruction.iwae_samples", allow_zero=True)

_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """KL(N(mean, exp(logvar)) || N(0, I)) in nats, summed over the last axis: (..., D) -> (...)."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


def gaussian_log_density(z: jnp.ndarray, mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """log N(z; mean, exp(logvar)) summed over the last axis, in nats: (..., D) -> (...)."""
  return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def log_likelihood(x: jnp.ndarray, output: jnp.ndarray, likelihood: str,
                   std: jnp.ndarray | None = None) -> jnp.ndarray:
  """log p(x | decoder output) in nats, summed over each example's elements: (B, ...) -> (B,).

  Args:
    x: targets (B, *shape); in [0, 1] for a Bernoulli decoder.
    output: the decoder's raw outputs (B, *shape): logits (bernoulli) or means (gaussian).
    likelihood: `"bernoulli"` or `"gaussian"`.
    std: the Gaussian decoder's standard deviation, broadcastable to `x`.
  """
  x = x.astype(jnp.float32)
  if likelihood == "bernoulli":
    per = x * jax.nn.log_sigmoid(output) + (1.0 - x) * jax.nn.log_sigmoid(-output)
  else:
    per = -0.5 * (_LOG_2PI + jnp.square((x - output) / std)) - jnp.log(std)
  return jnp.sum(per.reshape(per.shape[0], -1), axis=-1)


def reconstruction_loss(x: jnp.ndarray, output: jnp.ndarray, likelihood: str) -> jnp.ndarray:
  """A deterministic autoencoder's loss per example, a mean over elements: squared error
  (gaussian) or binary cross-entropy with logits (bernoulli). (B, ...) -> (B,)."""
  x = x.astype(jnp.float32).reshape(x.shape[0], -1)
  output = output.reshape(output.shape[0], -1)
  if likelihood == "bernoulli":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(output, x), axis=-1)
  return jnp.mean(jnp.square(output - x), axis=-1)


def _mse(model, x, output) -> jnp.ndarray:
  err = model.reconstruct(output) - x.astype(jnp.float32)
  return jnp.mean(jnp.square(err.reshape(err.shape[0], -1)), axis=-1)


def _posterior_draws(m: Any, x: jnp.ndarray, rng: jax.Array, samples: int):
  """Inside a bound VAE: the posterior (mean, logvar) (B, D) of `x`, `samples` reparameterised
  draws z (k, B, D) and log p(x | z) (k, B), decoded `min(k, 16)` draws at a time."""
  mean, logvar = m.encode(x)
  std = m.observation_std() if m.likelihood == "gaussian" else None

  def one(key):
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    return z, log_likelihood(x, m.decode(z), m.likelihood, std)

  z, ll = jax.lax.map(one, jax.random.split(rng, samples), batch_size=min(samples, 16))
  return mean, logvar, z, ll


def elbo_terms(model: Any, variables: Any, x: jnp.ndarray, rng: jax.Array,
               samples: int = 1) -> dict[str, jnp.ndarray]:
  """A VAE's per-example `nll` (-E_q log p(x|z), averaged over `samples` posterior draws), `kl`
  (closed form) and `neg_elbo` = nll + kl, all (B,) in nats; and `mse` of the reconstruction
  decoded from the posterior mean."""

  def body(m: Any):
    mean, logvar, _, ll = _posterior_draws(m, x, rng, samples)
    nll = -jnp.mean(ll, axis=0)
    kl = gaussian_kl(mean, logvar)
    return {"nll": nll, "kl": kl, "neg_elbo": nll + kl, "mse": _mse(m, x, m.decode(mean))}

  return nn.apply(body, model)(variables)


def iwae_bound(model: Any, variables: Any, x: jnp.ndarray, rng: jax.Array,
               samples: int) -> jnp.ndarray:
  """The negative importance-weighted bound (Burda et al. 2016) per example, (B,) nats:
  -log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), k = `samples`. For k = 1 its
  expectation is the negative ELBO; it decreases towards -log p(x) as k grows."""

  def body(m: Any):
    mean, logvar, z, ll = _posterior_draws(m, x, rng, samples)
    log_prior = gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_w = ll + log_prior - gaussian_log_density(z, mean, logvar)          # (k, B)
    return -(jax.scipy.special.logsumexp(log_w, axis=0) - math.log(samples))

  return nn.apply(body, model)(variables)


def check_model(model: nn.Module, model_name: str) -> None:
  """The model has the autoencoder interface this paradigm calls (`INTERFACE`)."""
  require(model, INTERFACE, "reconstruction", model_name)


def check_data(config: Any, model: nn.Module) -> None:
  """A Bernoulli decoder's targets are probabilities: the inputs must lie in [0, 1].

  Raises:
    ConfigError: a model without the autoencoder interface, next-token windows (`data.seq_len` > 0),
      or a Bernoulli decoder whose inputs `data.normalize` centres or that leave [0, 1].
  """
  check_model(model, config.model.name)
  if config.data.seq_len > 0:
    raise ConfigError(f"data.seq_len={config.data.seq_len} makes next-token windows; "
                      "paradigm='reconstruction' trains on whole examples: expected "
                      "data.seq_len=0")
  if model.likelihood != "bernoulli" or config.data.normalize == "unit":
    return
  where = (f"model.likelihood='bernoulli' needs inputs in [0, 1]; with data.source="
           f"{config.data.source!r}")
  if config.data.normalize != "none":
    raise ConfigError(f"{where}, data.normalize={config.data.normalize!r} centres them: expected "
                      "data.normalize='unit' (or 'none' for data already in [0, 1])")
  for split in (config.data.train_split, config.data.eval_split):
    if data_lib.is_streaming(config.data, split):
      continue  # a split on disk is not read whole for this check
    x = data_lib.load_split(config.data, split).inputs
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
      raise ConfigError(f"{where}, split {split!r} spans [{lo:g}, {hi:g}] with "
                        "data.normalize='none': expected data.normalize='unit'")


def make(model: nn.Module, config: Any, *, total_steps: int | None = None) -> Paradigm:
  """The reconstruction step factory; `total_steps` sizes the learning-rate schedule."""
  check_model(model, config.model.name)
  tx, lr = optim.make(config.optim, total_steps or config.train.steps)
  r = config.reconstruction
  is_vae = bool(model.variational)
  compute = state_lib.compute_dtype(config)  # training in bfloat16 under train.precision
  log_norms = bool(config.train.log_norms)  # the norms' metrics (optim.norms)
  low_model = state_lib.in_compute_dtype(model, compute)

  def init(rng: jax.Array, batch: dict[str, jax.Array]) -> state_lib.TrainState:
    keys = dict(zip(("params", "latent", "noise"), jax.random.split(rng, 3)))
    variables = dict(model.init(keys, batch["inputs"], train=False))
    params = variables.pop("params")
    return state_lib.create(params, tx.init(params), model_state=variables)

  def kl_weight(step: jnp.ndarray) -> jnp.ndarray:
    if r.kl_warmup_steps <= 0:
      return jnp.asarray(r.beta, jnp.float32)
    return r.beta * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / r.kl_warmup_steps)

  def train_step(state, batch, rng):
    x, mask = batch["inputs"], batch["mask"]
    rng = jax.random.fold_in(rng, state.step)
    latent_rng, noise_rng = jax.random.split(rng)
    weight = kl_weight(state.step)

    def forward(params, inputs):
      return low_model.apply({"params": params, **state.model_state}, inputs, train=True,
                         rngs={"latent": latent_rng, "noise": noise_rng})

    def loss_fn(params):
      out = state_lib.mixed(forward, compute)(params, x)  # losses in float32 against x
      aux = {"mse": _mse(model, x, out["output"])}
      if is_vae:
        aux["nll"] = -log_likelihood(x, out["output"], model.likelihood, out.get("std"))
        aux["kl"] = gaussian_kl(out["mean"], out["logvar"])
        per = aux["nll"] + weight * aux["kl"]
      else:
        per = reconstruction_loss(x, out["output"], model.likelihood)
      return jnp.sum(per * mask) / per.size, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, _, norms = optim.apply(config.optim, tx, lr, grads, state.opt_state,
                                              state.params, log_norms=log_norms)
    metrics = {"loss": loss, **norms, **{k: jnp.mean(v) for k, v in aux.items()}}
    if is_vae:
      metrics["kl_weight"] = weight
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def eval_step(state, batch, rng):
    x, mask = batch["inputs"], batch["mask"]
    variables = {"params": state.params, **state.model_state}
    if is_vae:
      elbo_rng, iwae_rng = jax.random.split(rng)
      per = elbo_terms(model, variables, x, elbo_rng, r.eval_samples)
      per["loss"] = per["nll"] + r.beta * per["kl"]
      if r.iwae_samples > 0:
        per["neg_iwae"] = iwae_bound(model, variables, x, iwae_rng, r.iwae_samples)
    else:
      out = model.apply(variables, x, train=False)
      per = {"loss": reconstruction_loss(x, out["output"], model.likelihood),
             "mse": _mse(model, x, out["output"])}
    sums = {f"{k}_sum": jnp.sum(v * mask) for k, v in per.items()}
    sums["count"] = jnp.sum(mask)
    return sums

  def predict(state, inputs):
    """Reconstructions (B, *input_shape) in input units (a VAE decodes its posterior mean)."""
    variables = {"params": state.params, **state.model_state}

    def body(m):
      code = m.encode(inputs)
      return m.reconstruct(m.decode(code[0] if is_vae else code))

    return nn.apply(body, model)(variables)

  return Paradigm(init=init, train_step=train_step, eval_step=eval_step, predict=predict,
                  schedule=lr)
