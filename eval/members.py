"""The inputs of `eval.uncertainty`: trained classifiers as ensemble members, MC-dropout passes of
one of them, and the sets they are scored on.

    runs = members.restore_all(["runs/seed0", "runs/seed1"])      # or members.workdirs_in(DIR)
    sets = members.evaluation_sets(runs[0], shifted="mnist1d_drift")
    p = members.probabilities(runs, sets["test"].inputs)          # (M, N, C)
    q = members.mc_dropout(runs[0], sets["test"].inputs, passes=20)  # (T, N, C)

Every set is in the units the models see (the first run's normalisation statistics, from its
training split), so a shifted source is normalised as the model would normalise it in service.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections as mlc
import numpy as np

from data import sources, transforms
from eval import calibration, restore
from train import files as files_lib


@dataclasses.dataclass
class EvalSet:
  """Inputs (N, ...) as the models see them, labels (N,) (None for noise) and what the set is:
  `kind` "in" (in distribution) or "out" (scored for out-of-distribution detection)."""

  inputs: np.ndarray
  labels: np.ndarray | None
  kind: str
  about: str


def workdirs_in(path: str) -> list[str]:
  """The trained runs under `path` (a sweep directory, at any depth: `experiments.sweep` puts
  them in POINT/seed_S): directories holding a config.json, sorted by path.

  Raises:
    ValueError: `path` is not a directory or holds no run.
  """
  if not os.path.isdir(path):
    raise ValueError(f"--sweep={path} is not a directory")
  found = []
  for d, subdirs, files in os.walk(path):
    if files_lib.CONFIG in files and d != path:
      found.append(d)
      subdirs.clear()  # a run's own sub-directories hold no other run
    subdirs.sort()
  if not found:
    raise ValueError(f"--sweep={path} holds no trained run (no sub-directory with config.json)")
  return sorted(found)


def _signature(run: restore.Restored) -> tuple[Any, ...]:
  d = run.config.data
  return (d.source, mlc.ConfigDict(d.builder_config).to_json(), tuple(d.keep_classes),
          int(getattr(run.model, "num_classes", 0) or 0))


def restore_all(workdirs: list[str]) -> list[restore.Restored]:
  """Each workdir restored as a supervised classifier; all must share the source, its builder
  arguments, `data.keep_classes` and the number of classes.

  Raises:
    ValueError: no workdir, a run that is not a classifier, or runs that disagree.
  """
  if not workdirs:
    raise ValueError("no run given; expected --workdir DIR (repeated) or --sweep DIR")
  runs = []
  for w in workdirs:
    run = restore.restore(w, paradigm="supervised")
    if run.config.supervised.loss != "cross_entropy":
      raise ValueError(f"--workdir={w} has supervised.loss={run.config.supervised.loss!r}; "
                       "expected 'cross_entropy' (a classifier)")
    if runs and _signature(run) != _signature(runs[0]):
      raise ValueError(f"--workdir={w} was trained on {_signature(run)[0]!r} with keep_classes="
                       f"{_signature(run)[2]} and {_signature(run)[3]} classes; "
                       f"{runs[0].workdir} on {_signature(runs[0])[0]!r} with "
                       f"{_signature(runs[0])[2]} and {_signature(runs[0])[3]}: members must "
                       "share the data and the classes")
    runs.append(run)
  return runs


def probabilities(runs: list[restore.Restored], inputs: np.ndarray) -> np.ndarray:
  """softmax of each run's logits: (M, N, C) float64."""
  return np.stack([calibration.softmax(run.predict(inputs)) for run in runs])


def check_mc_dropout(run: restore.Restored, passes: int) -> None:
  """Raises ValueError unless `run` can be sampled by MC dropout with `passes` passes: its model
  has dropout and keeps no batch statistics (BatchNorm in training mode would normalise with
  the batch's statistics, not dropout alone)."""
  rate = float(getattr(run.model, "dropout", 0.0) or 0.0)
  if rate <= 0:
    raise ValueError(f"MC dropout needs a model trained with dropout; --workdir={run.workdir} "
                     f"has model.dropout={rate} (train with --config.model.dropout=0.1, say)")
  if run.state.model_state:
    raise ValueError(f"MC dropout of --workdir={run.workdir}: its model keeps "
                     f"{sorted(run.state.model_state)} (BatchNorm), which training mode would "
                     "recompute from each batch; expected a model without them")
  if passes < 2:
    raise ValueError(f"--passes={passes}; expected at least 2 stochastic passes")


