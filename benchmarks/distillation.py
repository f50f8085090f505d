"""Distillation on MNIST-1D: a small student taught by one network or by an ensemble, against
the same student trained on labels alone, over seeds.

  python -m benchmarks.distillation [--teacher mnist1d_cnn] [--members 5] [--student mnist1d_mlp]
                                    [--seeds 3] [--temperature 1] [--label_weight 0]
                                    [--set FIELD=VALUE ...] [--runs runs/distill]
                                    [--out benchmarks/results]

Trains (in fresh `python -m train` processes; a run whose summary.json exists is reused):
teacher seeds 0..K-1 (`--teacher`'s experiment); then for each student seed s: the student on
labels alone, the student distilled from teacher 0, and the student distilled from all K
teachers averaged in probability (`distill.teachers`, `distill.temperature`,
`distill.label_weight`; the student's experiment otherwise unchanged, except for `--set`
FIELD=VALUE items applied to every student run alike, e.g. augmentation and a longer schedule
for patient, function-matching teaching). Every run is then
compressed by `eval.compress` (int8 weights, exported with `jax.export`), which gives its
parameter bytes, batch-1 latency of the exported function and test accuracy, float32 and int8.
Writes OUT/distillation.json and .md: per model, mean ± sd over its runs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any

from benchmarks.precision_spread import final_eval, train
from train import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(workdir: str) -> dict[str, float]:
  """Parameters, batch-1 latency and test accuracy (float32 and int8 weights) of one run."""
  from eval import compress

  result = compress.evaluate(workdir, out=os.path.join(workdir, "compressed"))
  f32, int8 = result["variants"]["float32"], result["variants"]["int8 weights"]
  return {"parameters": f32["parameter_bytes"] // 4, "latency_ms": f32["latency_ms_p50"],
          "accuracy": f32["accuracy"], "int8_accuracy": int8["accuracy"],
          "int8_latency_ms": int8["latency_ms_p50"], "bytes": f32["parameter_bytes"],
          "int8_bytes": int8["parameter_bytes"],
          "final_eval_accuracy": float(final_eval(workdir)["accuracy"])}


def _ensemble_accuracy(workdirs: list[str]) -> float:
  import numpy as np

  from eval import members

  runs = members.restore_all(workdirs)
  x, labels, _ = runs[0].split(runs[0].config.data.eval_split)
  return float(np.mean(members.probabilities(runs, x).mean(0).argmax(-1) == labels))


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
  out: dict[str, Any] = {"runs": len(rows)}
  for key in rows[0]:
    values = [r[key] for r in rows]
    out[key] = {"mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
  return out


def table(results: dict[str, dict[str, Any]]) -> str:
  def pm(cell, scale=1.0, digits=4):
    return (f"{cell['mean'] * scale:.{digits}f} ± {cell['sd'] * scale:.{digits}f}"
            if len(cell["values"]) > 1 else f"{cell['mean'] * scale:.{digits}f}")

  lines = ["| model | runs | parameters | float32: bytes, batch-1 latency (ms), test accuracy "
           "| int8 weights: bytes, batch-1 latency (ms), test accuracy |", "|---|---|---|---|---|"]
  for name, r in results.items():
    lines.append(f"| {name} | {r['runs']} | {r['parameters']['mean']:,.0f} | "
                 f"{r['bytes']['mean']:,.0f}, {pm(r['latency_ms'], digits=3)}, "
                 f"{pm(r['accuracy'])} | {r['int8_bytes']['mean']:,.0f}, "
                 f"{pm(r['int8_latency_ms'], digits=3)}, {pm(r['int8_accuracy'])} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--teacher", default="mnist1d_cnn")
  p.add_argument("--members", type=int, default=5)
  p.add_argument("--student", default="mnist1d_mlp")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--label_weight", type=float, default=0.0)
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="a config field of every student run (repeatable)")
  p.add_argument("--runs", default="runs/distill")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  for name in (args.teacher, args.student):
    if not os.path.exists(os.path.join(ROOT, "experiments", f"{name}.py")):
      cli.fail(f"experiment {name!r} has no file experiments/{name}.py", 2)
  if args.members < 2:
    cli.fail(f"--members={args.members}; expected at least 2 (the ensemble teacher)", 2)
  if args.seeds < 2:
    cli.fail(f"--seeds={args.seeds}; expected at least 2 (a spread needs two seeds)", 2)
  bad = [item for item in args.set if "=" not in item]
  if bad:
    cli.fail(f"--set {bad[0]!r}; expected FIELD=VALUE, e.g. --set supervised.mixup=1.0", 2)
  runs = os.path.abspath(args.runs)
  teachers = [os.path.join(runs, "teacher", f"seed{k}") for k in range(args.members)]
  for k, workdir in enumerate(teachers):
    train(args.teacher, workdir, k, [])
  common = [f"--config.{item}" for item in args.set]
  soft = [f"--config.distill.temperature={args.temperature}",
          f"--config.distill.label_weight={args.label_weight}"]
  students = {
      "student alone": [],
      "distilled from 1 teacher": [f"--config.distill.teachers=({teachers[0]!r},)", *soft],
      f"distilled from {args.members} teachers":
          [f"--config.distill.teachers={tuple(teachers)!r}", *soft]}
  results: dict[str, Any] = {
      f"teacher ({args.teacher})": summarise([measure(teachers[0])]),
      f"each of the {args.members} teachers": summarise([measure(w) for w in teachers])}
  ensemble_accuracy = _ensemble_accuracy(teachers)
  for name, extra in students.items():
    rows = []
    for seed in range(args.seeds):
      slug = name.split()[0] + ("_" + name.split()[2] if "from" in name else "")
      workdir = os.path.join(runs, slug, f"seed{seed}")
      train(args.student, workdir, seed, [*common, *extra])
      rows.append(measure(workdir))
      print(f"{name} seed {seed}: accuracy {rows[-1]['accuracy']:.4f}", file=sys.stderr,
            flush=True)
    results[f"{name} ({args.student})"] = summarise(rows)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "distillation.json"), "w") as f:
    json.dump({"args": vars(args), "ensemble_teacher_accuracy": ensemble_accuracy,
               "results": results}, f, indent=1)
  text = (table(results) + f"\n\nThe {args.members}-teacher ensemble (mean of the members' "
          f"probabilities): test accuracy {ensemble_accuracy:.4f}.")
  with open(os.path.join(args.out, "distillation.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  cli.guarded(main)
