"""Sample-quality metrics for generative models (GANs, VAEs, diffusion), over feature vectors.

Features are the penultimate activations of a classifier trained by this codebase on the same
data (its `intermediates/features`); these functions take them as (N, D) arrays, so they are
plain NumPy and testable against float64 references.

- `frechet_distance`: ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2), the
  Frechet (2-Wasserstein) distance between Gaussians fitted to two feature sets (Heusel et al.
  2017). The symmetric form's square root is taken by an eigendecomposition, so it is real
  without the imaginary-part clean-up `scipy.linalg.sqrtm(S_1 S_2)` needs.
- `class_coverage`: how the samples spread over classes as judged by the classifier.
- `knn_precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019): the share
  of generated samples inside the k-NN balls of the real ones, and the reverse.
- `gaussian_baseline`: samples from a multivariate normal fitted to the training data, the floor
  every generative model should clear.
- `Reference`: a classifier trained by this codebase, restored, giving features and classes of
  raw examples; `score` puts sets of examples through it against the training split.

`eval/generative.py` (the report tool) and `eval/frechet.py` (the evaluator) use them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from data import transforms
from eval import restore
from eval.report import check_classifier


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) of (N, D) features, in float64 (unbiased, N - 1)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"features of shape {f.shape}: expected (N, D) with N >= 2")
  return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared feature units)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"statistics of different sizes: means {mu1.shape} and {mu2.shape}, "
                     f"covariances {sigma1.shape} and {sigma2.shape}")
  root = _sqrt_psd(sigma1)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma2 @ root), 0, None)).sum()
  value = np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2 * cross
  return float(max(value, 0.0))


def frechet_distance_of(a: np.ndarray, b: np.ndarray) -> float:
  """`frechet_distance` between the Gaussians fitted to feature sets a (N, D) and b (M, D)."""
  return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def class_coverage(predicted: np.ndarray, num_classes: int,
                   threshold: float = 0.05) -> dict[str, object]:
  """How generated samples spread over classes, from a classifier's predicted labels (N,).

  Returns `histogram` (fraction per class), `entropy` (nats; log(num_classes) is uniform),
  and `covered` (classes with at least `threshold` of the samples) and its count.
  """
  labels = np.asarray(predicted, np.int64)
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"predicted labels span [{labels.min()}, {labels.max()}]; expected classes "
                     f"in [0, {num_classes - 1}]")
  hist = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
  nonzero = hist[hist > 0]
  covered = [int(c) for c in np.flatnonzero(hist >= threshold)]
  return {"histogram": hist.tolist(), "entropy": float(-(nonzero * np.log(nonzero)).sum()),
          "covered": covered, "num_covered": len(covered)}


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
  """Distance from each row of x to its k-th nearest other row."""
  d = np.sqrt(np.maximum(_sq_dists(x, x), 0))
  return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (np.square(a).sum(1)[:, None] + np.square(b).sum(1)[None, :] - 2 * a @ b.T)


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
  """Improved precision (share of `fake` rows within the k-NN radius of some `real` row) and
  recall (share of `real` rows within the k-NN radius of some `fake` row), features (N, D)."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"k={k} needs more than k real and generated samples; got {len(real)} and "
                     f"{len(fake)}")
  d = np.sqrt(np.maximum(_sq_dists(fake, real), 0))              # (fake, real)
  precision = np.mean((d <= _kth_radius(real, k)[None, :]).any(axis=1))
  recall = np.mean((d.T <= _kth_radius(fake, k)[None, :]).any(axis=1))
  return {"precision": float(precision), "recall": float(recall)}


def gaussian_baseline(train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
  """`n` samples, shaped like `train`'s examples, from a multivariate normal fitted to `train`
  (N, ...) with its full covariance."""
  flat = np.asarray(train, np.float64).reshape(len(train), -1)
  mean, cov = flat.mean(0), np.cov(flat, rowvar=False)
  samples = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n, method="eigh")
  return samples.reshape((n,) + np.shape(train)[1:]).astype(np.float32)


class Reference:
  """A classifier trained by this codebase, restored from its workdir: `features(x)` are its
  penultimate activations (`intermediates/features`) and `predict(x)` its classes, for inputs in
  raw data units (it applies its own normalisation)."""

  def __init__(self, workdir: str, batch_size: int = 500):
    run = restore.restore(workdir)
    model, config, self.step = run.model, run.config, run.step
    self.num_classes = int(getattr(model, "num_classes", 0) or 0)
    check_classifier(config, workdir, "a generative reference must be a classifier",
                     flag="reference")
    self.workdir, self.config, self.batch_size = workdir, config, batch_size
    _, _, self.stats = run.split(config.data.train_split)
    variables = run.variables

    def apply(x):
      logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
      features = state["intermediates"]["features"][0]
      return features.reshape(features.shape[0], -1), logits

    self._apply = jax.jit(apply)

  def __call__(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), predicted classes (N,)) of examples (N, ...) in raw data units."""
    x = transforms.normalize(raw, self.stats)
    feats, preds = [], []
    for i in range(0, len(x), self.batch_size):
      f, logits = self._apply(x[i:i + self.batch_size])
      feats.append(np.asarray(f, np.float64))
      preds.append(np.asarray(logits).argmax(-1))
    return np.concatenate(feats), np.concatenate(preds)


def score(reference: Reference, train_features: np.ndarray, sets: dict[str, np.ndarray],
          k: int = 3, seed: int = 0) -> dict[str, dict[str, Any]]:
  """Each named set of raw examples scored in `reference`'s features against the training
  split's features (M, D): Frechet distance to all M, k-NN precision/recall against a random
  subset of the set's size, and class coverage."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, x in sets.items():
    f, pred = reference(x)
    subset = train_features[rng.choice(len(train_features), size=min(len(f), len(train_features)),
                                       replace=False)]
    out[name] = {"examples": len(x), "frechet_distance": frechet_distance_of(f, train_features),
                 **knn_precision_recall(subset, f, k),
                 "coverage": class_coverage(pred, reference.num_classes)}
  return out


def mean_and_sd(values: list[Any]) -> tuple[Any, Any]:
  """The mean and sample standard deviation (ddof=1; 0 for one value) over a list of equally
  shaped results: numbers, or dicts and lists of them, taken leaf by leaf. Integer leaves that
  all agree (e.g. `examples`) stay integers."""
  first = values[0]
  if isinstance(first, dict):
    pairs = {key: mean_and_sd([v[key] for v in values]) for key in first}
    return {k: m for k, (m, _) in pairs.items()}, {k: sd for k, (_, sd) in pairs.items()}
  if isinstance(first, list):
    if any(len(v) != len(first) for v in values):  # e.g. the list of covered classes
      return None, None
    pairs = [mean_and_sd([v[i] for v in values]) for i in range(len(first))]
    return [m for m, _ in pairs], [sd for _, sd in pairs]
  x = np.asarray(values, np.float64)
  sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
  if isinstance(first, (int, np.integer)) and not isinstance(first, bool) and np.all(x == x[0]):
    return first, sd
  return float(x.mean()), sd
