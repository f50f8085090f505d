"""Generative augmentation measured: a digits classifier trained on 10% of the training labels,
with and without class-conditional samples of a generator trained on the same 10%.

  python -m benchmarks.synthetic_augmentation [--seeds 3] [--labelled train[:10%]]
                                              [--runs runs/synthetic] [--out benchmarks/results]

The generators, trained once on the labelled subset only (the classifier's data, nothing more):
`digits_cgan` (hinge loss, spectral norm, projection discriminator) and `digits_ddpm_cfg`
(classifier-free guidance, sampled with DDIM-50 at guidance scale 2), each with
`--config.data.train_split=LABELLED`. The classifier, `experiments/digits_cnn.py` on LABELLED
(3,000 steps, batch 64), over seeds, in these conditions:
- no augmentation (`data.augment.crop_padding=0`);
- classical augmentation (the experiment's own pad-and-crop by 1 pixel);
- classical augmentation + half of every batch from each generator's pool of 200 samples per
  class (`data.synthetic.fraction=0.5`);
- samples only (`fraction=1`): the classification accuracy score of each generator (Ravuri &
  Vinyals 2019);
- all 1,437 training labels, classical augmentation: what more real labels would give.
Every condition is tested on the real test split (360 images). Writes
OUT/synthetic_augmentation.json and .md.
"""

from __future__ import annotations

import json
import os
import sys

from benchmarks.precision_spread import final_eval, mean_sd, train
from train import cli

GENERATORS = {"conditional GAN": "digits_cgan", "guided diffusion": "digits_ddpm_cfg"}
PER_CLASS = 200


def conditions(labelled: str, generators: dict[str, str]) -> dict[str, list[str]]:
  """{condition: overrides of digits_cnn}."""
  subset = [f"--config.data.train_split={labelled}"]
  out = {f"{labelled}, no augmentation": subset + ["--config.data.augment.crop_padding=0"],
         f"{labelled}, classical augmentation": subset}
  for name, workdir in generators.items():
    mix = [f"--config.data.synthetic.workdir={workdir}",
           f"--config.data.synthetic.per_class={PER_CLASS}"]
    out[f"{labelled}, classical + {name} samples (half of each batch)"] = (
        subset + mix + ["--config.data.synthetic.fraction=0.5"])
    out[f"{name} samples only (classification accuracy score)"] = (
        subset + mix + ["--config.data.synthetic.fraction=1.0"])
  out["all training labels, classical augmentation"] = []
  return out


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--labelled", default="train[:10%]")
  p.add_argument("--runs", default="runs/synthetic")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  if args.seeds < 1:
    cli.fail(f"--seeds={args.seeds}; expected at least 1", 2)
  runs = os.path.abspath(args.runs)
  generators = {}
  for name, experiment in GENERATORS.items():
    workdir = os.path.join(runs, "generators", experiment)
    train(experiment, workdir, 0, [f"--config.data.train_split={args.labelled}"])
    generators[name] = workdir
    print(f"generator {experiment} trained on {args.labelled}", file=sys.stderr, flush=True)
  results = {}
  for i, (condition, overrides) in enumerate(conditions(args.labelled, generators).items()):
    values = []
    for seed in range(args.seeds):
      workdir = os.path.join(runs, f"condition{i}", f"seed{seed}")
      train("digits_cnn", workdir, seed, overrides)
      values.append(float(final_eval(workdir)["accuracy"]))
    results[condition] = {"overrides": overrides, **mean_sd(values)}
    print(f"{condition}: {results[condition]['mean']:.4f}", file=sys.stderr, flush=True)
  lines = [f"| digits_cnn trained on | test accuracy, mean ± sd ({args.seeds} seeds) | "
           "per seed |", "|---|---|---|"]
  for condition, r in results.items():
    lines.append(f"| {condition} | {100 * r['mean']:.2f} ± {100 * r['sd']:.2f}% | "
                 + ", ".join(f"{100 * v:.1f}" for v in r["values"]) + " |")
  text = "\n".join(lines)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "synthetic_augmentation.json"), "w") as f:
    json.dump({"labelled": args.labelled, "per_class": PER_CLASS, "results": results}, f,
              indent=2)
  with open(os.path.join(args.out, "synthetic_augmentation.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  cli.guarded(main)
