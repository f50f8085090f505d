"""False-positive rate and power of `eval.drift.monitor` on MNIST-1D, through a trained classifier.

  python -m benchmarks.drift_rates --workdir runs/mnist1d_cnn --repeats 200 --size 500

Same distribution: each repeat draws two disjoint random sets of `--size` examples from the
canonical training split (4,000 examples) and runs the monitor at alpha = 0.05; the share of
repeats it calls drift is its false-positive rate (with a 95% Clopper-Pearson interval).
Drifted: each repeat draws `--size` examples of the canonical test split and of `mnist1d_drift`'s
test split; the share flagged is the power. Also per view (inputs, features, predictions), each
at its Bonferroni level alpha / 3.
"""

from __future__ import annotations

import json

import numpy as np
import scipy.stats

from train import cli


def interval(k: int, n: int) -> tuple[float, float]:
  """The 95% Clopper-Pearson interval of a rate k / n."""
  lo = scipy.stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
  hi = scipy.stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
  return float(lo), float(hi)


def main() -> None:
  import ml_collections as mlc

  from data import sources
  from eval import drift
  from eval.sample_quality import Reference

  parser = cli.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/mnist1d_cnn")
  parser.add_argument("--repeats", type=int, default=200)
  parser.add_argument("--size", type=int, default=500)
  parser.add_argument("--permutations", type=int, default=200)
  parser.add_argument("--alpha", type=float, default=0.05)
  args = parser.parse_args()

  classifier = Reference(args.workdir)
  data = mlc.ConfigDict(classifier.config.to_dict()["data"])
  pool = sources.load_split(data, "train").inputs
  test = sources.load_split(data, "test").inputs
  with data.unlocked():
    data.source = "mnist1d_drift"
  drifted = sources.load_split(data, "test").inputs
  rng = np.random.default_rng(0)
  rows = []
  for name in ("same distribution", "drifted"):
    flagged = {"verdict": 0, "inputs": 0, "features": 0, "predictions": 0}
    for r in range(args.repeats):
      if name == "same distribution":
        idx = rng.permutation(len(pool))
        a, b = pool[idx[:args.size]], pool[idx[args.size:2 * args.size]]
      else:
        a = test[rng.choice(len(test), args.size, replace=False)]
        b = drifted[rng.choice(len(drifted), args.size, replace=False)]
      out = drift.monitor(a, b, classifier, args.alpha, args.permutations, seed=r)
      flagged["verdict"] += out["verdict"]["drift"]
      for view in ("inputs", "features", "predictions"):
        flagged[view] += view in out["verdict"]["flagged"]
    for view, k in flagged.items():
      lo, hi = interval(k, args.repeats)
      rows.append({"pairs": name, "view": view, "flagged": k, "repeats": args.repeats,
                   "rate": k / args.repeats, "ci95": [lo, hi]})
      print(json.dumps(rows[-1]), flush=True)
  print(f"\n{args.repeats} repeats of {args.size} vs {args.size} examples, alpha = {args.alpha} "
        f"(each view at {args.alpha / 3:.4f}), {args.permutations} permutations, through "
        f"{args.workdir}")
  print("| pairs | view | flagged | rate | 95% interval |\n|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['pairs']} | {row['view']} | {row['flagged']}/{row['repeats']} | "
          f"{row['rate']:.3f} | {row['ci95'][0]:.3f}-{row['ci95'][1]:.3f} |")


if __name__ == "__main__":
  cli.guarded(main)