def mc_dropout(run: restore.Restored, inputs: np.ndarray, passes: int, seed: int = 0,
               batch_size: int | None = None) -> np.ndarray:
  """`passes` stochastic forward passes of one run with its dropout on (Gal & Ghahramani 2016):
  (T, N, C) float64 probabilities; pass t uses dropout key fold_in(key(seed), t).

  Raises:
    ValueError: `check_mc_dropout`'s.
  """
  check_mc_dropout(run, passes)
  model, params = run.model, run.state.params

  @jax.jit
  def logits(x, key):
    return model.apply({"params": params}, x, train=True, rngs={"dropout": key})

  chunk = batch_size or int(run.config.data.eval_batch_size)
  out = []
  for t in range(passes):
    key = jax.random.fold_in(jax.random.key(seed), t)
    z = np.concatenate([np.asarray(logits(inputs[i:i + chunk], jax.random.fold_in(key, i)))
                        for i in range(0, len(inputs), chunk)])
    out.append(calibration.softmax(z))
  return np.stack(out)


def _other_source(config: mlc.ConfigDict, source: str) -> mlc.ConfigDict:
  d = config.data.copy_and_resolve_references()
  with d.unlocked():
    d.source = source
    if source != config.data.source:
      d.builder_config = mlc.ConfigDict()
  return d


def evaluation_sets(run: restore.Restored, shifted: str = "", noise: bool = True,
                    seed: int = 0) -> dict[str, EvalSet]:
  """The sets of the report, in the model's input units:
  - `test`: the run's evaluation split (its `data.keep_classes`), in distribution;
  - `held-out classes`: the same split's examples of the classes the run never saw, when it was
    trained with `data.keep_classes` (out of distribution);
  - `shifted`: `shifted` = SOURCE or SOURCE:SPLIT (default split: the run's evaluation split),
    its raw inputs normalised with the run's statistics; labelled, and scored both ways;
  - `noise`: Gaussian noise with the test inputs' per-feature mean and standard deviation, as
    many examples as the test split (out of distribution).

  Raises:
    ValueError: a shifted source whose examples have another shape.
  """
  config = run.config
  split = config.data.eval_split
  x, y, stats = run.split(split)
  sets = {"test": EvalSet(x, y, "in", f"{config.data.source}:{split}")}
  keep = tuple(config.data.keep_classes)
  if keep:
    classes = int(run.model.num_classes)
    held = tuple(c for c in range(classes) if c not in keep)
    if held:
      hx, hy, _ = run.split(split, keep_classes=held)
      sets["held-out classes"] = EvalSet(hx, hy, "out",
                                         f"{config.data.source}:{split}, classes {held}")
  if shifted:
    source, _, shifted_split = shifted.partition(":")
    raw = sources.load_split(_other_source(config, source), shifted_split or split)
    rows = np.isin(raw.labels, keep) if keep else np.ones(len(raw.labels), bool)
    sx = transforms.normalize(raw.inputs[rows], stats)
    if sx.shape[1:] != x.shape[1:]:
      raise ValueError(f"--shifted={shifted} has examples of shape {sx.shape[1:]}; the run's "
                       f"are {x.shape[1:]}")
    sets["shifted"] = EvalSet(sx, raw.labels[rows].astype(np.int64), "both",
                              f"{source}:{shifted_split or split}")
  if noise:
    rng = np.random.default_rng(seed)
    mean, std = x.mean(0), x.std(0)
    sets["noise"] = EvalSet((mean + std * rng.standard_normal(x.shape)).astype(np.float32), None,
                            "out", "Gaussian noise with the test inputs' per-feature mean and sd")
  return sets
