"""What a trained autoencoder or VAE is good for, each beside a baseline fitted on the same split.

  python -m eval.reconstruction --workdir runs/digits_ae [--split test] [--out DIR]

restores the newest checkpoint of a `paradigm="reconstruction"` run and reports, on `--split`:

- compression: the test mean squared error of the reconstruction (per element, in the model's
  input units) beside PCA with as many components as the code has dimensions;
- anomaly detection, when the run trained on some classes only (`data.keep_classes`): the ROC AUC
  of separating the held-out classes from the trained ones by the reconstruction error (and, for
  a VAE, the negative ELBO), beside PCA's reconstruction error;
- imputation: a fraction of each input's elements (random, `--missing`) or a square block
  (`--block`) is hidden; the model fills it in (`impute`), and the mean squared error on the
  hidden elements, in the data's stored units, is compared with the training mean and
  scikit-learn's k-NN imputer (5 neighbours, fitted on the training split);
- figures (PNG, in `--out`, default WORKDIR/report): inputs over reconstructions, a latent
  interpolation between two test examples, and the codes of the split coloured by class (the
  first two principal components when the code has more than two dimensions).

The report is printed as Markdown and written to `--out/report.json`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import numpy as np
from absl import flags

from data import transforms
from eval import metrics, restore
from train import cli, figures, files, paradigm_eval, remote_workdir, workdir_lock
from train.paradigms import reconstruction as rec


def pca_errors(train: np.ndarray, x: np.ndarray, components: int) -> np.ndarray:
  """Per-example mean squared reconstruction error (N,) of `x` (N, ...) by a PCA with
  `components` components fitted on `train` (M, ...)."""
  from sklearn.decomposition import PCA

  flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)  # noqa: E731
  pca = PCA(components).fit(flat(train))
  rec = pca.inverse_transform(pca.transform(flat(x)))
  return np.mean(np.square(rec - flat(x)), axis=1)


class Trained:
  """A restored reconstruction run with jitted per-example functions over numpy arrays;
  reconstructions come from the paradigm's `predict` (a VAE decodes its posterior mean)."""

  def __init__(self, run: restore.Restored):
    model = run.model
    rec.check_model(model, run.config.model.name)
    self.run, self.model, self.variables = run, model, run.variables
    self.is_vae = bool(model.variational)
    self.latent_dim = model.latent_dim

    def code(v, x):
      return model.apply(v, x, method=lambda m, x: m.encode(x)[0] if self.is_vae else m.encode(x))

    self._code = jax.jit(code)
    self._decode = jax.jit(lambda v, z: model.apply(
        v, z, method=lambda m, z: m.reconstruct(m.decode(z))))
    self._elbo = jax.jit(lambda v, x, rng, k: rec.elbo_terms(model, v, x, rng, k),
                         static_argnums=3)

  def code(self, x: np.ndarray) -> np.ndarray:
    """Codes (N, latent_dim): a VAE's posterior means."""
    return np.asarray(self._code(self.variables, x))

  def decode(self, z: np.ndarray) -> np.ndarray:
    """Reconstructions (N, *input_shape) in input units from codes (N, latent_dim)."""
    return np.asarray(self._decode(self.variables, z))

  def reconstruct(self, x: np.ndarray) -> np.ndarray:
    """Reconstructions (N, *input_shape) in input units: the paradigm's `predict`."""
    return self.run.predict(x)

  def errors(self, x: np.ndarray, reconstruction: np.ndarray | None = None) -> np.ndarray:
    """Per-example mean squared reconstruction error (N,) (of `reconstruction`, when `x`'s is
    already at hand)."""
    err = (self.reconstruct(x) if reconstruction is None else reconstruction) - x
    return np.mean(np.square(err.reshape(len(x), -1)), axis=1)

  def neg_elbo(self, x: np.ndarray, samples: int = 100, seed: int = 0) -> np.ndarray:
    """A VAE's per-example negative ELBO (N,) in nats, from `samples` posterior draws."""
    return np.asarray(self._elbo(self.variables, x, jax.random.key(seed), samples)["neg_elbo"])

  def impute(self, x: np.ndarray, missing: np.ndarray, fill: np.ndarray,
             iterations: int = 1) -> np.ndarray:
    """`x` with its `missing` elements (bool, x's shape) replaced by the model's reconstruction:
    they start at `fill` (broadcast to x) and are re-estimated `iterations` times from the
    reconstruction of the current guess, the observed elements kept."""
    guess = np.where(missing, fill, x).astype(np.float32)
    for _ in range(iterations):
      guess = np.where(missing, self.reconstruct(guess), x).astype(np.float32)
    return guess


