"""Uncertainty of classifiers: a single network, the same with temperature scaling, MC dropout
of it, and ensembles of the runs given, side by side, over seeds.

  python -m eval.uncertainty --workdir A --workdir B ... [--shifted mnist1d_drift]
  python -m eval.uncertainty --sweep DIR [--ensemble_size 5] [--passes 20] [--out DIR]

The scores are `eval/uncertainty_scores.py`'s; the runs and sets come from `eval/members.py`.

For each labelled set (the test split; a shifted source) each method's accuracy, NLL, Brier score
and ECE; for each out-of-distribution set (held-out classes, the shifted source, noise) against
the test split, ROC AUC and AUPR of each method's scores (max-probability, entropy, and for MC
dropout and the ensemble mutual information); a reliability diagram per labelled set (of the
first run and the first ensemble). Every number is a mean ± sd over trials:

- single: each run alone (one trial per run);
- temperature: each run's logits / T. On the test split T is cross-fitted (each half scaled by
  the T fitted on the other half); on every other set, by the T fitted on the whole test split,
  as a model calibrated before deployment would be (Ovadia et al. 2019);
- mc_dropout: for each run, the mean of `passes` passes with its dropout on (needs
  `model.dropout` > 0 and no BatchNorm; otherwise left out, with the reason in the report);
- ensemble: the mean of the probabilities of each group of `ensemble_size` consecutive runs
  (default: one ensemble of every run; two runs or more).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eval import calibration, members, report
from eval import uncertainty_scores as uncertainty
from eval.sample_quality import mean_and_sd
from train import files, remote_workdir, workdir_lock

METHODS = ("single", "temperature", "mc_dropout", "ensemble")
Trial = dict[str, tuple[np.ndarray, "np.ndarray | None"]]  # set -> (probs (N, C), members' or None)


def groups(n: int, ensemble_size: int) -> list[range]:
  """Consecutive groups of `ensemble_size` runs out of `n` (0: one group of all).

  Raises:
    ValueError: a size that does not divide `n`, or below 2.
  """
  size = ensemble_size or n
  if size < 2 or n % size:
    raise ValueError(f"--ensemble_size={ensemble_size} with {n} runs; expected 0 (one ensemble "
                     "of every run) or a size of at least 2 that divides the number of runs")
  return [range(i, i + size) for i in range(0, n, size)]


def _trials(runs, sets, passes: int, seed: int, ensemble_size: int
            ) -> tuple[dict[str, list[Trial]], dict[str, Any]]:
  """method -> its trials; and notes (temperatures, what was left out and why)."""
  notes: dict[str, Any] = {"members": [r.workdir for r in runs]}
  test = sets["test"]
  logits = [{name: run.predict(s.inputs) for name, s in sets.items()} for run in runs]
  probs = [{name: calibration.softmax(z) for name, z in per_run.items()} for per_run in logits]
  trials: dict[str, list[Trial]] = {m: [] for m in METHODS}
  notes["temperature"] = []
  for z in logits:
    t_all = calibration.fit_temperature(z["test"], test.labels)
    t_cross, halves = report.cross_fitted_temperature(z["test"], test.labels, seed)
    notes["temperature"].append({"whole_test_split": t_all, "cross_fitted_halves": halves})
    trials["temperature"].append(
        {name: (t_cross if name == "test" else calibration.softmax(v, t_all), None)
         for name, v in z.items()})
  trials["single"] = [{name: (p, None) for name, p in per_run.items()} for per_run in probs]
  try:
    members.check_mc_dropout(runs[0], passes)
    for run in runs:
      qs = {name: members.mc_dropout(run, s.inputs, passes, seed) for name, s in sets.items()}
      trials["mc_dropout"].append({name: (q.mean(0), q) for name, q in qs.items()})
    notes["mc_dropout_passes"] = passes
  except ValueError as e:
    notes["mc_dropout_left_out"], notes["mc_dropout_passes"] = str(e), 0
  if len(runs) >= 2:
    notes["ensembles"] = [[runs[i].workdir for i in g] for g in groups(len(runs), ensemble_size)]
    for g in groups(len(runs), ensemble_size):
      stacked = {name: np.stack([probs[i][name] for i in g]) for name in sets}
      trials["ensemble"].append({name: (q.mean(0), q) for name, q in stacked.items()})
  else:
    notes["ensemble_left_out"] = "one run given; an ensemble needs two or more"
  return {m: t for m, t in trials.items() if t}, notes


def _aggregate(values: list[dict[str, Any]]) -> dict[str, Any]:
  mean, sd = mean_and_sd(values)
  return {"mean": mean, "sd": sd, "trials": len(values)}


def compare(workdirs: list[str], shifted: str = "", passes: int = 20, seed: int = 0,
            num_bins: int = 15, noise: bool = True, ensemble_size: int = 0
            ) -> tuple[dict[str, Any], dict[str, Trial], dict[str, members.EvalSet]]:
  """(result, each method's first trial, the sets): the module docstring's tables."""
  runs = members.restore_all(workdirs)
  if ensemble_size and len(runs) >= 2:
    groups(len(runs), ensemble_size)  # a bad size fails before any prediction
  sets = members.evaluation_sets(runs[0], shifted, noise, seed)
  trials, notes = _trials(runs, sets, passes, seed, ensemble_size)
  result: dict[str, Any] = {**notes, "sets": {n: {"about": s.about, "examples": len(s.inputs),
                                                  "kind": s.kind} for n, s in sets.items()},
                            "predictive": {}, "ood": {}}
  for name, s in sets.items():
    if s.labels is not None and s.kind in ("in", "both"):
      result["predictive"][name] = {
          m: _aggregate([uncertainty.predictive(t[name][0], s.labels, num_bins) for t in ts])
          for m, ts in trials.items()}
    if s.kind in ("out", "both"):
      table = {}
      for m, ts in trials.items():
        per_trial = []
        for t in ts:
          s_in, s_out = uncertainty.ood_scores(*t["test"]), uncertainty.ood_scores(*t[name])
          per_trial.append({k: uncertainty.detection(s_in[k], s_out[k]) for k in s_out})
        table[m] = _aggregate(per_trial)
      result["ood"][name] = table
  return result, {m: ts[0] for m, ts in trials.items()}, sets


def _pm(cell: dict[str, Any], *keys: str, digits: int = 4) -> str:
  mean, sd = cell["mean"], cell["sd"]
  for k in keys:
    mean, sd = mean[k], sd[k]
  return f"{mean:.{digits}f} ± {sd:.{digits}f}" if cell["trials"] > 1 else f"{mean:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
  ensembles = result.get("ensembles", [])
  lines = [f"Runs: {len(result['members'])}; ensembles: {len(ensembles)} of "
           f"{len(ensembles[0]) if ensembles else 0}; MC dropout: "
           f"{result['mc_dropout_passes']} passes. Mean ± sd over trials (runs, or ensembles)."]
  for key in ("mc_dropout_left_out", "ensemble_left_out"):
    if key in result:
      lines.append(f"{key.replace('_', ' ')}: {result[key]}")
  for name, table in result["predictive"].items():
    about = result["sets"][name]["about"]
    lines += ["", f"**{name}** ({about}, {result['sets'][name]['examples']} examples)", "",
              "| method | trials | accuracy | NLL | Brier | ECE |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {c['trials']} | " + " | ".join(_pm(c, k) for k in
                                                         ("accuracy", "nll", "brier", "ece"))
              + " |" for m, c in table.items()]
  for name, table in result["ood"].items():
    about = result["sets"][name]["about"]
    first = next(iter(table.values()))["mean"]
    chance = next(iter(first.values()))["chance_aupr"]
    lines += ["", f"**out of distribution: {name}** ({about}) against the test split; ROC AUC, "
              f"AUPR (chance {chance:.3f})", "",
              "| method | score | ROC AUC | AUPR |", "|---|---|---|---|"]
    for m, c in table.items():
      for k in c["mean"]:
        lines.append(f"| {m} | {k} | {_pm(c, k, 'roc_auc', digits=3)} | "
                     f"{_pm(c, k, 'aupr', digits=3)} |")
  return "\n".join(lines)


def write(result: dict[str, Any], first: dict[str, Trial], sets: dict[str, members.EvalSet],
          out: str, num_bins: int = 15) -> dict[str, Any]:
  """report.json, report.md and a reliability diagram per labelled set (each method's first
  trial), to `out`."""
  os.makedirs(out, exist_ok=True)
  figs = {}
  for name in result["predictive"]:
    path = os.path.join(out, f"reliability_{name.replace(' ', '_')}.png")
    panels = {m: t[name][0] for m, t in first.items()}
    figs[name] = calibration.reliability_diagram(panels, sets[name].labels, path, num_bins,
                                                 title=f"{name}: {sets[name].about}")
  result = {**result, "figures": figs}
  files.write_report(out, result, markdown(result))
  return result


def main(argv: list[str]) -> None:
  """The command line: the module docstring's comparison of the runs given."""
  from absl import flags

  f = flags.FLAGS
  if bool(f.workdir) == bool(f.sweep):
    raise ValueError("give the runs as --workdir DIR (repeated) or as --sweep DIR, one of the two")
  if f.sweep and remote_workdir.is_remote(f.sweep):
    raise ValueError(f"--sweep={f.sweep}: a sweep folder in object storage is not supported; "
                     "give its runs as --workdir URL (repeated)")
  workdirs = list(f.workdir) if f.workdir else members.workdirs_in(f.sweep)
  with remote_workdir.local_workdirs(workdirs) as local:  # gs://: local copies, uploaded
    result, first, sets = compare(local, f.shifted, f.passes, f.seed,
                                  f.bins, f.noise, f.ensemble_size)
    named = dict(zip(local, workdirs))  # the report names a gs:// run by its URL
    result["members"] = [named.get(w, w) for w in result["members"]]
    if "ensembles" in result:
      result["ensembles"] = [[named.get(w, w) for w in g] for g in result["ensembles"]]
    out = f.out or os.path.join(local[0], "uncertainty")
    with workdir_lock.writing_into(local, out):
      result = write(result, first, sets, out, f.bins)
  print(markdown(result))
  print(f"\nwritten to {f.out or os.path.join(workdirs[0], 'uncertainty')}/report.json, "
        "report.md and reliability_*.png")


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  from absl import flags

  flags.DEFINE_multi_string("workdir", None, "A trained classifier; repeat for an ensemble (the "
                            "first is the single model and the one MC dropout samples).")
  flags.DEFINE_string("sweep", None, "A directory whose sub-directories are the runs (e.g. the "
                      "seeds of a sweep), instead of --workdir.")
  flags.DEFINE_string("shifted", "", "SOURCE or SOURCE:SPLIT of a shifted population, e.g. "
                      "mnist1d_drift (default: none).")
  flags.DEFINE_integer("ensemble_size", 0, "Split the runs into ensembles of this many "
                       "consecutive runs (a spread over ensembles); 0: one ensemble of all.",
                       lower_bound=0)
  flags.DEFINE_integer("passes", 20, "MC dropout's stochastic passes.", lower_bound=2)
  flags.DEFINE_integer("seed", 0, "Seed of the dropout masks, the noise set and the folds.")
  flags.DEFINE_integer("bins", 15, "Confidence bins of ECE and the diagrams.", lower_bound=2)
  flags.DEFINE_boolean("noise", True, "Score Gaussian noise as out of distribution.")
  flags.DEFINE_string("out", None, "Where the report goes (default FIRST_WORKDIR/uncertainty).")


if __name__ == "__main__":
  from train import cli

  define_flags()
  cli.run(main)
