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

from train import files, progress, writers
from train.errors import CheckpointError
from train.tensorboard_events import Events


class MetricWriter:
  """Appends metrics to `WORKDIR/metrics.jsonl`, rates (steps/s, examples/s, MFU, ...) to
  `WORKDIR/throughput.jsonl`, and both to the other writers of `logging.writers`
  (`train.writers`: TensorBoard events in `WORKDIR/tensorboard`, a W&B run), with the
  histograms of `logging.histograms_every`. Timings stay out of metrics.jsonl, which is the same
  bytes for the same seed.

  On resume from step `resume_step`, records after that step (written by the interrupted run,
  and about to be recomputed identically) are dropped so every step appears once.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True,
               logging_config: dict[str, Any] | None = None,
               run_config: dict[str, Any] | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, files.METRICS)
    self.rates_path = os.path.join(workdir, files.THROUGHPUT)
    self._sinks: list[Any] = []
    if not enabled:
      return
    names = tuple(logging_config["writers"]) if logging_config else ("jsonl", "tensorboard")
    # W&B's: the interrupted run's last record, read before the records after resume_step go
    last = (last_step(workdir) or 0) if "wandb" in names else 0
    for path in (self.path, self.rates_path):
      _drop_after(path, resume_step)
    self._file = open(self.path, "a")
    self._rates = open(self.rates_path, "a")
    if "tensorboard" in names:
      self._sinks.append(Events(os.path.join(workdir, files.TENSORBOARD)))
    if "wandb" in names:
      self._sinks.append(writers.Wandb(workdir, logging_config["wandb"], run_config or {},
                                       last))

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
    tagged = {f"{split}/{k}": v for k, v in {**metrics, **(rates or {})}.items()}
    for sink in self._sinks:
      sink.scalars(step, tagged)

  def histograms(self, step: int, values: dict[str, dict[str, Any]]) -> None:
    """{tag: `train.histograms.unpack` of one array} at `step`, to every writer but jsonl."""
    if self.enabled:
      for sink in self._sinks:
        sink.histograms(step, values)

  def image(self, step: int, tag: str, path: str) -> None:
    """The PNG file `path` as image `tag` at `step`, to every writer but jsonl."""
    if self.enabled and self._sinks:
      with open(path, "rb") as f:
        png = f.read()
      for sink in self._sinks:
        sink.image(step, tag, png)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._rates.close()
      for sink in self._sinks:
        sink.close()


def read_records(path: str) -> tuple[list[dict[str, Any]], int]:
  """(the records of a JSON-lines file, in file order; the number of bytes of a torn last line,
  0 when the file ends cleanly). A missing file has no records.

  A run killed mid-write (SIGKILL, a full disk) can leave its last line unfinished: that line is
  not a record, and appending after it would corrupt the next one too.

  Raises:
    CheckpointError: a line other than the last that is not a JSON record, naming the file and
      the line.
  """
  lines, torn = _lines(path)
  return [record for record, _ in lines], torn


def _lines(path: str) -> tuple[list[tuple[dict[str, Any], str]], int]:
  """`read_records`, each record with its line as written."""
  if not os.path.exists(path):
    return [], 0
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  out, torn = [], 0
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append((json.loads(line), line.decode() + "\n"))
    except ValueError:
      if i == len(lines) - 1:  # no newline after it: the write was cut short
        torn = len(line)
        break
      raise CheckpointError(f"{path}, line {i + 1}, is not a JSON record ({line[:80]!r}); "
                            "repair or remove that line") from None
  return out, torn


def read_metrics(workdir: str, split: str) -> list[dict[str, Any]]:
  """The records of `split` ("train", "eval", a named evaluation) in WORKDIR/metrics.jsonl, in
  step order; [] when the file is not there."""
  rows, _ = read_records(os.path.join(workdir, files.METRICS))
  return [row for row in rows if row.get("split") == split]


def last_step(workdir: str) -> int | None:
  """The step of the last record in WORKDIR/metrics.jsonl; None when it holds none."""
  rows, _ = read_records(os.path.join(workdir, files.METRICS))
  return int(rows[-1]["step"]) if rows else None


def _drop_after(path: str, step: int) -> None:
  """Rewrites a JSON-lines file without its records after `step` and without a torn last line
  (atomically); the lines up to `step` stay byte for byte."""
  lines, torn = _lines(path)
  keep = [line for record, line in lines if record["step"] <= step]
  if torn:
    progress.console(f"{path}: dropped its unfinished last line ({torn} bytes, cut short when "
                     "the run that wrote it stopped)")
  if len(keep) != len(lines) or torn:
    files.write_text_atomic(path, "".join(keep))
    logging.info("%s: dropped %d records after resumed step %d", os.path.basename(path),
                 len(lines) - len(keep), step)
