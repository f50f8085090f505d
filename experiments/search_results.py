"""What a search adds up to: every trial (finished, pruned, failed) as a row, the best point and
the command that reruns it, parameter importances, and one figure (optimisation history against
the training steps spent, each trial's evaluations, importances). Written to WORKDIR/results.*.
"""

from __future__ import annotations

import itertools
import math
import os
import shlex
from typing import Any, Sequence

import numpy as np

from experiments import search_space
from experiments.search_study import Search, finished, steps_spent
from experiments.sweep_runs import _format
from train import figures, files, remote_workdir


def state(trial) -> str:
  """A trial's state as the tables give it: Optuna's, or "preempted" for a trial stopped by a
  signal (Optuna records it as failed; it was queued to resume, not lost)."""
  return "preempted" if trial.user_attrs.get("preempted") else trial.state.name.lower()


def rows(search: Search, study) -> list[dict[str, Any]]:
  """One row per trial in trial order: number, state, point, value, steps trained, the trial
  whose workdir it used (`resumes`), the step it was pruned at, the error that failed it."""
  out = []
  for t in study.get_trials(deepcopy=False):
    out.append({
        "trial": t.number, "state": state(t),
        "point": search_space.decode(search.items, t.params), "value": t.value,
        "steps": int(t.user_attrs.get("steps", 0)),
        "resumes": t.user_attrs.get("resumes"), "retry_of": t.user_attrs.get("retry_of"),
        "workdir": t.user_attrs.get("workdir"), "error": t.user_attrs.get("error"),
        "intermediate": sorted((int(k), float(v)) for k, v in t.intermediate_values.items())})
  return out


def importances(study) -> dict[str, float]:
  """fANOVA importances of the parameters (Optuna's, seeded) over the completed trials; {} when
  fewer than two completed trials vary a parameter."""
  import optuna

  try:
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
  except (RuntimeError, ValueError):  # too few completed trials, or none that vary
    return {}
  return {k: float(v) for k, v in found.items()}


