"""PeakMemory: per-phase peaks of the RSS and PSS sums over a process tree."""

import subprocess
import sys
import time

import numpy as np

from benchmarks.peak_memory import PeakMemory

MB = 2**20


def _wait_for_samples(mem: PeakMemory, phase: str, above: int = 0) -> None:
  """Until the phase has a PSS reading above `above` bytes (5 s at most), then 0.1 s more."""
  deadline = time.time() + 5
  while mem.peaks[phase]["pss"] <= above and time.time() < deadline:
    time.sleep(0.01)
  time.sleep(0.1)


def test_an_allocation_counts_in_its_phase_only():
  with PeakMemory(interval=0.01, phase="before") as mem:
    _wait_for_samples(mem, "before")
    mem.phase("during")
    block = np.ones(300 * MB, np.uint8)  # written, so resident
    _wait_for_samples(mem, "during", above=mem.peaks["before"]["pss"] + 250 * MB)
    del block
    mem.phase("after")
    _wait_for_samples(mem, "after")
  before, during, after = (mem.peaks[p] for p in ("before", "during", "after"))
  assert during["rss"] - before["rss"] > 250 * MB
  assert during["pss"] - before["pss"] > 250 * MB
  assert during["rss"] - after["rss"] > 250 * MB  # freed: the later phase does not inherit it
  assert mem.peak == during["rss"]


def test_children_are_summed():
  code = "import numpy as np, time; b = np.ones(200 * 2**20, np.uint8); print(1, flush=True); time.sleep(2)"
  with PeakMemory(interval=0.01, phase="alone") as mem:
    _wait_for_samples(mem, "alone")
    mem.phase("with_child")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    _wait_for_samples(mem, "with_child", above=mem.peaks["alone"]["pss"] + 200 * MB)
    child.kill()
    child.wait()
  assert mem.peaks["with_child"]["pss"] - mem.peaks["alone"]["pss"] > 200 * MB
