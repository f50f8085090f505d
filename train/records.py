"""What a run writes beside its checkpoints: the resolved config, lineage, metrics (JSONL and
TensorBoard) and the console progress line.

`metrics.jsonl` holds one object per line, `{"step": int, "split": str, <metric>: float, ...}`,
and only numbers that are a function of the config and seed (no timings), so the same seed gives
the same file. Rates and ETA go to the console and TensorBoard.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any

import jax
from absl import logging

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
             "chex", "ml-collections", "numpy", "strata")


def library_versions() -> dict[str, str]:
  out = {}
  for name in LIBRARIES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  out["python"] = platform.python_version()
  return out


def _git(*args: str) -> str:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10,
                       check=True)
  return out.stdout


def code_version() -> str:
  """`git describe` of the source tree when it is a checkout, else the package version."""
  try:
    return _git("describe", "--always", "--dirty").strip()
  except (OSError, subprocess.SubprocessError):
    return importlib.metadata.version("strata")


def code_lineage() -> dict[str, Any]:
  """The source tree a run used: {"commit": full hash, "dirty": uncommitted changes to tracked
  files, "diff_sha256": hash of `git diff HEAD` when dirty (two dirty trees with the same hash
  ran the same code)}; {"commit": None, "package": version} outside a git checkout."""
  try:
    commit = _git("rev-parse", "HEAD").strip()
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary")
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None, "package": importlib.metadata.version("strata")}
  out: dict[str, Any] = {"commit": commit, "dirty": bool(diff)}
  if diff:
    out["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
  return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested dict (a config.json, a lineage section) as {"a.b.c": leaf}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def write_json_atomic(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=str)
    f.write("\n")
  os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_report(out: str, result: Any, markdown: str | None = None,
                 json_name: str = "report.json") -> None:
  """An evaluation tool's results: `out`/`json_name` and, given, `out`/report.md, each written
  whole (to a temporary file, then renamed), so a failure never leaves half a report."""
  os.makedirs(out, exist_ok=True)
  write_json_atomic(os.path.join(out, json_name), result)
  if markdown is not None:
    write_text_atomic(os.path.join(out, "report.md"), markdown + "\n")


class MetricWriter:
  """Appends metrics to `WORKDIR/metrics.jsonl`, rates (steps/s, examples/s, MFU, ...) to
  `WORKDIR/throughput.jsonl`, and both as TensorBoard events in `WORKDIR/tensorboard`. Timings
  stay out of metrics.jsonl, which is the same bytes for the same seed.

  On resume from step `resume_step`, records after that step (written by the interrupted run,
  and about to be recomputed identically) are dropped so every step appears once.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.rates_path = os.path.join(workdir, "throughput.jsonl")
    self._tb = None
    if not enabled:
      return
    for path in (self.path, self.rates_path):
      _drop_after(path, resume_step)
    self._file = open(self.path, "a")
    self._rates = open(self.rates_path, "a")
    try:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      logging.warning("tensorboardX not installed; writing metrics.jsonl only")

  def write(self, step: int, split: str, metrics: dict[str, float],
            rates: dict[str, float] | None = None) -> None:
    """One record of `metrics` (metrics.jsonl) and of `rates` (throughput.jsonl)."""
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in sorted(metrics.items())})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if rates:
      self._rates.write(json.dumps({"step": int(step), **{
          k: float(v) for k, v in sorted(rates.items())}}) + "\n")
      self._rates.flush()
    if self._tb is not None:
      for k, v in {**metrics, **(rates or {})}.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), step)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._rates.close()
      if self._tb is not None:
        self._tb.close()


def read_metrics(workdir: str, split: str) -> list[dict[str, Any]]:
  """The records of `split` ("train", "eval", a named evaluation) in WORKDIR/metrics.jsonl, in
  step order; [] when the file is not there."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [row for row in rows if row.get("split") == split]


def _drop_after(path: str, step: int) -> None:
  """Rewrites a JSON-lines file without its records after `step` (atomically)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [ln for ln in f if ln.strip()]
  keep = [ln for ln in lines if json.loads(ln)["step"] <= step]
  if len(keep) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
    logging.info("%s: dropped %d records after resumed step %d", os.path.basename(path),
                 len(lines) - len(keep), step)


class Progress:
  """The console line: step, metrics, steps/s over the last window and ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self._last_step, self._last_time = start_step, time.perf_counter()

  def rate(self, step: int) -> float:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return rate

  def line(self, step: int, split: str, metrics: dict[str, float], rate: float | None) -> str:
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k in (
        "loss", "accuracy", "bits_per_token", "mse", "mae", "neg_elbo", "neg_iwae", "kl",
        "d_loss", "g_loss", "d_accuracy", "learning_rate"))
    width = len(str(self.total))
    text = f"[{split:5s}] step {step:>{width}}/{self.total} | {shown}"
    if rate is not None and rate > 0:
      eta = (self.total - step) / rate
      text += f" | {rate:,.3g} steps/s | ETA {_duration(eta)}"
    return text


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def console(text: str) -> None:
  """A line on stderr, from process 0 only (every process of a multi-process run calls it)."""
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "strata", "xla")  # the CLI's default


def use_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache in `path` ("" leaves it off): a later process that
  compiles the same step loads it instead (2.5 s of the MNIST-1D CNN run on 2 CPU cores)."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
