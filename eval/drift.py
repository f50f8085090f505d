"""Drift monitoring: has the data a model now sees left the population it was evaluated on?

Two-sample tests between a reference set X (N, D) and a current set Y (M, D), in NumPy/SciPy:

- `mmd_test`: the kernel maximum mean discrepancy with a Gaussian kernel whose bandwidth is the
  median pairwise distance of the pooled sample (Gretton et al. 2012). The p-value comes from
  `permutations` random relabellings of the pooled sample, (1 + #{MMD_perm >= MMD}) /
  (1 + permutations), so the test is exact at any sample size: under no drift it rejects at most
  a fraction alpha of the time. The statistic is the biased (V-statistic) MMD^2; the unbiased
  estimate is reported beside it.
- `ks_tests`: a two-sample Kolmogorov-Smirnov test per feature, with the Bonferroni-adjusted
  minimum p-value (min p * D) as the summary.
- `class_test`: a chi-squared test of homogeneity between the predicted-class counts.

`monitor` runs them on three views of the data through a trained classifier: the raw inputs, its
learned features (penultimate activations) and its predicted classes, and calls drift when any of
the three summary p-values is below alpha / 3 (Bonferroni over the views, so the verdict's false
positive rate stays at most alpha).

  python -m eval.drift --workdir runs/mnist1d_cnn --reference test --current mnist1d_drift

`--current` is SOURCE or SOURCE:SPLIT (default split `test`): an offline source, a TFDS catalog
name, or the run's own source for a same-distribution check. Writes DIR/drift/report.json and
a figure of the per-feature statistics and the permutation null.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections as mlc
import numpy as np
from absl import flags

from data import sources
from eval.sample_quality import Reference
from train import cli, figures, files, remote_workdir, workdir_lock

VIEWS = ("inputs", "features", "predictions")


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.maximum(d, 0.0)


def _two_samples(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"reference has {x.shape[1]} features per example and current "
                     f"{y.shape[1]}; expected the same")
  if len(x) < 2 or len(y) < 2:
    raise ValueError(f"two-sample tests need at least 2 examples per set; got {len(x)} and "
                     f"{len(y)}")
  return x, y


def mmd_test(x: Any, y: Any, permutations: int = 500, seed: int = 0,
             bandwidth: float | None = None) -> dict[str, Any]:
  """The MMD permutation test of the module docstring between x (N, ...) and y (M, ...).

  Returns: `mmd2` (the V-statistic tested), `mmd2_unbiased`, `bandwidth`, `p_value`, and `null`
  (the permutation statistics, for figures)."""
  x, y = _two_samples(x, y)
  if permutations < 1:
    raise ValueError(f"permutations={permutations}; expected at least 1")
  z = np.concatenate([x, y])
  n, m = len(x), len(y)
  d2 = _pairwise_sq(z, z)
  if bandwidth is None:
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(np.sqrt(off))) or 1.0
  k = np.exp(-d2 / (2.0 * bandwidth ** 2))
  rng = np.random.default_rng(seed)
  # column 0: the observed labelling; each other column a permutation of the pooled sample.
  # With weights w = 1/n on x's rows and -1/m on y's, the V-statistic is w^T K w.
  base = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
  w = np.stack([base] + [base[rng.permutation(n + m)] for _ in range(permutations)], axis=1)
  stats = np.einsum("ip,ip->p", k @ w, w)
  kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
  unbiased = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
              + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())
  p = (1.0 + np.sum(stats[1:] >= stats[0] - 1e-15)) / (1.0 + permutations)
  return {"mmd2": float(stats[0]), "mmd2_unbiased": float(unbiased), "bandwidth": bandwidth,
          "p_value": float(p), "permutations": permutations, "null": stats[1:]}


def ks_tests(x: Any, y: Any) -> dict[str, Any]:
  """Per-feature two-sample KS statistics and p-values ((D,) each), and `p_value`, the
  Bonferroni-adjusted minimum min(1, D * min p)."""
  from scipy import stats

  x, y = _two_samples(x, y)
  result = stats.ks_2samp(x, y, axis=0)
  p = np.atleast_1d(result.pvalue)
  return {"statistics": np.atleast_1d(result.statistic), "p_values": p,
          "p_value": float(min(1.0, p.min() * len(p))), "features": int(len(p))}


def class_test(reference: Any, current: Any, num_classes: int) -> dict[str, Any]:
  """Chi-squared test that two sets of predicted classes ((N,), (M,) ints) come from one class
  distribution; classes absent from both are left out."""
  from scipy import stats

  a = np.bincount(np.asarray(reference, np.int64), minlength=num_classes)
  b = np.bincount(np.asarray(current, np.int64), minlength=num_classes)
  keep = (a + b) > 0
  if keep.sum() < 2:
    return {"statistic": 0.0, "p_value": 1.0, "reference_counts": a.tolist(),
            "current_counts": b.tolist()}
  chi2, p, dof, _ = stats.chi2_contingency(np.stack([a[keep], b[keep]]), correction=False)
  return {"statistic": float(chi2), "p_value": float(p), "dof": int(dof),
          "reference_counts": a.tolist(), "current_counts": b.tolist()}


def verdict(p_values: dict[str, float], alpha: float = 0.05) -> dict[str, Any]:
  """Drift when any view's p-value is below alpha / (number of views)."""
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha={alpha}; expected a level in (0, 1)")
  level = alpha / len(p_values)
  flagged = sorted(v for v, p in p_values.items() if p < level)
  return {"drift": bool(flagged), "alpha": alpha, "level_per_view": level, "flagged": flagged}


