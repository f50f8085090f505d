"""Grid search, random search, TPE and TPE with ASHA on the MNIST-1D CNN's architecture and
learning rate, at equal compute, over seeds.

  python -m benchmarks.search_methods [--seeds 3] [--steps 4000] [--runs runs/search_methods]
                                      [--out benchmarks/results]

The space: widths `model.features` in {(12,12,12), (25,25,25), (50,50,50)}, kernel sizes
`model.kernel_sizes` in {(3,3,3), (5,3,3)} and the learning rate. The grid takes the learning
rate in {1e-3, 3e-3, 1e-2, 3e-2}: 24 points. The others draw it from loguniform(1e-3, 3e-2) and
get the grid's compute: 24 trials each (random, TPE), or (TPE + ASHA, halving by 3 from the
first evaluation) trials until they have trained as many steps as the grid did. Every trial
trains `--steps` steps on `train[:3500]` and is evaluated every steps/8 on `train[3500:]` (the
validation split: the test split stays out of the search); search seed s sets both the sampler's
seed and the training seed. Each search is `python -m experiments.search` in
RUNS/METHOD/seedS (a finished one only rewrites its tables).

Reports per method the best validation accuracy (mean ± sd over seeds), the steps spent and the
trials, the best found within a third of the grid's steps, and for ASHA the steps it needed to
come within 0.5 points of the grid's best of the same seed. Writes OUT/search_methods.json, .md
and .png (best so far against steps spent, mean over seeds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from typing import Any

import numpy as np

from benchmarks.precision_spread import mean_sd
from experiments import search_results
from train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHITECTURE = "model.features=[(12,12,12),(25,25,25),(50,50,50)]; " \
               "model.kernel_sizes=[(3,3,3),(5,3,3)]"
GRID_RATES = "[1e-3,3e-3,1e-2,3e-2]"
GRID_POINTS = 3 * 2 * 4
METHODS = {  # name -> (sampler, pruner, learning-rate choice)
    "grid": ("grid", "none", GRID_RATES),
    "random": ("random", "none", "loguniform(1e-3,3e-2)"),
    "tpe": ("tpe", "none", "loguniform(1e-3,3e-2)"),
    "tpe + asha": ("tpe", "asha", "loguniform(1e-3,3e-2)"),
}
WITHIN = 0.005  # "within 0.5 points" of accuracy


def run_search(method: str, seed: int, steps: int, workdir: str) -> dict[str, Any]:
  """One search (a fresh process); its results.json."""
  sampler, pruner, rates = METHODS[method]
  cmd = [sys.executable, "-m", "experiments.search", "--config", "experiments/mnist1d_cnn.py",
         "--space", f"{ARCHITECTURE}; optim.learning_rate={rates}", "--sampler", sampler,
         "--pruner", pruner, "--seed", str(seed), "--workdir", workdir,
         "--trials", str(GRID_POINTS) if pruner == "none" else "1000000",
         "--max_steps", str(GRID_POINTS * steps), f"--config.seed={seed}",
         f"--config.train.steps={steps}", f"--config.train.eval_every={steps // 8}",
         f"--config.train.checkpoint_every={steps}", f"--config.train.log_every={steps}",
         "--config.data.train_split=train[:3500]", "--config.data.eval_split=train[3500:]"]
  proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
  if proc.returncode:
    raise ChildProcessError(f"{method} seed {seed} failed: {proc.stderr.strip()[-600:]}")
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def summarise(found: dict[str, list[dict[str, Any]]], steps: int) -> dict[str, Any]:
  """Per method: best accuracy, steps, trials, best within a third of the grid's steps; for
  ASHA, steps to come within WITHIN of the grid's best (per seed)."""
  grid_steps = GRID_POINTS * steps
  grid_best = [r["best"]["value"] for r in found["grid"]]
  out: dict[str, Any] = {}
  for method, runs in found.items():
    row = {"best": mean_sd([r["best"]["value"] for r in runs]),
           "steps": mean_sd([float(r["steps"]) for r in runs]),
           "trials": mean_sd([float(sum(r["counts"][k] for k in ("complete", "pruned", "fail")))
                            for r in runs]),
           "pruned": mean_sd([float(r["counts"]["pruned"]) for r in runs]),
           "best_at_third": mean_sd([search_results.best_value_at(r["history"], grid_steps / 3)
                                   for r in runs]),
           "steps_to_grid_best": [
               search_results.steps_to_reach(r["history"], g - WITHIN, maximize=True)
               for r, g in zip(runs, grid_best)]}
    out[method] = row
  return out


