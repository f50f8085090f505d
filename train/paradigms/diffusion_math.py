"""Denoising diffusion: noise schedules, the forward process, training targets and losses, and
the DDPM and DDIM samplers, as pure functions of arrays and a denoiser.

Notation (Ho et al. 2020): t = 0..T-1 indexes the T noising steps, beta_t the step variances,
alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s, so that

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

A denoiser predicts `eps` (the noise) or `v` = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans &
Ho 2022); either gives x_0 and eps back from x_t. Sampling runs backwards:

- DDPM (ancestral): x_{t-1} ~ q(x_{t-1} | x_t, x_0 = x0_hat), the Gaussian posterior, for every t.
- DDIM (Song et al. 2021): on a sub-sequence of `steps` timesteps, x_prev = sqrt(abar_prev) x0_hat
  + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, sigma = eta * sqrt((1 - abar_prev) /
  (1 - abar_t)) * sqrt(1 - abar_t / abar_prev); eta = 0 is deterministic, eta = 1 on every step is
  DDPM's variance.
- Classifier-free guidance (Ho & Salimans 2022): eps = eps_uncond + scale * (eps_cond -
  eps_uncond), where the model was trained with labels dropped to a null class.

Samplers take `denoise(x_t, t) -> model output` ((N, ...) and (N,) int timesteps) and loop with
`lax.scan`, so the whole chain is one compiled program.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
WEIGHTINGS = ("simple", "min_snr")

Denoiser = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


class Schedule(NamedTuple):
  """Per-timestep constants, each (T,) float32: betas, alphas, alpha_bars (abar_t), and
  alpha_bars_prev (abar_{t-1}, with abar_{-1} = 1)."""

  betas: jnp.ndarray
  alphas: jnp.ndarray
  alpha_bars: jnp.ndarray
  alpha_bars_prev: jnp.ndarray

  @property
  def steps(self) -> int:
    return int(self.betas.shape[0])


def make_schedule(kind: str, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                  cosine_s: float = 0.008) -> Schedule:
  """The `linear` schedule of Ho et al. (betas from `beta_start` to `beta_end`, scaled by
  1000 / steps so any T spans the same noise levels) or the `cosine` one of Nichol & Dhariwal
  (2021): abar(t) = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), betas clipped at
  0.999. Computed in float64, stored as float32."""
  if kind not in SCHEDULES:
    raise ValueError(f"diffusion.schedule={kind!r}; expected one of {list(SCHEDULES)}")
  if steps < 1:
    raise ValueError(f"diffusion.steps={steps}; expected a positive number")
  if kind == "linear":
    scale = 1000.0 / steps
    betas = np.linspace(scale * beta_start, scale * beta_end, steps, dtype=np.float64)
  else:
    t = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((t + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
  alphas = 1.0 - betas
  alpha_bars = np.cumprod(alphas)
  prev = np.concatenate([[1.0], alpha_bars[:-1]])
  as32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  return Schedule(as32(betas), as32(alphas), as32(alpha_bars), as32(prev))


def _at(values: jnp.ndarray, t: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """values[t] (N,) shaped to broadcast against `like` (N, ...)."""
  return values[t].reshape((-1,) + (1,) * (like.ndim - 1))


def q_sample(schedule: Schedule, x0: jnp.ndarray, t: jnp.ndarray,
             noise: jnp.ndarray) -> jnp.ndarray:
  """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, for x0 and noise (N, ...), t (N,)."""
  ab = _at(schedule.alpha_bars, t, x0)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def posterior(schedule: Schedule, x0: jnp.ndarray, xt: jnp.ndarray,
              t: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Mean (N, ...) and variance (N, 1, ...) of q(x_{t-1} | x_t, x_0):
  mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x_0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
  x_t, variance = beta_t (1 - abar_{t-1}) / (1 - abar_t)."""
  beta, alpha = _at(schedule.betas, t, xt), _at(schedule.alphas, t, xt)
  ab, ab_prev = _at(schedule.alpha_bars, t, xt), _at(schedule.alpha_bars_prev, t, xt)
  mean = (beta * jnp.sqrt(ab_prev) / (1.0 - ab)) * x0 + ((1.0 - ab_prev) * jnp.sqrt(alpha)
                                                         / (1.0 - ab)) * xt
  return mean, beta * (1.0 - ab_prev) / (1.0 - ab)


def target(prediction: str, x0: jnp.ndarray, noise: jnp.ndarray, alpha_bar: jnp.ndarray):
  """What the denoiser learns to output: `eps` (the noise) or `v`; alpha_bar broadcasts."""
  if prediction == "eps":
    return noise
  return jnp.sqrt(alpha_bar) * noise - jnp.sqrt(1.0 - alpha_bar) * x0


def split_prediction(prediction: str, output: jnp.ndarray, xt: jnp.ndarray,
                     alpha_bar: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(x0_hat, eps_hat) from a denoiser's output at x_t; alpha_bar broadcasts against x_t."""
  a, s = jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)
  if prediction == "eps":
    return (xt - s * output) / a, output
  return a * xt - s * output, s * xt + a * output


def snr(schedule: Schedule) -> jnp.ndarray:
  """Signal-to-noise ratio abar_t / (1 - abar_t) per timestep (T,)."""
  return schedule.alpha_bars / (1.0 - schedule.alpha_bars)


