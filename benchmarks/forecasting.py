"""Forecasting on four real series: an MLP, a GRU and a patch Transformer over seeds, beside
seasonal naive, ETS and ARIMA.

  python -m benchmarks.forecasting [--series sunspots,nile,co2,elnino] [--seeds 3]
                                   [--runs runs/forecasting] [--out benchmarks/results]

For each series and model, `python -m train --config experiments/series_MODEL.py:SERIES
--config.seed=S` in RUNS/SERIES/MODEL/seedS (a finished run is reused), then `eval.forecast`
over all of the series' runs: MASE and sMAPE per step ahead on the rolling-origin test part,
mean ± sd over seeds, and the three baselines fitted on the same training part. Writes
OUT/forecasting.md (a table per series and a line on which model leads each), forecasting.json,
and OUT/forecast_SERIES.png.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

from benchmarks.precision_spread import train
from train import cli

MODELS = ("mlp", "gru", "transformer")
SERIES = ("sunspots", "nile", "co2", "elnino")


def leaders(rows: dict[str, list[dict[str, list[float]]]]) -> dict[str, str]:
  """The model with the lowest mean MASE over 1..H (mean over its runs), among all rows and among
  the neural ones and the baselines apart."""
  mean = {name: float(np.mean([np.mean(r["mase"]) for r in runs])) for name, runs in rows.items()}
  neural = {k: v for k, v in mean.items() if "workdir" in rows[k][0]}
  stats = {k: v for k, v in mean.items() if k not in neural}
  return {"best": min(mean, key=mean.get), "best_neural": min(neural, key=neural.get),
          "best_baseline": min(stats, key=stats.get), "mase_mean": mean}


def main(argv: list[str] | None = None) -> None:
  from eval import forecast

  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--series", default=",".join(SERIES))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--runs", default="runs/forecasting")
  p.add_argument("--out", default="benchmarks/results")
  args = p.parse_args(argv)
  names = [s for s in args.series.split(",") if s]
  if not names or any(s not in SERIES for s in names):
    cli.fail(f"--series={args.series!r}; expected a comma-separated subset of "
             f"{','.join(SERIES)}", 2)
  if args.seeds < 1:
    cli.fail(f"--seeds={args.seeds}; expected at least 1", 2)
  os.makedirs(args.out, exist_ok=True)
  sections, saved = [], {}
  for which in names:
    workdirs = []
    for model in MODELS:
      for seed in range(args.seeds):
        workdir = os.path.abspath(os.path.join(args.runs, which, model, f"seed{seed}"))
        train(f"series_{model}", workdir, seed, [], arg=which)
        workdirs.append(workdir)
    out = os.path.join(os.path.abspath(args.runs), which)
    result, text = forecast.report(workdirs, out)
    shutil.copy(os.path.join(out, "forecast.png"), os.path.join(args.out,
                                                                f"forecast_{which}.png"))
    lead = leaders(result["rows"])
    s = result["series"]
    sections.append(
        f"### {which} (context {s['context']}, horizon {s['horizon']})\n\n{text}\n\n"
        f"Lowest mean MASE: {lead['best']}; among the neural models {lead['best_neural']}, among "
        f"the baselines {lead['best_baseline']}. Baselines fitted: "
        + ", ".join(f"{k} = {v['model']}" for k, v in result["baselines"].items()) + ".")
    saved[which] = {**result, "leaders": lead}
    print(sections[-1], file=sys.stderr, flush=True)
  with open(os.path.join(args.out, "forecasting.json"), "w") as f:
    json.dump(saved, f, indent=2, default=str)
  with open(os.path.join(args.out, "forecasting.md"), "w") as f:
    f.write("\n\n".join(sections) + "\n")
  print("\n\n".join(sections))


if __name__ == "__main__":
  cli.guarded(main)
