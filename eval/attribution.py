"""Feature attribution for any classifier: which input elements move the target class's logit.

Every method takes `f(x) -> (N,)`, the logit of each example's target class as a function of the
inputs x (N, ...) as the model sees them (normalised), and returns attributions of x's shape:

- `gradient`: d f / d x (Simonyan et al. 2014);
- `gradient_x_input`: x * d f / d x, relative to the all-zero input (the training mean of
  normalised data);
- `integrated_gradients`: (x - x') * the mean of d f / d x along the straight path from a
  baseline x' to x (Sundararajan et al. 2017), by the trapezoidal rule over `steps` intervals.
  Completeness: the attributions sum to f(x) - f(x') up to the quadrature error, which
  `completeness_gap` reports and `tolerance` bounds;
- `smoothgrad`: the mean gradient over `samples` copies of x with Gaussian noise of standard
  deviation `noise` (Smilkov et al. 2017), in the units of x.

`classifier_logit(model, variables)` turns a restored `arch` classifier into `f`. Attention maps
(for Transformers) come from the sown weights, `eval.attention.attention_maps`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from train import figures

METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad")

TargetLogit = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def classifier_logit(model: Any, variables: dict[str, Any]) -> TargetLogit:
  """f(x (N, ...), target (N,) int) -> (N,): the target class's logit of `model` (any `arch`
  classifier taking float inputs) in inference mode."""
  def f(x, target):
    logits = model.apply(variables, x, train=False)
    if logits.ndim != 2:
      raise ValueError(f"{type(model).__name__} outputs shape {logits.shape}; attribution "
                       "needs a classifier's (batch, classes) logits")
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]
  return f


def _check(x: Any) -> jnp.ndarray:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"inputs of dtype {x.dtype}: attribution differentiates with respect to "
                     "the inputs, so they must be floating point (token inputs have no gradient)")
  return x


def gradient(f: TargetLogit, x: Any, target: Any) -> jnp.ndarray:
  """d f(x)_n / d x_n for each example (examples do not interact in inference mode)."""
  x = _check(x)
  return jax.grad(lambda x: jnp.sum(f(x, jnp.asarray(target))))(x)


def gradient_x_input(f: TargetLogit, x: Any, target: Any) -> jnp.ndarray:
  """x * d f / d x."""
  x = _check(x)
  return x * gradient(f, x, target)


def _baseline(x: jnp.ndarray, baseline: Any) -> jnp.ndarray:
  if baseline is None:
    return jnp.zeros_like(x)
  return jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)


def integrated_gradients(f: TargetLogit, x: Any, target: Any, baseline: Any = None,
                         steps: int = 64, tolerance: float = 0.0,
                         max_steps: int = 4096) -> jnp.ndarray:
  """(x - x') * integral_0^1 d f(x' + a (x - x')) / d x da, by the trapezoidal rule on `steps`
  equal intervals; `baseline` x' defaults to zeros (the mean input, for normalised data).

  The gradient of a ReLU network is piecewise constant along the path, so the rule's error falls
  only as 1 / steps and is largest where f(x) - f(x') is small. With `tolerance` > 0 the number
  of intervals is doubled (reusing every gradient already taken) until every example's
  `completeness_gap` is below it or `max_steps` is reached (not jittable then). Memory: one
  gradient of the batch at a time (`lax.map` over the points)."""
  x = _check(x)
  if steps < 1 or max_steps < steps:
    raise ValueError(f"steps={steps}, max_steps={max_steps}; expected 1 <= steps <= max_steps")
  base = _baseline(x, baseline)
  target = jnp.asarray(target)

  def mean_gradient(alphas):
    return jax.lax.map(lambda a: gradient(f, base + a * (x - base), target), alphas).mean(0)

  ends = mean_gradient(jnp.array([0.0, 1.0]))
  inner = mean_gradient(jnp.arange(1, steps) / steps) if steps > 1 else jnp.zeros_like(x)
  # trapezoid: (ends / 2 + sum of the inner points) / steps
  total = ends + inner * (steps - 1)
  ig = (x - base) * total / steps
  if tolerance > 0:  # f(x) - f(x'), taken once for every check of the refinement
    delta = _logit_change(f, x, target, base)
  while tolerance > 0 and steps * 2 <= max_steps and (
      _relative_gap(ig, delta).max() >= tolerance):
    total = total + mean_gradient((jnp.arange(steps) + 0.5) / steps) * steps
    steps *= 2
    ig = (x - base) * total / steps
  return ig


def completeness_gap(f: TargetLogit, x: Any, target: Any, attributions: Any,
                     baseline: Any = None) -> np.ndarray:
  """Per example, |sum(attributions) - (f(x) - f(x'))| / |f(x) - f(x')|: 0 for exact integrated
  gradients."""
  x = _check(x)
  return _relative_gap(attributions, _logit_change(f, x, jnp.asarray(target),
                                                   _baseline(x, baseline)))


def _logit_change(f: TargetLogit, x: jnp.ndarray, target: jnp.ndarray,
                  base: jnp.ndarray) -> np.ndarray:
  """f(x) - f(x') per example (N,), float64."""
  return np.asarray(f(x, target) - f(base, target), np.float64)


def _relative_gap(attributions: Any, delta: np.ndarray) -> np.ndarray:
  total = np.asarray(attributions, np.float64).reshape(len(delta), -1).sum(-1)
  return np.abs(total - delta) / np.maximum(np.abs(delta), 1e-12)


def smoothgrad(f: TargetLogit, x: Any, target: Any, rng: jax.Array, samples: int = 32,
               noise: float = 0.15) -> jnp.ndarray:
  """The mean of d f / d x over `samples` draws of x + N(0, noise^2), noise in x's units."""
  x = _check(x)
  if samples < 1 or noise < 0:
    raise ValueError(f"samples={samples}, noise={noise}; expected samples >= 1 and noise >= 0")
  keys = jax.random.split(rng, samples)
  grads = jax.lax.map(lambda k: gradient(f, x + noise * jax.random.normal(k, x.shape, x.dtype),
                                         target), keys)
  return grads.mean(0)


def attribute(f: TargetLogit, x: Any, target: Any, rng: jax.Array | None = None,
              steps: int = 64, tolerance: float = 0.01, samples: int = 32, noise: float = 0.15
              ) -> dict[str, jnp.ndarray]:
  """All four methods of the module, by name (integrated gradients refined to `tolerance`)."""
  rng = jax.random.key(0) if rng is None else rng
  return {"gradient": gradient(f, x, target),
          "gradient_x_input": gradient_x_input(f, x, target),
          "integrated_gradients": integrated_gradients(f, x, target, steps=steps,
                                                       tolerance=tolerance),
          "smoothgrad": smoothgrad(f, x, target, rng, samples, noise)}


def plot(x: np.ndarray, maps: dict[str, np.ndarray], path: str, titles: list[str] | None = None,
         title: str = "") -> str:
  """A grid: one row per example, the input then each method's attribution. 1-D inputs (N, L)
  or (N, L, 1) are drawn as the signal coloured by attribution; 2-D (N, H, W[, C]) as the image
  and signed heat maps (red positive, blue negative, each map on its own symmetric scale)."""
  plt = figures.pyplot()
  x = np.asarray(x)
  n = len(x)
  one_d = x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 1 and x.shape[1] > 16)
  cols = 1 + len(maps)
  fig, axes = plt.subplots(n, cols, figsize=(2.3 * cols + (2 if one_d else 0), 2.0 * n),
                           squeeze=False)
  for i in range(n):
    if one_d:
      signal = x[i].reshape(-1)
      axes[i, 0].plot(signal, color="black", lw=1)
    else:
      img = x[i][..., 0] if x[i].ndim == 3 and x[i].shape[-1] == 1 else x[i]
      axes[i, 0].imshow(img, cmap="gray")
    axes[i, 0].set_title(titles[i] if titles else "input", fontsize=8)
    for j, (name, a) in enumerate(maps.items(), start=1):
      a_i = np.asarray(a[i], np.float64)
      scale = float(np.abs(a_i).max()) or 1.0
      ax = axes[i, j]
      if one_d:
        t = np.arange(len(signal))
        ax.plot(t, signal, color="0.7", lw=1)
        ax.scatter(t, signal, c=a_i.reshape(-1), cmap="bwr", vmin=-scale, vmax=scale, s=14)
      else:
        img = a_i.sum(-1) if a_i.ndim == 3 else a_i
        ax.imshow(img, cmap="bwr", vmin=-scale, vmax=scale)
      if i == 0:
        ax.set_title(name.replace("_", " "), fontsize=8)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
