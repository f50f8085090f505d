"""What differs between two runs: config, data, code and environment, and their metrics.

  python -m experiments.compare runs/sweep/optim.learning_rate=0.001/seed_0 \
      runs/sweep/optim.learning_rate=0.01/seed_0

Reads each run directory's config.json, lineage.json (dataset fingerprint, code commit and dirty
flag, library versions, devices) and summary.json (the final evaluation; a run still training
shows its newest `eval` record of metrics.jsonl), and prints the fields that differ in Markdown;
`--json` prints the same as JSON. Identical sections say so.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import app, flags

from train import cli, files, metric_writer

_ABSENT = "(absent)"


def _read(path: str) -> Any:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
          if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def load_run(workdir: str) -> dict[str, Any]:
  """{"config", "lineage", "metrics", "steps", "finished"} of a run directory.

  Raises:
    ValueError: `workdir` is not a run directory (no config.json).
  """
  config = _read(os.path.join(workdir, files.CONFIG))
  if config is None:
    raise ValueError(f"{workdir}: not a run directory (no config.json); expected the --workdir "
                     "of a `python -m train` run")
  summary = _read(os.path.join(workdir, files.SUMMARY))
  metrics, steps = {}, None
  if summary is not None:
    metrics, steps = summary.get("final_eval", {}), summary.get("steps")
  else:
    evals = metric_writer.read_metrics(workdir, "eval")
    if evals:
      steps = evals[-1].pop("step")
      evals[-1].pop("split")
      metrics = evals[-1]
  return {"config": config, "lineage": _read(os.path.join(workdir, files.LINEAGE)) or {},
          "metrics": {k: v for k, v in metrics.items() if k != "count"}, "steps": steps,
          "finished": summary is not None,
          "wall_time_s": (summary or {}).get("wall_time_s")}


def compare(dir_a: str, dir_b: str) -> dict[str, Any]:
  """The differences between two runs: {"config", "data", "code", "environment": [(field, a,
  b)], "metrics": [(name, a, b)], "runs": (a, b)}."""
  from train.files import flatten

  a, b = load_run(dir_a), load_run(dir_b)
  la, lb = a["lineage"], b["lineage"]
  data_a = flatten(la.get("dataset", {}))
  data_b = flatten(lb.get("dataset", {}))
  code_a = {"code_version": la.get("code_version", _ABSENT), **flatten(la.get("code", {}),
                                                                         "code.")}
  code_b = {"code_version": lb.get("code_version", _ABSENT), **flatten(lb.get("code", {}),
                                                                         "code.")}
  env_keys = ("devices", "platform", "processes")
  env_a = {**{k: la.get(k, _ABSENT) for k in env_keys}, **flatten(la.get("libraries", {}),
                                                                   "libraries.")}
  env_b = {**{k: lb.get(k, _ABSENT) for k in env_keys}, **flatten(lb.get("libraries", {}),
                                                                   "libraries.")}
  names = sorted(set(a["metrics"]) | set(b["metrics"]))
  metrics = [(n, a["metrics"].get(n), b["metrics"].get(n)) for n in names]
  metrics += [("steps", a["steps"], b["steps"]), ("wall_time_s", a["wall_time_s"],
                                                   b["wall_time_s"])]
  return {"runs": (os.path.abspath(dir_a), os.path.abspath(dir_b)),
          "finished": (a["finished"], b["finished"]),
          "config": _diff(flatten(a["config"]), flatten(b["config"])),
          "data": _diff(data_a, data_b), "code": _diff(code_a, code_b),
          "environment": _diff(env_a, env_b), "metrics": metrics,
          "code_a": code_a["code_version"]}


def _cell(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.6g}" if math.isfinite(v) else str(v)
  return "–" if v is None else str(v)


def markdown(result: dict[str, Any]) -> str:
  run_a, run_b = result["runs"]
  fa, fb = ("" if f else " (not finished)" for f in result["finished"])
  lines = [f"A: {run_a}{fa}", f"B: {run_b}{fb}"]
  for section in ("config", "data", "code", "environment"):
    rows = result[section]
    same = f" ({result['code_a']})" if section == "code" else ""
    lines += ["", f"## {section}: {len(rows)} field(s) differ" if rows
              else f"## {section}: identical{same}"]
    if rows:
      lines += ["", "| field | A | B |", "|---|---|---|"]
      lines += [f"| {k} | {_cell(va)} | {_cell(vb)} |" for k, va, vb in rows]
  lines += ["", "## metrics (final evaluation)", "", "| metric | A | B | B - A |",
            "|---|---|---|---|"]
  for name, va, vb in result["metrics"]:
    delta = (_cell(vb - va) if isinstance(va, (int, float)) and isinstance(vb, (int, float))
             else "–")
    lines.append(f"| {name} | {_cell(va)} | {_cell(vb)} | {delta} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    raise app.UsageError(f"expected two run directories, DIR_A DIR_B; got {argv[1:]}")
  result = compare(argv[1], argv[2])
  print(json.dumps(result, indent=2, default=str) if flags.FLAGS.json else markdown(result))


if __name__ == "__main__":
  # defined only when run as a program, so modules import together
  flags.DEFINE_bool("json", False, "Print JSON instead of Markdown.")
  cli.run(main, positional=True)