def loss_weight(schedule: Schedule, t: jnp.ndarray, prediction: str, weighting: str,
                gamma: float = 5.0) -> jnp.ndarray:
  """Per-example weights (N,) of the squared error in the target's units: 1 for `simple`
  (Ho et al.); `min_snr` (Hang et al. 2023) makes each timestep's weight on the x_0 error
  min(SNR, gamma): min(SNR, gamma) / SNR for eps targets, min(SNR, gamma) / (SNR + 1) for v."""
  if weighting == "simple":
    return jnp.ones(t.shape, jnp.float32)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"diffusion.weighting={weighting!r}; expected one of {list(WEIGHTINGS)}")
  r = snr(schedule)[t]
  return jnp.minimum(r, gamma) / (r if prediction == "eps" else r + 1.0)


def ddpm_sample(schedule: Schedule, denoise: Denoiser, prediction: str, x_T: jnp.ndarray,
                rng: jax.Array, clip: float | None = None) -> jnp.ndarray:
  """Ancestral sampling from x_T (N, ...) ~ N(0, I) through all T steps; no noise is added at
  the last one. `clip` bounds x0_hat to [-clip, clip] at every step (None: no bound)."""
  n = x_T.shape[0]

  def step(x, inputs):
    t, key = inputs
    tt = jnp.full((n,), t, jnp.int32)
    x0, _ = split_prediction(prediction, denoise(x, tt), x, _at(schedule.alpha_bars, tt, x))
    if clip is not None:
      x0 = jnp.clip(x0, -clip, clip)
    mean, var = posterior(schedule, x0, x, tt)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noise, None

  ts = jnp.arange(schedule.steps - 1, -1, -1)
  x, _ = jax.lax.scan(step, x_T, (ts, jax.random.split(rng, schedule.steps)))
  return x


def ddim_timesteps(total: int, steps: int) -> np.ndarray:
  """`steps` timesteps evenly spaced over [0, total - 1], descending, always ending at 0."""
  if not 1 <= steps <= total:
    raise ValueError(f"diffusion.sample_steps={steps}; expected 1..{total} (diffusion.steps)")
  return np.round(np.linspace(total - 1, 0, steps)).astype(np.int32)


def ddim_sample(schedule: Schedule, denoise: Denoiser, prediction: str, x_T: jnp.ndarray,
                rng: jax.Array, steps: int, eta: float = 0.0,
                clip: float | None = None) -> jnp.ndarray:
  """DDIM from x_T (N, ...) over `steps` timesteps of the schedule (eta = 0: deterministic)."""
  n = x_T.shape[0]
  ts = ddim_timesteps(schedule.steps, steps)
  prev = np.concatenate([ts[1:], [-1]])  # -1: abar = 1, the clean data

  def step(x, inputs):
    t, t_prev, key = inputs
    tt = jnp.full((n,), t, jnp.int32)
    ab = schedule.alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0, eps = split_prediction(prediction, denoise(x, tt), x, ab)
    if clip is not None:
      x0 = jnp.clip(x0, -clip, clip)
      eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
    sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab)) * jnp.sqrt(1.0 - ab / ab_prev)
    noise = jax.random.normal(key, x.shape, x.dtype)
    x = (jnp.sqrt(ab_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
         + sigma * noise)
    return x, None

  x, _ = jax.lax.scan(step, x_T, (jnp.asarray(ts), jnp.asarray(prev),
                                  jax.random.split(rng, len(ts))))
  return x


def guided(denoise_cond: Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray],
           labels: jnp.ndarray, null_label: int, scale: float) -> Denoiser:
  """Classifier-free guidance: out_uncond + scale * (out_cond - out_uncond), the conditional and
  unconditional (labels = `null_label`) outputs computed in one batch of 2N. scale = 1 is the
  conditional model; for eps and v outputs alike (both are linear in the score)."""
  def denoise(x, t):
    both = denoise_cond(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                        jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
    cond, uncond = jnp.split(both, 2)
    return uncond + scale * (cond - uncond)
  return denoise


def gaussian_optimal_denoiser(schedule: Schedule, mean: np.ndarray, cov: np.ndarray,
                              prediction: str = "eps") -> Denoiser:
  """The exact minimum-squared-error denoiser of data x_0 ~ N(mean, cov) ((D,), (D, D)), for
  tests: E[x_0 | x_t] = mean + sqrt(abar) cov (abar cov + (1 - abar) I)^-1 (x_t - sqrt(abar) mean),
  returned as the eps or v a perfect model would output. Inputs (N, D)."""
  mean = jnp.asarray(mean, jnp.float32)
  cov = jnp.asarray(cov, jnp.float32)
  eye = jnp.eye(cov.shape[0], dtype=jnp.float32)

  def denoise(xt, t):
    ab = schedule.alpha_bars[t][:, None, None]                            # (N, 1, 1)
    gain = jnp.sqrt(ab) * jnp.linalg.solve(ab * cov + (1.0 - ab) * eye, cov)  # symmetric system
    x0 = mean + jnp.einsum("nij,nj->ni", gain, xt - jnp.sqrt(ab[:, 0]) * mean)
    a, s = jnp.sqrt(ab[:, 0]), jnp.sqrt(1.0 - ab[:, 0])
    eps = (xt - a * x0) / s
    return eps if prediction == "eps" else a * eps - s * x0
  return denoise
