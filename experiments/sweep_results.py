"""What a sweep's runs add up to: `aggregate` reads the runs' final evaluation (`summary.json`'s
`final_eval`) and gives, per point, the mean and standard deviation (n - 1 in the denominator)
over seeds of each metric; `write_tables` writes them as results.csv, results.md, results.json
and a plot of one metric against the first swept field.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from experiments.sweep_runs import Run, point_name
from train import figures, files

HIGHER_IS_BETTER = ("accuracy", "auc", "f1", "precision", "recall", "elbo_bound")


def aggregate(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """Per point, in planning order: {"point", "seeds", "finished", "diverged", "metrics": {name:
  {"mean", "std", "values"}}, "wall_time_s"} from the runs' summary.json files; runs not finished
  are left out of the statistics and counted in neither."""
  rows: dict[str, dict[str, Any]] = {}
  for run in runs:
    row = rows.setdefault(point_name(run.point), {
        "point": run.point, "seeds": [], "finished": 0, "diverged": 0, "values": {},
        "wall": []})
    if run.status == "diverged":
      row["diverged"] += 1
      continue
    path = os.path.join(run.workdir, files.SUMMARY)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      summary = json.load(f)
    row["seeds"].append(run.seed)
    row["finished"] += 1
    row["wall"].append(summary.get("wall_time_s", float("nan")))
    for name, value in summary["final_eval"].items():
      if name != "count":
        row["values"].setdefault(name, []).append(float(value))
  out = []
  for row in rows.values():
    metrics = {name: {"mean": float(np.mean(v)),
                      "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                      "values": v} for name, v in row.pop("values").items()}
    wall = row.pop("wall")
    out.append({**row, "metrics": metrics,
                "wall_time_s": float(np.mean(wall)) if wall else float("nan")})
  return out


def default_metric(rows: Sequence[dict[str, Any]]) -> str:
  names = [n for row in rows for n in row["metrics"]]
  for preferred in ("accuracy", "bits_per_token", "neg_elbo", "loss"):
    if preferred in names:
      return preferred
  return names[0] if names else "loss"


def mean_std(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 4) -> str:
  if not stat:
    return "–"
  if len(stat["values"]) == 1:
    return f"{stat['mean'] * scale:.{digits}f}"
  return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]], fields: Sequence[str],
             metrics: Sequence[str] | None = None) -> str:
  """A Markdown table: one row per point, its field values, each metric's mean ± std over the
  finished seeds, the seed count (and diverged runs) and the mean wall time of one run."""
  metrics = list(metrics or sorted({n for row in rows for n in row["metrics"]}))
  head = [*fields, *metrics, "seeds", "time per run"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in rows:
    seeds = str(row["finished"]) + (f" (+{row['diverged']} diverged)" if row["diverged"] else "")
    wall = f"{row['wall_time_s']:.1f} s" if math.isfinite(row["wall_time_s"]) else "–"
    cells = [str(row["point"][f]) for f in fields]
    cells += [mean_std(row["metrics"].get(m)) for m in metrics] + [seeds, wall]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def to_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
  metrics = sorted({n for row in rows for n in row["metrics"]})
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow([*fields, *[f"{m}_{s}" for m in metrics for s in ("mean", "std")],
                   "seeds_finished", "seeds_diverged", "wall_time_s"])
  for row in rows:
    stats = [row["metrics"].get(m, {}).get(s, "") for m in metrics for s in ("mean", "std")]
    writer.writerow([row["point"][f] for f in fields] + stats + [
        row["finished"], row["diverged"], row["wall_time_s"]])
  return buf.getvalue()


def best(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
  """The point with the best mean `metric` (largest for accuracy-like names, else smallest)."""
  scored = [r for r in rows if metric in r["metrics"]]
  if not scored:
    return None
  sign = -1.0 if any(h in metric for h in HIGHER_IS_BETTER) else 1.0
  return min(scored, key=lambda r: sign * r["metrics"][metric]["mean"])


def plot(rows: Sequence[dict[str, Any]], fields: Sequence[str], metric: str, path: str) -> None:
  """`metric` (mean ± std over seeds) against the first swept field, one line per combination of
  the others; a log x axis when the field's values are positive numbers spanning 10x or more."""
  plt = figures.pyplot()

  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  x_field, rest = (fields[0], fields[1:]) if fields else ("seeds", [])
  xs_all = [r["point"].get(x_field, "all") for r in rows]
  numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault(tuple(str(r["point"][f]) for f in rest), []).append(r)
  for key, group in groups.items():
    group = [r for r in group if metric in r["metrics"]]
    if not group:
      continue
    xs = [r["point"].get(x_field, "all") for r in group]
    pos = xs if numeric else [xs_all.index(x) for x in xs]
    order = np.argsort(pos)
    ax.errorbar(np.asarray(pos)[order],
                [group[i]["metrics"][metric]["mean"] for i in order],
                yerr=[group[i]["metrics"][metric]["std"] for i in order], marker="o", capsize=3,
                label=", ".join(f"{f}={v}" for f, v in zip(rest, key)) or None)
  if numeric and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
    ax.set_xscale("log")
  if not numeric:
    labels = list(dict.fromkeys(map(str, xs_all)))
    ax.set_xticks(range(len(labels)), labels, rotation=20)
  ax.set_xlabel(x_field)
  ax.set_ylabel(f"{metric} (mean ± sd over seeds)")
  if rest:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_tables(rows: Sequence[dict[str, Any]], fields: Sequence[str], out: str, metric: str,
                 extra: dict[str, Any] | None = None) -> str:
  """results.json, results.csv, results.md and results.png in `out`; returns the Markdown."""
  os.makedirs(out, exist_ok=True)
  text = markdown(rows, fields)
  top = best(rows, metric)
  if top is not None and fields:
    text += (f"\n\nBest {metric}: {mean_std(top['metrics'][metric])} at "
             + ", ".join(f"{k}={v}" for k, v in top["point"].items()))
  files.write_json_atomic(os.path.join(out, "results.json"),
                          {**(extra or {}), "metric": metric, "rows": rows})
  files.write_text_atomic(os.path.join(out, "results.csv"), to_csv(rows, fields))
  files.write_text_atomic(os.path.join(out, "results.md"), text + "\n")
  if any(metric in r["metrics"] for r in rows):
    plot(rows, fields, metric, os.path.join(out, "results.png"))
  return text