def monitor(reference_raw: np.ndarray, current_raw: np.ndarray, classifier: Any,
            alpha: float = 0.05, permutations: int = 500, max_examples: int = 1000,
            seed: int = 0, outputs: tuple[Any, Any] | None = None) -> dict[str, Any]:
  """The three views' tests and the verdict, for raw-unit examples and a classifier with
  `__call__(raw) -> (features, predicted classes)` and `num_classes` (`eval.sample_quality.Reference`).
  Sets larger than `max_examples` are subsampled (at random, `seed`) for every test. `outputs`,
  if given, are the classifier's (features, classes) of the whole reference and current sets,
  already computed, so it is not run again."""
  rng = np.random.default_rng(seed)

  def cap(n):
    return np.sort(rng.choice(n, max_examples, replace=False)) if n > max_examples \
        else np.arange(n)

  ref_raw, cur_raw = np.asarray(reference_raw), np.asarray(current_raw)
  ref_i, cur_i = cap(len(ref_raw)), cap(len(cur_raw))
  ref, cur = ref_raw[ref_i], cur_raw[cur_i]
  if outputs is None:
    (ref_f, ref_c), (cur_f, cur_c) = classifier(ref), classifier(cur)
  else:
    (ref_f, ref_c), (cur_f, cur_c) = ((f[i], c[i]) for (f, c), i in zip(outputs, (ref_i, cur_i)))
  out: dict[str, Any] = {"examples": {"reference": len(ref), "current": len(cur)}}
  out["inputs"] = {"mmd": mmd_test(ref, cur, permutations, seed), "ks": ks_tests(ref, cur)}
  out["features"] = {"mmd": mmd_test(ref_f, cur_f, permutations, seed + 1),
                     "ks": ks_tests(ref_f, cur_f)}
  out["predictions"] = {"classes": class_test(ref_c, cur_c, classifier.num_classes)}
  p_values = {"inputs": out["inputs"]["mmd"]["p_value"],
              "features": out["features"]["mmd"]["p_value"],
              "predictions": out["predictions"]["classes"]["p_value"]}
  out["p_values"] = p_values
  out["verdict"] = verdict(p_values, alpha)
  return out


def plot(result: dict[str, Any], path: str, title: str = "") -> str:
  """Per view: the MMD permutation null with the observed statistic, and the per-feature KS
  statistics of the inputs; the predicted-class shares side by side."""
  plt = figures.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
  for ax, view in zip(axes[:2], ("inputs", "features")):
    mmd = result[view]["mmd"]
    ax.hist(mmd["null"], bins=30, color="0.6", label="permutation null")
    ax.axvline(mmd["mmd2"], color="tab:red", label=f"observed (p = {mmd['p_value']:.3f})")
    ax.set(title=f"MMD^2 on {view}", xlabel="MMD^2 (V-statistic)")
    ax.legend(fontsize=7)
  ks = result["inputs"]["ks"]
  axes[2].bar(np.arange(len(ks["statistics"])), ks["statistics"], color="tab:blue")
  axes[2].set(title=f"KS per input feature (adjusted p = {ks['p_value']:.2g})",
              xlabel="feature", ylabel="KS statistic")
  c = result["predictions"]["classes"]
  ref, cur = np.asarray(c["reference_counts"], float), np.asarray(c["current_counts"], float)
  idx = np.arange(len(ref))
  axes[3].bar(idx - 0.2, ref / ref.sum(), 0.4, label="reference")
  axes[3].bar(idx + 0.2, cur / cur.sum(), 0.4, label="current")
  axes[3].set(title=f"predicted classes (p = {c['p_value']:.2g})", xlabel="class",
              ylabel="share", xticks=idx)
  axes[3].legend(fontsize=7)
  v = result["verdict"]
  fig.suptitle((title + ": " if title else "") + ("DRIFT (" + ", ".join(v["flagged"]) + ")"
                                                  if v["drift"] else "no drift detected"))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _jsonable(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _jsonable(v) for k, v in tree.items() if k != "null"}
  if isinstance(tree, np.ndarray):
    return tree.tolist()
  return tree


