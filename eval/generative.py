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

`python -m eval.generative --workdir DIR [--reference REF] [--samples N] [--set F=V]` scores a
trained generative run (a paradigm with `generate`: `adversarial`, `diffusion`) in the features
of the classifier trained in REF (default: the run's `generative.reference`). Every set is N
examples (default: the evaluation split's size) compared with the training split, so the
numbers share one estimator bias: the held-out real data (the ceiling), the model's samples, and
the Gaussian baseline (the floor). A conditional model's samples are also scored for being
classified as the class they were asked for. The time to draw the N samples is reported
(compiled beforehand); `--set` changes sampling fields of the run's config for the report (e.g.
`--set diffusion.sampler=ddpm`, `--set diffusion.sample_steps=20`); `--seeds K` draws every set
K times (seeds seed..seed+K-1, one compiled sampler) and reports mean ± sd. Writes
DIR/generative/report.json, report.md and sample grids (to `--out`, when sampling differs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from data import transforms
from eval import restore
from eval.report import check_classifier
from train import cli, figures, files, paradigms
from train import config as config_lib


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


def report(workdir: str, reference: str | None = None, samples: int = 0, out: str | None = None,
           seed: int = 0, overrides: dict[str, Any] | None = None,
           seeds: int = 1) -> dict[str, Any]:
  """The module docstring's comparison for one trained generative run; writes report.json,
  report.md and sample grids to `out` (default WORKDIR/generative) and returns the report.
  `overrides` change sampling fields of the run's config, e.g. {"diffusion.sampler": "ddpm"}.
  With `seeds` > 1 every set is drawn again for seeds seed, seed + 1, ...: the report's numbers
  are then means, `*_sd` their sample standard deviations, and `per_seed` each draw's."""
  if samples < 0 or 0 < samples < 4:
    raise ValueError(f"--samples={samples}; expected 0 (the evaluation split's size) or at "
                     "least 4 (k-NN precision and recall use k = 3 neighbours)")
  if seeds < 1:
    raise ValueError(f"--seeds={seeds}; expected at least 1")
  run = restore.restore(workdir, overrides)
  config, model, paradigm, step = run.config, run.model, run.paradigm, run.step
  if paradigm.generate is None:
    raise ValueError(f"--workdir={workdir} holds a paradigm={config.paradigm!r} run, which does "
                     "not generate samples")
  reference = reference or config.generative.reference
  if not reference:
    raise ValueError(f"no reference classifier: --workdir={workdir} has generative.reference='' "
                     "and --reference was not given; train one (e.g. python -m train --config "
                     "experiments/digits_cnn.py --workdir runs/digits_cnn) and name its workdir")
  if not os.path.exists(os.path.join(reference, files.CONFIG)):
    raise ValueError(f"reference classifier {reference} (--reference or generative.reference) "
                     "holds no trained run; train a classifier on data.source="
                     f"{config.data.source!r} there first, e.g. python -m train --config "
                     f"experiments/{config.data.source}_cnn.py --workdir {reference}")
  ref = Reference(reference)
  if ref.config.data.source != config.data.source:
    raise ValueError(f"reference classifier {reference} was trained on data.source="
                     f"{ref.config.data.source!r}; the run's is {config.data.source!r}")
  x_train, _, stats = run.split(config.data.train_split)
  x_test, _, _ = run.split(config.data.eval_split)
  n = samples or len(x_test)
  state = run.state
  conditional = getattr(model, "num_classes", 0) > 0
  # compiled once for chunks of `chunk` (the last one padded), so timings exclude compiling
  chunk = min(n, 500)
  pad = -n % chunk
  z_chunk = jnp.zeros((chunk,) + paradigm.latent_shape, jnp.float32)
  generate = jax.jit(paradigm.generate).lower(
      state, z_chunk, jnp.zeros((chunk,), jnp.int32) if conditional else None,
      jax.random.key(0)).compile()
  raw_train = transforms.denormalize(x_train, stats)
  raw_test = transforms.denormalize(x_test, stats)
  train_f, _ = ref(raw_train)

  def one_seed(s: int) -> dict[str, Any]:
    rng = np.random.default_rng(s)
    labels = rng.integers(0, model.num_classes, n) if conditional else None
    z = jax.random.normal(jax.random.key(s), (n,) + paradigm.latent_shape)
    sampler_key = jax.random.fold_in(jax.random.key(s), 1)
    z = jnp.concatenate([z, z[:pad]])
    y = None if labels is None else jnp.asarray(np.concatenate([labels, labels[:pad]]),
                                                jnp.int32)
    t0 = time.perf_counter()
    fake = np.concatenate([
        np.asarray(generate(state, z[i:i + chunk], None if y is None else y[i:i + chunk],
                            jax.random.fold_in(sampler_key, i)))
        for i in range(0, n + pad, chunk)])[:n]
    seconds = time.perf_counter() - t0
    held_out = raw_test
    if n != len(held_out):
      held_out = held_out[rng.choice(len(held_out), size=n, replace=n > len(held_out))]
    sets = {"held-out real data": held_out,
            "model samples": transforms.denormalize(fake, stats),
            "Gaussian baseline": gaussian_baseline(raw_train, n, s)}
    run: dict[str, Any] = {"seed": s, "sampling_seconds": seconds,
                           "scores": score(ref, train_f, sets, seed=s), "sets": sets}
    if conditional:
      _, pred = ref(sets["model samples"])
      run["conditional_accuracy"] = float(np.mean(pred == labels))
    return run

  runs = [one_seed(seed + i) for i in range(seeds)]
  baseline = runs[0].pop("sets")["Gaussian baseline"]
  for run in runs[1:]:
    del run["sets"]
  result: dict[str, Any] = {
      "workdir": workdir, "checkpoint_step": step, "model": config.model.name,
      "reference": {"workdir": reference, "model": ref.config.model.name,
                    "feature_dim": int(train_f.shape[1])},
      "samples": n, "train_examples": len(raw_train), "overrides": dict(overrides or {}),
      "seeds": [run["seed"] for run in runs]}
  for key in ("sampling_seconds", "scores", "conditional_accuracy"):
    if key in runs[0]:
      result[key], spread = mean_and_sd([run[key] for run in runs])
      if seeds > 1:
        result[key + "_sd"] = spread
  if seeds > 1:
    result["per_seed"] = runs
  out = out or os.path.join(workdir, "generative")
  os.makedirs(out, exist_ok=True)
  grid = 100
  grid_z, grid_labels = paradigms.fixed_inputs(paradigm.latent_shape, model.num_classes, grid,
                                               jax.random.key(seed + 1))
  grid_x = np.asarray(jax.jit(paradigm.generate)(state, grid_z, grid_labels))
  columns = [str(c) for c in range(model.num_classes)] if conditional else None
  name = os.path.basename(os.path.normpath(workdir))
  limits = (float(raw_train.min()), float(raw_train.max()))  # every grid on the data's scale
  for file, x, title in (("samples.png", transforms.denormalize(grid_x, stats),
                          f"{name}, step {step}"),
                         ("real.png", raw_train[:grid], "training data"),
                         ("gaussian_baseline.png", baseline[:grid],
                          "Gaussian baseline")):
    figures.sample_grid(x, os.path.join(out, file), title=title, limits=limits,
                        column_labels=columns if file == "samples.png" else None)
  files.write_report(out, result, markdown(result))
  return result


def markdown(result: dict[str, Any]) -> str:
  """The report as a Markdown table; over several seeds, each number is mean ± sd."""
  seeds = result.get("seeds", [0])
  sd = result.get("scores_sd")

  def num(path: tuple[str, ...], digits: int, percent: bool = False) -> str:
    def get(tree):
      for key in path:
        tree = tree[key]
      return tree
    scale = 100.0 if percent else 1.0
    text = f"{get(result) * scale:.{digits}f}"
    spread = result.get(path[0] + "_sd")
    if spread is not None and len(seeds) > 1:
      text += f" ± {get({path[0]: spread}) * scale:.{digits}f}"
    return text + ("%" if percent else "")

  over = (f", mean ± sd over {len(seeds)} seeds ({seeds[0]}..{seeds[-1]})" if sd else "")
  lines = [f"Generative evaluation of {result['workdir']} (step {result['checkpoint_step']}), "
           f"{result['samples']} examples per set against {result['train_examples']} training "
           f"examples, in the {result['reference']['feature_dim']}-d features of "
           f"{result['reference']['workdir']} ({result['reference']['model']}){over}.", "",
           "| set | Frechet distance | precision | recall | classes with >= 5% | entropy (nats) |",
           "|---|---|---|---|---|---|"]
  for name in result["scores"]:
    at = ("scores", name)
    lines.append(f"| {name} | {num(at + ('frechet_distance',), 2)} | "
                 f"{num(at + ('precision',), 3)} | {num(at + ('recall',), 3)} | "
                 f"{num(at + ('coverage', 'num_covered'), 1 if sd else 0)} | "
                 f"{num(at + ('coverage', 'entropy'), 3)} |")
  if "conditional_accuracy" in result:
    lines += ["", f"Samples classified as their requested class: "
              f"{num(('conditional_accuracy',), 1, percent=True)}"]
  settings = ", ".join(f"{k}={v}" for k, v in result.get("overrides", {}).items())
  lines += ["", f"Sampling the {result['samples']} examples took "
            f"{num(('sampling_seconds',), 2)} s (compiled beforehand)"
            f"{f'; with {settings}' if settings else ''}."]
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  overrides = config_lib.parse_sets(FLAGS.set)
  result = report(FLAGS.workdir, FLAGS.reference, FLAGS.samples, FLAGS.out, FLAGS.seed,
                  overrides, FLAGS.seeds)
  print(markdown(result))


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained generative run.", required=True)
  flags.DEFINE_string("reference", None, "Workdir of the classifier whose features score the "
                      "samples (default: the run's generative.reference).")
  flags.DEFINE_integer("samples", 0, "Examples per set (default: the evaluation split's size).")
  flags.DEFINE_string("out", None, "Where report.json and the grids go (default "
                      "WORKDIR/generative).")
  flags.DEFINE_integer("seed", 0, "Seed of the samples, labels and subsets.")
  flags.DEFINE_integer("seeds", 1, "Draw every set for this many seeds (seed, seed + 1, ...) "
                       "and report mean ± sd.")
  flags.DEFINE_multi_string("set", None, "FIELD=VALUE: change a sampling field of the run's "
                            "config, e.g. diffusion.sampler=ddpm or diffusion.sample_steps=20.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
