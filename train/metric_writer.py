"""What a run records as it trains: metrics (WORKDIR/metrics.jsonl and TensorBoard) and rates
(WORKDIR/throughput.jsonl).

`metrics.jsonl` holds one object per line, `{"step": int, "split": str, <metric>: float, ...}`,
and only numbers that are a function of the config and seed (no timings), so the same seed gives
the same file. Rates and ETA go to the console and TensorBoard.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging

from train import files


class MetricWriter:
  """Appends metrics to `WORKDIR/metrics.jsonl`, rates (steps/s, examples/s, MFU, ...) to
  `WORKDIR/throughput.jsonl`, and both as TensorBoard events in `WORKDIR/tensorboard`. Timings
  stay out of metrics.jsonl, which is the same bytes for the same seed.

  On resume from step `resume_step`, records after that step (written by the interrupted run,
  and about to be recomputed identically) are dropped so every step appears once.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, files.METRICS)
    self.rates_path = os.path.join(workdir, files.THROUGHPUT)
    self._tb = None
    if not enabled:
      return
    for path in (self.path, self.rates_path):
      _drop_after(path, resume_step)
    self._file = open(self.path, "a")
    self._rates = open(self.rates_path, "a")
    try:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, files.TENSORBOARD))
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
  path = os.path.join(workdir, files.METRICS)
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
