"""bfloat16 against float32 over training seeds, one experiment per paradigm.

  python -m benchmarks.precision_spread [--only digits_vae,mnist1d_gan] [--seeds 3]
                                        [--runs runs/precision] [--out benchmarks/results]
                                        [--steps N]

For each experiment, trains seeds 0..S-1 with `train.precision` float32 and again with
bfloat16 (the same command otherwise; `python -m train` in a fresh process, each in
RUNS/EXPERIMENT/PRECISION/seedN; a run whose `summary.json` exists is reused), then scores each:
- supervised (`mnist1d_cnn`): test accuracy of the final evaluation;
- reconstruction (`digits_vae`): the test negative ELBO, nats (lower is better);
- adversarial (`mnist1d_gan`) and diffusion (`mnist1d_ddpm`): the Frechet distance of the
  model's samples to the training split in the features of a reference classifier
  (`eval.generative`, one draw, sampling seed 0), the classifier being `mnist1d_cnn` seed 0,
  trained once in RUNS/reference_mnist1d_cnn. Generative runs train in bfloat16 and always
  evaluate and sample in float32.
The table gives each precision's per-seed values and mean ± sd, the gap of the means and the gap
in units of float32's seed standard deviation. `--steps` shortens every run (then the figures
are not the experiments' own). Writes OUT/precision_spread.json and .md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from train import cli, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# experiment -> (paradigm, metric name, lower is better)
EXPERIMENTS = {
    "mnist1d_cnn": ("supervised", "test accuracy", False),
    "digits_vae": ("reconstruction", "test -ELBO (nats)", True),
    "mnist1d_gan": ("adversarial", "Frechet distance", True),
    "mnist1d_ddpm": ("diffusion", "Frechet distance", True),
}
PRECISIONS = ("float32", "bfloat16")
REFERENCE = "mnist1d_cnn"


def train(experiment: str, workdir: str, seed: int, overrides: list[str], arg: str = "") -> None:
  """`python -m train --config experiments/EXPERIMENT.py[:ARG]` with `overrides`
  (`--config.FIELD=VALUE` items) in a fresh process, unless `workdir` already holds a finished
  run; a stopped one resumes."""
  if os.path.exists(os.path.join(workdir, files.SUMMARY)):
    return
  config = f"experiments/{experiment}.py" + (f":{arg}" if arg else "")
  cmd = [sys.executable, "-m", "train", "--config", config,
         f"--workdir={workdir}", f"--config.seed={seed}", *overrides]
  proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
  if proc.returncode:
    raise ChildProcessError(f"{' '.join(cmd[2:])} failed: {proc.stderr.strip()[-400:]}")


def final_eval(workdir: str) -> dict[str, Any]:
  """The final evaluation's metrics of a finished run (its summary.json)."""
  from experiments import compare

  return compare.load_run(workdir)["metrics"]


def score(experiment: str, workdir: str, reference: str) -> float:
  """The experiment's metric (module docstring) for one trained run."""
  paradigm = EXPERIMENTS[experiment][0]
  if paradigm == "supervised":
    return float(final_eval(workdir)["accuracy"])
  if paradigm == "reconstruction":
    return float(final_eval(workdir)["neg_elbo"])
  from eval import generative

  result = generative.report(workdir, reference=reference)
  return float(result["scores"]["model samples"]["frechet_distance"])


def mean_sd(values: list[float]) -> dict[str, Any]:
  """{"values", "mean", "sd"} of per-seed values (sd 0 for one value)."""
  return {"values": values, "mean": statistics.fmean(values),
          "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(values: dict[str, list[float]], lower_is_better: bool) -> dict[str, Any]:
  """Mean ± sd of each precision's per-seed values, the gap bfloat16 - float32, and that gap in
  units of float32's seed sd (inf when the sd is 0 and the means differ)."""
  out: dict[str, Any] = {"lower_is_better": lower_is_better}
  for p, v in values.items():
    out[p] = mean_sd(v)
  gap = out["bfloat16"]["mean"] - out["float32"]["mean"]
  sd = out["float32"]["sd"]
  out["gap"] = gap
  out["gap_in_sd"] = gap / sd if sd else (0.0 if gap == 0 else float("inf"))
  return out


def table(results: dict[str, dict[str, Any]]) -> str:
  lines = ["| experiment | paradigm | metric | float32, seeds | mean ± sd | bfloat16, seeds | "
           "mean ± sd | gap (bf16 - f32) | gap / f32 sd |", "|---" * 9 + "|"]
  for name, r in results.items():
    paradigm, metric, _ = EXPERIMENTS[name]
    cells = []
    for p in PRECISIONS:
      cells += [", ".join(f"{v:.4g}" for v in r[p]["values"]),
                f"{r[p]['mean']:.4g} ± {r[p]['sd']:.2g}"]
    lines.append(f"| {name} | {paradigm} | {metric} | {' | '.join(cells)} | "
                 f"{r['gap']:+.3g} | {r['gap_in_sd']:+.2f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--only", default=",".join(EXPERIMENTS))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=0)
  p.add_argument("--runs", default="runs/precision")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n]
  unknown = [n for n in names if n not in EXPERIMENTS]
  if unknown or not names:
    cli.fail(f"--only={args.only!r}; expected a comma-separated subset of "
             f"{','.join(EXPERIMENTS)}", 2)
  if args.seeds < 2:
    cli.fail(f"--seeds={args.seeds}; expected at least 2 (a spread needs two seeds)", 2)
  if args.steps < 0:
    cli.fail(f"--steps={args.steps}; expected 0 (the experiments' own) or a positive count", 2)
  runs = os.path.abspath(args.runs)
  reference = os.path.join(runs, f"reference_{REFERENCE}")
  if any(EXPERIMENTS[n][0] in ("adversarial", "diffusion") for n in names):
    train(REFERENCE, reference, 0, ["--config.train.precision=float32"])
  results = {}
  for name in names:
    values: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for precision in PRECISIONS:
      for seed in range(args.seeds):
        workdir = os.path.join(runs, name, precision, f"seed{seed}")
        train(name, workdir, seed, [f"--config.train.precision={precision}"] +
              ([f"--config.train.steps={args.steps}"] if args.steps else []))
        values[precision].append(score(name, workdir, reference))
        print(f"{name} {precision} seed {seed}: {values[precision][-1]:.4g}", file=sys.stderr,
              flush=True)
    results[name] = summarise(values, EXPERIMENTS[name][2])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "precision_spread.json"), "w") as f:
    json.dump({"seeds": args.seeds, "steps": args.steps, "results": results}, f, indent=1)
  text = table(results)
  with open(os.path.join(args.out, "precision_spread.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  cli.guarded(main)