def markdown(result: dict[str, Any]) -> str:
  """The tests as a table with the verdict."""
  v = result["verdict"]
  lines = [f"Drift check of {result['current']} against {result['reference']} "
           f"({result['examples']['current']} vs {result['examples']['reference']} examples), "
           f"through {result['workdir']}.", "",
           "| view | test | statistic | p-value |", "|---|---|---|---|"]
  for view in ("inputs", "features"):
    mmd, ks = result[view]["mmd"], result[view]["ks"]
    lines.append(f"| {view} | MMD^2 (bandwidth {mmd['bandwidth']:.3g}, {mmd['permutations']} "
                 f"permutations) | {mmd['mmd2']:.5f} | {mmd['p_value']:.4f} |")
    lines.append(f"| {view} | KS per feature, Bonferroni over {ks['features']} | max "
                 f"{np.max(ks['statistics']):.4f} | {ks['p_value']:.4g} |")
  c = result["predictions"]["classes"]
  lines.append(f"| predictions | chi-squared, class counts | {c['statistic']:.3f} | "
               f"{c['p_value']:.4g} |")
  lines += ["", f"Verdict at alpha = {v['alpha']} (each view's MMD or chi-squared p-value "
            f"against {v['level_per_view']:.4f}): "
            + (f"**drift** in {', '.join(v['flagged'])}" if v["drift"] else "no drift detected")
            + "."]
  if "accuracy" in result:
    a = result["accuracy"]
    lines.append(f"Accuracy of the classifier: {a['reference']:.4f} on the reference, "
                 f"{a['current']:.4f} on the current data.")
  return "\n".join(lines)


@workdir_lock.writes_into_workdir("drift")
def run(workdir: str, reference: str, current: str, alpha: float = 0.05,
        permutations: int = 500, seed: int = 0, out: str | None = None) -> dict[str, Any]:
  """The CLI: split `reference` of the run's own source against `current` (SOURCE[:SPLIT])."""
  classifier = Reference(workdir)
  config = classifier.config   # the run's config, as the classifier restored it
  source, _, split = current.partition(":")
  cur_data = config.data.copy_and_resolve_references()
  with cur_data.unlocked():
    cur_data.source = source
    if source != config.data.source:
      cur_data.builder_config = mlc.ConfigDict()
  ref = sources.load_split(config.data, reference)
  cur = sources.load_split(cur_data, split or "test")
  if ref.inputs.shape[1:] != cur.inputs.shape[1:]:
    raise ValueError(f"--current={current} has examples of shape {cur.inputs.shape[1:]}; the "
                     f"reference's are {ref.inputs.shape[1:]}")
  outputs = (classifier(ref.inputs), classifier(cur.inputs))  # once each, for every use below
  result = monitor(ref.inputs, cur.inputs, classifier, alpha, permutations, seed=seed,
                   outputs=outputs)
  result.update(workdir=workdir, reference=f"{config.data.source}:{reference}",
                current=f"{source}:{split or 'test'}")
  result["accuracy"] = {
      name: float(np.mean(out[1] == d.labels)) for name, d, out in
      (("reference", ref, outputs[0]), ("current", cur, outputs[1]))} if cur.labels.size else None
  os.makedirs(out, exist_ok=True)
  plot(result, os.path.join(out, "drift.png"),
       f"{result['current']} vs {result['reference']}")
  files.write_report(out, _jsonable(result))
  return result


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    result = run(workdir, FLAGS.reference, FLAGS.current, FLAGS.alpha, FLAGS.permutations,
                 FLAGS.seed, FLAGS.out)
  print(markdown(result))


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained classifier whose features and predictions "
                      "are monitored.", required=True)
  flags.DEFINE_string("reference", "test", "The split of the run's own source to compare with.")
  flags.DEFINE_string("current", None, "SOURCE or SOURCE:SPLIT (default split test), e.g. "
                      "mnist1d_drift.", required=True)
  flags.DEFINE_float("alpha", 0.05, "The verdict's false-positive rate.")
  flags.DEFINE_integer("permutations", 500, "Permutations of the MMD tests.")
  flags.DEFINE_integer("seed", 0, "Seed of the permutations and subsampling.")
  flags.DEFINE_string("out", None, "Where report.json and drift.png go (default WORKDIR/drift).")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