def markdown(summary: dict[str, Any], steps: int, seeds: int) -> str:
  grid_steps = GRID_POINTS * steps
  lines = [f"| method | best validation accuracy (mean ± sd, {seeds} seeds) | training steps "
           "spent | trials (pruned) | best within 1/3 of the grid's steps | steps to within 0.5 "
           "points of the grid's best, per seed |", "|---" * 6 + "|"]
  for method, r in summary.items():
    reach = ", ".join("never" if s is None else f"{s:,} ({s / grid_steps:.0%})"
                      for s in r["steps_to_grid_best"])
    lines.append(
        f"| {method} | {r['best']['mean'] * 100:.2f} ± {r['best']['sd'] * 100:.2f} | "
        f"{r['steps']['mean']:,.0f} | {r['trials']['mean']:.1f} ({r['pruned']['mean']:.1f}) | "
        f"{r['best_at_third']['mean'] * 100:.2f} ± {r['best_at_third']['sd'] * 100:.2f} | "
        f"{reach} |")
  return "\n".join(lines)


def plot(found: dict[str, list[dict[str, Any]]], steps: int, path: str) -> None:
  from train import figures

  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  grid = np.linspace(0, GRID_POINTS * steps, 200)
  for method, runs in found.items():
    curves = np.array([[search_results.best_value_at(r["history"], x) for x in grid]
                       for r in runs])
    with warnings.catch_warnings():  # nan before any search has finished a trial
      warnings.simplefilter("ignore", RuntimeWarning)
      ax.plot(grid, np.nanmean(curves, axis=0) * 100, label=method)
  ax.set_xlabel("training steps spent")
  ax.set_ylabel("best validation accuracy so far (%)")
  ax.set_title("mean over seeds", fontsize=9)
  ax.axvline(GRID_POINTS * steps / 3, color="0.7", ls=":", lw=1)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=4000)
  p.add_argument("--runs", default="runs/search_methods")
  p.add_argument("--out", default="benchmarks/results")
  p.add_argument("--only", default=",".join(METHODS))
  args = p.parse_args(argv)
  if args.seeds < 1:
    cli.fail(f"--seeds={args.seeds}; expected at least 1", 2)
  if args.steps < 8 or args.steps % 8:
    cli.fail(f"--steps={args.steps}; expected a positive multiple of 8 (eight evaluations)", 2)
  methods = [m for m in args.only.split(",") if m]
  if "grid" not in methods or any(m not in METHODS for m in methods):
    cli.fail(f"--only={args.only!r}; expected a comma-separated subset of {','.join(METHODS)} "
             "that holds grid (the reference)", 2)
  found: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
  for seed in range(args.seeds):
    for method in methods:
      workdir = os.path.abspath(os.path.join(args.runs, method.replace(" + ", "_"),
                                             f"seed{seed}"))
      found[method].append(run_search(method, seed, args.steps, workdir))
      print(f"{method} seed {seed}: best {found[method][-1]['best']['value']:.4f} in "
            f"{found[method][-1]['steps']:,} steps", file=sys.stderr, flush=True)
  summary = summarise(found, args.steps)
  text = markdown(summary, args.steps, args.seeds)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "search_methods.json"), "w") as f:
    json.dump({"steps": args.steps, "seeds": args.seeds, "summary": summary}, f, indent=2)
  with open(os.path.join(args.out, "search_methods.md"), "w") as f:
    f.write(text + "\n")
  plot(found, args.steps, os.path.join(args.out, "search_methods.png"))
  print(text)


if __name__ == "__main__":
  cli.guarded(main)