def random_missing(shape: tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Each element of each example hidden independently with probability `fraction`."""
  return rng.random(shape) < fraction


def block_missing(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> np.ndarray:
  """One `size`-wide block per example at a random position: a square over the two spatial
  axes of images (N, H, W[, C]), a segment of signals (N, L)."""
  n, spatial = shape[0], shape[1:3] if len(shape) >= 3 else shape[1:2]
  if any(size > s for s in spatial):
    raise ValueError(f"--block={size} does not fit inputs of spatial size {spatial}")
  out = np.zeros(shape, bool)
  for i in range(n):
    corner = [int(rng.integers(0, s - size + 1)) for s in spatial]
    index = (i,) + tuple(slice(c, c + size) for c in corner)
    out[index] = True
  return out


def impute_baselines(train: np.ndarray, x: np.ndarray, missing: np.ndarray) -> dict[str, np.ndarray]:
  """`x` (N, ...) with `missing` elements filled by the training mean of each element, and by
  scikit-learn's `KNNImputer` (5 neighbours by distance over the observed elements) fitted on
  the complete training inputs."""
  from sklearn.impute import KNNImputer

  flat_train = np.asarray(train, np.float64).reshape(len(train), -1)
  flat_x = np.asarray(x, np.float64).reshape(len(x), -1)
  flat_missing = missing.reshape(len(x), -1)
  mean = np.where(flat_missing, flat_train.mean(0), flat_x)
  knn = KNNImputer(n_neighbors=5).fit(flat_train)
  filled = knn.transform(np.where(flat_missing, np.nan, flat_x))
  return {"mean": mean.reshape(x.shape), "knn": filled.reshape(x.shape)}


def masked_mse(estimate: np.ndarray, truth: np.ndarray, missing: np.ndarray) -> float:
  """Mean squared error over the `missing` elements only."""
  return float(np.mean(np.square((estimate - truth)[missing])))


def plot_reconstructions(x: np.ndarray, rec: np.ndarray, path: str, n: int = 10) -> None:
  """Inputs (top row) over their reconstructions (bottom row) for the first `n` examples."""
  plt = figures.pyplot()

  n = min(n, len(x))
  fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
  for j in range(n):
    for i, img in enumerate((x[j], rec[j])):
      figures.show(axes[i, j], img, (float(x[j].min()), float(x[j].max())))
  axes[0, 0].set_ylabel("input")
  axes[1, 0].set_ylabel("recon.")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_interpolation(trained: Trained, a: np.ndarray, b: np.ndarray, path: str,
                       steps: int = 9) -> None:
  """Decodes `steps` codes on the line between the codes of examples `a` and `b`."""
  plt = figures.pyplot()

  za, zb = trained.code(np.stack([a, b]))
  t = np.linspace(0.0, 1.0, steps)[:, None]
  images = trained.decode((1 - t) * za + t * zb)
  fig, axes = plt.subplots(1, steps + 2, figsize=(1.2 * (steps + 2), 1.6), squeeze=False)
  limits = (float(min(a.min(), b.min())), float(max(a.max(), b.max())))
  for j, img in enumerate([a, *images, b]):
    figures.show(axes[0, j], img, limits)
  axes[0, 0].set_title("a", fontsize=8)
  axes[0, -1].set_title("b", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_latents(codes: np.ndarray, labels: np.ndarray, path: str) -> str:
  """Codes (N, D) coloured by label, in their own axes for D = 2, else the first two principal
  components. Returns the axis description."""
  plt = figures.pyplot()

  if codes.shape[1] > 2:
    from sklearn.decomposition import PCA

    pca = PCA(2).fit(codes)
    xy, what = pca.transform(codes), (f"first two principal components of the {codes.shape[1]}-d "
                                      f"codes ({pca.explained_variance_ratio_.sum():.0%} of variance)")
  else:
    xy, what = codes, "2-d codes"
  fig, ax = plt.subplots(figsize=(5.2, 4.4))
  points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=9,
                      vmin=-0.5, vmax=9.5)
  fig.colorbar(points, ax=ax, ticks=range(10), label="class")
  ax.set_title(what, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return what


@workdir_lock.writes_into_workdir("report")
def report(workdir: str, split: str = "test", out: str | None = None, missing: float = 0.25,
           block: int = 4, iterations: int = 1, seed: int = 0) -> dict[str, Any]:
  """Every analysis of the module docstring for one trained workdir; writes the figures and
  `report.json` to `out` (default WORKDIR/report) and returns the report."""
  run = restore.restore(workdir, paradigm="reconstruction")
  config, step = run.config, run.step
  trained = Trained(run)
  os.makedirs(out, exist_ok=True)
  keep = tuple(config.data.keep_classes)
  x_train, _, stats = run.split(config.data.train_split)
  x, labels, _ = run.split(split)
  result: dict[str, Any] = {"workdir": workdir, "checkpoint_step": step, "split": split,
                            "model": config.model.name, "latent_dim": trained.latent_dim}

  # the run's own evaluator on the split: what training records (loss, MSE or the ELBO's terms)
  result["evaluation"] = paradigm_eval.ParadigmEval("report", {"split": split}, run, stats)(
      run.state)
  # As many components as the code has dimensions, where the data have that many.
  components = min(trained.latent_dim, int(np.prod(x_train.shape[1:])), len(x_train))
  x_rec = trained.reconstruct(x)
  result["compression"] = {"model_mse": float(trained.errors(x, x_rec).mean()),
                           "pca_mse": float(pca_errors(x_train, x, components).mean()),
                           "pca_components": components, "examples": len(x)}

  if keep:
    x_all, labels_all, _ = run.split(split, keep_classes=())
    unseen = ~np.isin(labels_all, keep)
    scores = {"model reconstruction error": trained.errors(x_all),
              f"PCA ({components} components) reconstruction error":
                  pca_errors(x_train, x_all, components)}
    if trained.is_vae:
      scores["model negative ELBO"] = trained.neg_elbo(x_all, seed=seed)
    result["anomaly"] = {
        "normal_classes": list(keep), "anomalous_classes": sorted(set(labels_all[unseen].tolist())),
        "normal": int((~unseen).sum()), "anomalous": int(unseen.sum()),
        "roc_auc": {name: metrics.roc_auc_binary(unseen, s) for name, s in scores.items()}}

  if not config.data.binarize:
    rng = np.random.default_rng(seed)
    truth, train_units = transforms.denormalize(x, stats), transforms.denormalize(x_train, stats)
    fill = np.zeros(x.shape[1:], np.float32) if stats is None else (
        (train_units.mean(0) - stats.mean) / stats.std).astype(np.float32)
    imputation = {}
    for name, hidden in ((f"random {missing:.0%}", random_missing(x.shape, missing, rng)),
                         (f"block {block}", block_missing(x.shape, block, rng))):
      filled = transforms.denormalize(trained.impute(x, hidden, fill, iterations), stats)
      rows = {"model": masked_mse(filled, truth, hidden)}
      for base, estimate in impute_baselines(train_units, truth, hidden).items():
        rows[base] = masked_mse(estimate, truth, hidden)
      imputation[name] = rows
    result["imputation"] = {"units": "stored data units", "iterations": iterations,
                            "mse_on_hidden": imputation}

  plot_reconstructions(x, x_rec, os.path.join(out, "reconstructions.png"))
  a, b = 0, int(np.flatnonzero(labels != labels[0])[0]) if (labels != labels[0]).any() else 1
  plot_interpolation(trained, x[a], x[b], os.path.join(out, "interpolation.png"))
  result["latent_plot"] = plot_latents(trained.code(x), labels, os.path.join(out, "latents.png"))
  files.write_json_atomic(os.path.join(out, "report.json"), result)
  return result


def markdown(result: dict[str, Any]) -> str:
  """The report as Markdown tables."""
  lines = [f"# {result['model']} in {result['workdir']} (step {result['checkpoint_step']}), "
           f"split {result['split']}", ""]
  lines += ["The run's evaluator on the split (as training records it): " + ", ".join(
      f"{k} {v:.5g}" for k, v in result["evaluation"].items()), ""]
  c = result["compression"]
  lines += ["| reconstruction | MSE per element |", "|---|---|",
            f"| model, {result['latent_dim']}-d code | {c['model_mse']:.5f} |",
            f"| PCA, {c['pca_components']} components | {c['pca_mse']:.5f} |", ""]
  if "anomaly" in result:
    a = result["anomaly"]
    lines += [f"Anomaly detection: normal classes {a['normal_classes']} ({a['normal']}), "
              f"anomalous {a['anomalous_classes']} ({a['anomalous']}).", "",
              "| score | ROC AUC |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in a["roc_auc"].items()] + [""]
  if "imputation" in result:
    imp = result["imputation"]["mse_on_hidden"]
    lines += ["| hidden | model | mean | k-NN (5) |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['model']:.4f} | {v['mean']:.4f} | {v['knn']:.4f} |"
              for k, v in imp.items()] + [""]
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    result = report(workdir, FLAGS.split, FLAGS.out, FLAGS.missing, FLAGS.block,
                    FLAGS.iterations, FLAGS.seed)
  print(markdown(result))
  print(f"figures and report.json in {FLAGS.out or os.path.join(FLAGS.workdir, 'report')}",
        file=sys.stderr)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained reconstruction run.", required=True)
  flags.DEFINE_string("split", "test", "The split to analyse.")
  flags.DEFINE_string("out", None, "Where figures and report.json go (default WORKDIR/report).")
  flags.DEFINE_float("missing", 0.25, "Imputation: fraction of elements hidden at random.")
  flags.DEFINE_integer("block", 4, "Imputation: side of the hidden square (images) or segment.")
  flags.DEFINE_integer("iterations", 1, "Imputation: model re-estimates of the hidden elements.")
  flags.DEFINE_integer("seed", 0, "Seed of the hidden elements and the VAE's samples.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
