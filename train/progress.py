"""The console: one line per log, evaluation and event, from process 0 only."""

from __future__ import annotations

import math
import sys
import time

import jax


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

  def line(self, step: int, split: str, metrics: dict[str, float], rate: float | None,
           shown: tuple[str, ...] | None = None) -> str:
    """`metrics` named in `shown` (the paradigm's `CONSOLE_METRICS`; None: all of them)."""
    shown_text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if shown is None or k in shown)
    width = len(str(self.total))
    text = f"[{split:5s}] step {step:>{width}}/{self.total} | {shown_text}"
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