def _value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def markdown(search: Search, table: Sequence[dict[str, Any]]) -> str:
  """The trials, completed best first, then pruned (latest evaluation best first), then the
  rest; a column per config field of the space."""
  fields = list(dict.fromkeys(k for r in table for k in r["point"]))
  sign = -1.0 if search.direction == "maximize" else 1.0

  def key(r):
    rank = {"complete": 0, "pruned": 1}.get(r["state"], 2)
    last = r["value"] if r["value"] is not None else (
        r["intermediate"][-1][1] if r["intermediate"] else math.inf * -sign)
    return rank, sign * last

  head = ["trial", "state", *fields, search.metric, "steps"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in sorted(table, key=key):
    value = (_value(r["value"]) if r["value"] is not None else
             f"({_value(r['intermediate'][-1][1])} at {r['intermediate'][-1][0]})"
             if r["intermediate"] else "–")
    state = r["state"] + (f", resumes {r['resumes']}" if r["resumes"] not in (None, r["trial"])
                          else "")
    lines.append("| " + " | ".join([str(r["trial"]), state,
                                    *[_value(r["point"].get(f, "–")) for f in fields],
                                    value, str(r["steps"])]) + " |")
  return "\n".join(lines)


def best(search: Search, table: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
  done = [r for r in table if r["state"] == "complete" and r["value"] is not None]
  if not done:
    return None
  sign = -1.0 if search.direction == "maximize" else 1.0
  return min(done, key=lambda r: sign * r["value"])


def rerun_command(search: Search, point: dict[str, Any]) -> str:
  """`python -m train` with the search's own `--config` overrides and the point's fields (values
  as Python literals)."""
  fixed = {k: v for k, v in search.overrides.items() if k not in point}
  items = " ".join([f"--config.{k}={_shell(v)}" for k, v in fixed.items()] +
                   [f"--config.{k}={_shell(v)}" for k, v in point.items()])
  return f"python -m train --config {search.config_arg} --workdir runs/best {items}"


def _shell(value: Any) -> str:
  return shlex.quote(value if isinstance(value, str) else repr(value))


ENDED = ("complete", "pruned", "fail")


def _spent(table: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
  """(row, training steps spent up to and with it) of every ended trial, in trial order."""
  ended = [r for r in table if r["state"] in ENDED]
  return list(zip(ended, itertools.accumulate(r["steps"] for r in ended)))


def history(search: Search, table: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
  """(training steps spent so far, best value so far) after each finished trial, in trial
  order: the curve searches are compared by at equal compute."""
  sign = -1.0 if search.direction == "maximize" else 1.0
  best_so_far, out = math.inf, []
  for r, spent in _spent(table):
    if r["state"] == "complete" and r["value"] is not None:
      best_so_far = min(best_so_far, sign * r["value"])
    out.append((spent, sign * best_so_far if math.isfinite(best_so_far) else float("nan")))
  return out


def plot(search: Search, table: Sequence[dict[str, Any]], weights: dict[str, float],
         path: str) -> None:
  plt = figures.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  curve = history(search, table)
  if curve:
    axes[0].step([c[0] for c in curve], [c[1] for c in curve], where="post", label="best so far")
  for r, spent in _spent(table):
    if r["state"] == "complete" and r["value"] is not None:
      axes[0].plot(spent, r["value"], "o", ms=3, color="C1")
  axes[0].set_xlabel("training steps spent")
  axes[0].set_ylabel(search.metric)
  axes[0].set_title("optimisation history")
  for r in table:
    if r["intermediate"]:
      xs, ys = zip(*r["intermediate"])
      pruned = r["state"] == "pruned"
      axes[1].plot(xs, ys, "-" if not pruned else ":", lw=1, alpha=0.8,
                   color="0.6" if pruned else None)
  axes[1].set_xlabel("step")
  axes[1].set_ylabel(f"{search.metric} ({search.config.data.eval_split})")
  axes[1].set_title("evaluations per trial (dotted: pruned)")
  if weights:
    names = list(weights)[::-1]
    axes[2].barh(range(len(names)), [weights[n] for n in names])
    axes[2].set_yticks(range(len(names)), names, fontsize=7)
  axes[2].set_title("parameter importance (fANOVA)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(search: Search, study) -> str:
  """results.json, results.csv, results.md and results.png in the search's workdir; returns the
  Markdown."""
  table = rows(search, study)
  done = finished(study)
  weights = importances(study)
  top = best(search, table)
  counts = {s: sum(r["state"] == s for r in table) for s in
            ("complete", "pruned", "fail", "preempted", "running", "waiting")}
  text = markdown(search, table)
  text += (f"\n\n{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} "
           f"failed, {counts['preempted']} preempted and resumed; {steps_spent(done)} training "
           "steps in all "
           f"({search.sampler} sampler, {search.pruner} pruner).")
  if top is not None:
    text += (f"\n\nBest {search.metric}: {top['value']:.4g}, trial {top['trial']}: "
             + ", ".join(f"{k}={_value(v)}" for k, v in top["point"].items())
             + f"\n\n    {rerun_command(search, top['point'])}")
  if weights:
    text += "\n\nImportance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
  files.write_json_atomic(os.path.join(search.workdir, "results.json"), {
      "settings": search.settings(), "direction": search.direction, "counts": counts,
      "steps": steps_spent(done), "best": top, "importances": weights,
      "history": history(search, table), "trials": table})
  header = ["trial", "state", "value", "steps", "resumes", "point"]
  csv = [",".join(header)] + [",".join([str(r["trial"]), r["state"], _value(r["value"]),
                                        str(r["steps"]), str(r["resumes"]),
                                        '"' + ";".join(f"{k}={_format(v)}" for k, v in
                                                       r["point"].items()) + '"'])
                              for r in table]
  files.write_text_atomic(os.path.join(search.workdir, "results.csv"), "\n".join(csv) + "\n")
  files.write_text_atomic(os.path.join(search.workdir, "results.md"), text + "\n")
  if table:
    plot(search, table, weights, os.path.join(search.workdir, "results.png"))
  if search.url:  # a search in object storage: its tables go up beside its trials
    remote_workdir.send_files(search.workdir, search.url, [
        f"results.{ext}" for ext in ("json", "csv", "md", "png")])
  return text


def best_value_at(curve: Sequence[tuple[int, float]], steps: int) -> float:
  """The best value found within `steps` training steps of a history (nan before the first)."""
  inside = [v for s, v in curve if s <= steps]
  return inside[-1] if inside else float("nan")


def steps_to_reach(curve: Sequence[tuple[int, float]], target: float, maximize: bool) -> int | None:
  """The training steps a history spent before its best reached `target`; None if never."""
  for s, v in curve:
    if not np.isnan(v) and (v >= target if maximize else v <= target):
      return s
  return None
