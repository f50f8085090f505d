"""Peak host memory of a process tree, sampled in the background, split into named phases.

Two sums are kept because they answer different questions:
- RSS summed over the process and its descendants (what `ps` and most reports show). Pages that
  forked worker processes still share with their parent count once per process, so the sum
  overstates the memory in use by the shared part (imported libraries, about 180 MB a worker in
  a strata training run).
- PSS (proportional set size) summed: each shared page is split between the processes that map
  it, so the sum is the memory the tree occupies (Linux; `psutil.memory_full_info`). Reading it
  walks every mapping of every process (about 0.1 core at 50 ms for a training run and two
  workers), so it is sampled every `pss_interval` s, RSS every `interval` s.
"""

from __future__ import annotations

import threading
import time


class PeakMemory:
  """Samples process `pid` (default: this one) and its descendants every `interval` s while the
  context is open (PSS every `pss_interval` s). `phase(name)` starts a new phase; `peaks[name]`
  = {"rss": bytes, "pss": bytes}, the largest sums seen in that phase; `peak` is the RSS peak
  over all phases."""

  def __init__(self, pid: int | None = None, interval: float = 0.05, phase: str = "run",
               pss_interval: float = 0.5):
    import psutil

    self._proc, self._interval = psutil.Process(pid), interval
    self._pss_every = max(1, round(pss_interval / interval))
    self._phase, self.peaks = phase, {phase: {"rss": 0, "pss": 0}}
    self._changes, self._pss_now = 0, True  # phase changes so far; PSS due at the next sample
    self._lock, self._stop = threading.Lock(), threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  @property
  def peak(self) -> int:
    return max(p["rss"] for p in self.peaks.values())

  def phase(self, name: str) -> None:
    """Later samples count toward phase `name` (a phase seen before continues)."""
    with self._lock:
      self._phase = name
      self._changes += 1
      self._pss_now = True  # each phase gets a PSS reading at once, not up to pss_interval late
      self.peaks.setdefault(name, {"rss": 0, "pss": 0})

  def sample(self, pss: bool = True) -> tuple[int, int]:
    """(RSS sum, PSS sum or 0 when `pss` is False) in bytes of the tree now; processes that exit
    meanwhile are skipped."""
    import psutil

    rss_sum = pss_sum = 0
    try:
      procs = [self._proc, *self._proc.children(recursive=True)]
    except psutil.Error:
      return 0, 0
    for p in procs:
      try:
        m = p.memory_full_info() if pss else p.memory_info()
      except psutil.Error:
        continue
      rss_sum += m.rss
      if pss:
        pss_sum += getattr(m, "pss", m.rss)  # PSS is Linux-only; elsewhere RSS stands in
    return rss_sum, pss_sum

  def _run(self) -> None:
    n = 0
    while not self._stop.is_set():
      with self._lock:
        changes, with_pss = self._changes, self._pss_now or n % self._pss_every == 0
        self._pss_now = False
      rss, pss = self.sample(pss=with_pss)
      n += 1
      with self._lock:
        # a sample taken across a phase change belongs to neither phase: it is dropped
        if changes == self._changes:
          peak = self.peaks[self._phase]
          peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
        else:
          self._pss_now = True
      time.sleep(self._interval)

  def __enter__(self) -> "PeakMemory":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
