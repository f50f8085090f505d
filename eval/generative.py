"""Sample quality of a trained generative run, beside real data and a Gaussian baseline
(the metrics are `eval/sample_quality.py`'s).

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
import numpy as np
from absl import flags

from data import transforms
from eval import frechet, restore
from eval.sample_quality import (
  gaussian_baseline,
  mean_and_sd,
  score,
)
from train import cli, figures, files, paradigms, remote_workdir, workdir_lock
from train import config as config_lib


@workdir_lock.writes_into_workdir("generative")
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
  field = "--reference" if reference else "generative.reference"
  # the run's Frechet evaluator draws the samples and holds the reference's training features
  frechet_eval = frechet.Frechet("generative", {"reference": reference or "", "samples": samples},
                                 run, field=field)
  ref, train_f, stats = frechet_eval.reference, frechet_eval.train_features, frechet_eval.stats
  raw_train = frechet_eval.raw_train
  x_test, _, _ = run.split(config.data.eval_split)
  raw_test = transforms.denormalize(x_test, stats)
  n, state = frechet_eval.n, run.state
  conditional = frechet_eval.num_classes > 0
  frechet_eval.compile(state)  # timings exclude compiling

  def one_seed(s: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    fake, labels = frechet_eval.samples(state, s)
    seconds = time.perf_counter() - t0
    held_out = raw_test
    if n != len(held_out):
      pick = np.random.default_rng((s, 1)).choice(len(held_out), size=n,
                                                   replace=n > len(held_out))
      held_out = held_out[pick]
    sets = {"held-out real data": held_out,
            "model samples": fake,
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
      "reference": {"workdir": ref.workdir, "model": ref.config.model.name,
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
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    result = report(workdir, FLAGS.reference, FLAGS.samples, FLAGS.out, FLAGS.seed,
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
