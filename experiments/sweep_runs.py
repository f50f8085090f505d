"""Sweeps and multi-seed runs of one experiment, each run in its own workdir.

A sweep spec names config fields and their values, `;`-separated:

  optim.learning_rate=[1e-3,3e-3];model.features=[(25,25,25),(50,50,50)];optim.name=[adam,sgd]

Lists are Python literals (a bare word is a string). With random sampling, a field may instead
take `uniform(a,b)`, `loguniform(a,b)` or `randint(a,b)` (both ends included); continuous draws
are rounded to 4 significant digits so a point's directory name is its exact value. Each point
runs once per seed, seeds `config.seed + 0 .. seeds - 1`, in `WORKDIR/<point>/seed_<s>`, through
`train.loop.train_and_evaluate` in this process: a run whose `summary.json` exists is skipped, a
run with checkpoints resumes from them (so a killed sweep, restarted with the same command, runs
only what is missing), and a run whose loss became non-finite is recorded as diverged
(`failed.json`) and not retried, since the same config and seed diverge again. Every point's
config is built and validated before the first run starts.

What the runs add up to (means over seeds, tables, a plot) is `experiments.sweep_results`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import itertools
import math
import os
import re
from typing import Any, Sequence

import ml_collections as mlc
import numpy as np

from train import config as config_lib
from train import files, loop, resumable
from train.errors import ConfigError, FlagError

DISTRIBUTIONS = ("uniform", "loguniform", "randint")
# metrics where larger is better; for every other one, smaller is


@dataclasses.dataclass(frozen=True)
class Axis:
  """One swept field: a list of `values`, or a `distribution` (name, low, high) to draw from."""
  field: str
  values: tuple[Any, ...] = ()
  distribution: tuple[str, float, float] | None = None


@dataclasses.dataclass
class Run:
  """One (point, seed): its field values, seed, workdir and fully resolved config."""
  point: dict[str, Any]
  seed: int
  workdir: str
  config: mlc.ConfigDict

  @property
  def status(self) -> str:
    """"done", "diverged", "partial" (has checkpoints to resume from) or "new"."""
    if os.path.exists(os.path.join(self.workdir, files.SUMMARY)):
      return "done"
    if os.path.exists(os.path.join(self.workdir, "failed.json")):
      return "diverged"
    ckpt = os.path.join(self.workdir, files.CHECKPOINTS)
    return "partial" if os.path.isdir(ckpt) and os.listdir(ckpt) else "new"


def _split_top(text: str, sep: str) -> list[str]:
  """`text` split at `sep` outside brackets, parentheses and quotes."""
  parts, depth, quote, current = [], 0, "", []
  for ch in text:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append("".join(current))
      current = []
      continue
    current.append(ch)
  parts.append("".join(current))
  return parts


def _literal(text: str) -> Any:
  text = text.strip()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if re.fullmatch(r"[A-Za-z_][\w.\-]*", text):
      return text  # a bare word: a string
    raise ConfigError(f"--sweep: cannot read the value {text!r}; expected a Python literal "
                      "(1e-3, 64, (32, 32), 'adam') or a bare word") from None


def parse_list(text: str, where: str) -> tuple[Any, ...]:
  """`[V1,V2,...]` -> the values (Python literals or bare words). ConfigError, starting with
  `where` (the flag and field), for an empty list or a repeated value."""
  inner = text.strip()[1:-1].strip()
  values = tuple(_literal(v) for v in _split_top(inner, ",")) if inner else ()
  if not values:
    raise ConfigError(f"{where}={text} is an empty list; expected at least one value")
  if len(set(map(repr, values))) != len(values):
    raise ConfigError(f"{where}={text} repeats a value")
  return values


def parse_range(text: str, kinds: Sequence[str], where: str,
                integer: Sequence[str] = ()) -> tuple[str, float, float]:
  """`KIND(low,high)` with KIND in `kinds` -> (kind, low, high). ConfigError, starting with
  `where`, unless both are numbers with low < high, 0 < low for a `log...` kind, and integers
  for a kind in `integer`."""
  text = text.strip()
  match = re.fullmatch(r"(\w+)\((.*)\)", text)
  if not match or match.group(1) not in kinds:
    raise ConfigError(f"{where}={text}; expected a list [V1,V2,...] or one of "
                      f"{[k + '(low,high)' for k in kinds]}")
  kind = match.group(1)
  bounds = [_literal(v) for v in _split_top(match.group(2), ",")]
  if len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                 for b in bounds) or not bounds[0] < bounds[1]:
    raise ConfigError(f"{where}={text}; expected {kind}(low,high) with numbers low < high")
  if kind.startswith("log") and bounds[0] <= 0:
    raise ConfigError(f"{where}={text}; {kind} needs 0 < low")
  if kind in integer and not all(isinstance(b, int) for b in bounds):
    raise ConfigError(f"{where}={text}; {kind} needs integer bounds")
  return kind, bounds[0], bounds[1]


def parse_spec(spec: str) -> list[Axis]:
  """The axes of a sweep spec (module docstring). Raises ConfigError on a malformed item, an empty
  list, a repeated field or a distribution with bad bounds; fields are checked by `plan`."""
  axes: list[Axis] = []
  for item in _split_top(spec, ";"):
    item = item.strip()
    if not item:
      continue
    field, sep, rhs = item.partition("=")
    field, rhs = field.strip(), rhs.strip()
    if not sep or not field:
      raise ConfigError(f"--sweep item {item!r}: expected FIELD=[V1,V2,...], e.g. "
                        "optim.learning_rate=[1e-3,3e-3]")
    if any(a.field == field for a in axes):
      raise ConfigError(f"--sweep: field {field!r} appears twice")
    if rhs.startswith("[") and rhs.endswith("]"):
      axes.append(Axis(field, values=parse_list(rhs, f"--sweep: {field}")))
    else:
      kind, low, high = parse_range(rhs, DISTRIBUTIONS, f"--sweep: {field}",
                                    integer=("randint",))
      axes.append(Axis(field, distribution=(kind, low, high)))
  return axes


def points(axes: Sequence[Axis], samples: int = 0, seed: int = 0) -> list[dict[str, Any]]:
  """The points to run: the full grid of `axes` (samples=0), or `samples` points drawn at random
  (lists uniformly; without repeats when every axis is a list)."""
  if samples <= 0:
    ranged = [a.field for a in axes if a.distribution]
    if ranged:
      raise ConfigError(f"--sweep: {ranged} take a range, which needs random sampling "
                        "(--samples N); a grid needs lists")
    return [dict(zip([a.field for a in axes], combo))
            for combo in itertools.product(*[a.values for a in axes])]
  rng = np.random.default_rng(seed)
  if not any(a.distribution for a in axes):
    grid = points(axes)
    if samples > len(grid):
      raise ConfigError(f"--samples {samples}: the lists give only {len(grid)} distinct points")
    return [grid[i] for i in sorted(rng.permutation(len(grid))[:samples])]
  out = []
  for _ in range(samples):
    point = {}
    for a in axes:
      if a.distribution:
        kind, low, high = a.distribution
        if kind == "randint":
          point[a.field] = int(rng.integers(low, high + 1))
        else:
          v = (math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "loguniform"
               else rng.uniform(low, high))
          point[a.field] = float(f"{v:.4g}")
      else:
        point[a.field] = a.values[int(rng.integers(len(a.values)))]
    if point not in out:
      out.append(point)
  return out


def _format(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(_format(v) for v in value) or "none"
  text = repr(value) if isinstance(value, float) else str(value)
  safe = re.sub(r"[^\w.+\-]", "", text)
  # characters a directory name should not hold are dropped; a short hash of the value keeps
  # values that differ only in them apart ("train[:3500]" and "train[3500:]")
  return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def point_name(point: dict[str, Any]) -> str:
  """The directory name of a point, e.g. "optim.learning_rate=0.001,model.width=64" (a hash
  beyond 200 characters); "" for the point of a seeds-only run."""
  name = ",".join(f"{k}={_format(v)}" for k, v in point.items())
  if len(name) > 200:
    name = "point_" + hashlib.sha256(name.encode()).hexdigest()[:16]
  return name


def plan(base: mlc.ConfigDict, axes: Sequence[Axis], workdir: str, seeds: int = 1,
         samples: int = 0, sample_seed: int = 0) -> list[Run]:
  """Every run of the sweep, each config resolved and validated (ConfigError names the point
  and field) before any runs; a finished run whose stored config differs from the one planned
  is an error, so a changed experiment file never mixes into old results."""
  if seeds < 1:
    raise ConfigError(f"--seeds {seeds}; expected at least 1")
  for a in axes:
    config_lib.get_field(base, a.field, f"--sweep {a.field}")
    if a.field == "seed":
      raise ConfigError("--sweep: 'seed' is set by --seeds, not swept")
  runs, names = [], {}
  for point in points(axes, samples, sample_seed):
    name = point_name(point)
    if name in names:
      raise ConfigError(f"--sweep: points {names[name]} and {point} share the directory name "
                        f"{name!r}")
    names[name] = point
    for i in range(seeds):
      config = copy.deepcopy(base)
      where = f"--sweep point {point}"
      for field, value in point.items():
        config_lib.set_field(config, field, value, where)
      config.seed = base.seed + i
      try:
        config_lib.validate(config)
      except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
      run = Run(point, int(config.seed), os.path.join(workdir, name, f"seed_{config.seed}"),
                config)
      check_unchanged(run.workdir, run.config)
      runs.append(run)
  return runs


def check_unchanged(workdir: str, config: mlc.ConfigDict) -> None:
  """Raises ConfigError if `workdir` holds a run of a config other than `config` (a sweep's
  point or a search's trial), so a changed experiment never mixes into old results."""
  differ = list(resumable.config_changes(workdir, config))
  if differ:
    raise ConfigError(f"{workdir} holds a run of another config (fields {differ[:6]} "
                      "differ); use another --workdir or delete that run")


def parse_shard(text: str) -> tuple[int, int]:
  """"I/N" -> (I, N), 0 <= I < N: the I-th of N disjoint parts of a sweep (a SLURM array
  task's `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`, a Kubernetes indexed Job's
  `$JOB_COMPLETION_INDEX/N`).

  Raises:
    FlagError: not two integers with 0 <= I < N.
  """
  try:
    i, n = (int(x) for x in text.split("/"))
  except ValueError:
    raise FlagError(f"--shard={text!r}; expected I/N with integers 0 <= I < N, e.g. 0/4") \
        from None
  if not 0 <= i < n:
    raise FlagError(f"--shard={text!r}; expected I/N with 0 <= I < N, e.g. 0/4")
  return i, n


def shard(runs: Sequence[Run], index: int, count: int) -> list[Run]:
  """Every `count`-th run from `index` on: `count` shards are disjoint and cover the sweep, and
  each holds every point's seeds spread alike (runs are planned point by point)."""
  return list(runs[index::count])


def execute(runs: Sequence[Run], log=print) -> dict[str, int]:
  """Runs what is not finished, in order; returns counts by status ("ran", "skipped",
  "diverged"). A NonFiniteLossError is recorded in the run's failed.json; any other error stops
  the sweep (a data or code problem would fail every later run too)."""
  counts = {"ran": 0, "skipped": 0, "diverged": 0}
  for i, run in enumerate(runs, 1):
    label = f"[sweep] {i}/{len(runs)} {point_name(run.point) or 'run'} seed {run.seed}"
    status = run.status
    if status in ("done", "diverged"):
      counts["skipped"] += 1
      log(f"{label}: {status} already, skipped")
      continue
    log(f"{label}: {'resuming' if status == 'partial' else 'running'} in {run.workdir}")
    os.makedirs(run.workdir, exist_ok=True)
    files.write_json_atomic(os.path.join(run.workdir, "point.json"),
                            {"point": run.point, "seed": run.seed})
    try:
      loop.train_and_evaluate(run.config, run.workdir)
      counts["ran"] += 1
    except loop.NonFiniteLossError as e:
      files.write_json_atomic(os.path.join(run.workdir, "failed.json"), {"error": str(e)})
      counts["diverged"] += 1
      log(f"{label}: diverged: {e}")
  return counts
