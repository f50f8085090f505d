"""Where a run's wall time goes: goodput, as MaxText and the ML Goodput Measurement library count
it (the share of wall time in productive training steps), split by what took the rest.

Every train record in `WORKDIR/throughput.jsonl` carries, for the window since the last record:

- `data_wait_s`: seconds the loop waited for batches (`next(iterator)`), and
  `data_wait_ms_per_step`;
- `share_training`, `share_data_wait`, `share_evaluation`, `share_checkpoint`,
  `share_compile`: each phase's share of the window's wall time (they add up to 1; training is
  what the others leave, the steps themselves with the logging between them).

- `compile_cache_requests`, `compile_cache_hits`, `compile_seconds_saved`: since the run began,
  the compiles that asked JAX's persistent compilation cache (`--compilation_cache`), those it
  served, and the compile time it saved less the time to read it (JAX's own monitoring events;
  negative where a program compiles faster than it reads).

`summary.json` gets the run's totals (`goodput`): seconds per phase, the wall time of the loop and
`share_training` over all of it, and the cache's counts. `metrics.jsonl` carries none of this, so
it stays the same bytes for the same seed. Dispatch is asynchronous: a step's device time shows
where the host next waits for it (the logging window's fetch), which is inside the training share.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import jax

PHASES = ("data_wait", "evaluation", "checkpoint", "compile")
# JAX's monitoring events of its persistent compilation cache -> record fields
CACHE_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache": "compile_cache_requests",
                "/jax/compilation_cache/cache_hits": "compile_cache_hits"}
SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"


class Goodput:
  """Phase timers of the training loop (module docstring)."""

  def __init__(self) -> None:
    now = time.perf_counter()
    self._window_start = self._run_start = now
    self._window = dict.fromkeys(PHASES, 0.0)
    self._total = dict.fromkeys(PHASES, 0.0)
    self._steps = 0
    _listen()
    self._cache_start = dict(_CACHE)

  def add(self, phase: str, seconds: float) -> None:
    """`seconds` more of `phase` (one of `PHASES`)."""
    self._window[phase] += seconds
    self._total[phase] += seconds

  @contextlib.contextmanager
  def phase(self, phase: str) -> Iterator[None]:
    """Times the block as `phase`."""
    t = time.perf_counter()
    try:
      yield
    finally:
      self.add(phase, time.perf_counter() - t)

  def step(self) -> None:
    """One more training step in this window."""
    self._steps += 1

  def record(self) -> dict[str, float]:
    """This window's fields (module docstring); starts the next window."""
    now = time.perf_counter()
    wall = max(now - self._window_start, 1e-9)
    spent = self._window
    out = {"data_wait_s": spent["data_wait"],
           "data_wait_ms_per_step": 1e3 * spent["data_wait"] / max(self._steps, 1),
           "share_training": max(wall - sum(spent.values()), 0.0) / wall}
    out.update({f"share_{p}": spent[p] / wall for p in PHASES})
    out.update(self._cache_counts())
    self._window_start, self._window, self._steps = now, dict.fromkeys(PHASES, 0.0), 0
    return out

  def totals(self) -> dict[str, float]:
    """The run's seconds per phase, its wall time and its training share (summary.json)."""
    wall = max(time.perf_counter() - self._run_start, 1e-9)
    out = {f"{p}_s": s for p, s in self._total.items()}
    out["wall_s"] = wall
    out["share_training"] = max(wall - sum(self._total.values()), 0.0) / wall
    return {**out, **self._cache_counts()}

  def _cache_counts(self) -> dict[str, float]:
    return {k: v - self._cache_start[k] for k, v in _CACHE.items()}


# The process's counts of the compilation cache's events, from one listener registered once (JAX's
# listeners are the process's); each Goodput reports the counts since it began.
_CACHE: dict[str, float] = {**dict.fromkeys(CACHE_EVENTS.values(), 0), "compile_seconds_saved": 0.0}
_LISTENING: list[bool] = []


def _on_event(event: str, **kwargs: Any) -> None:
  if event in CACHE_EVENTS:
    _CACHE[CACHE_EVENTS[event]] += 1


def _on_duration(event: str, seconds: float, **kwargs: Any) -> None:
  if event == SAVED_EVENT:
    _CACHE["compile_seconds_saved"] += seconds


def _listen() -> None:
  if not _LISTENING:
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    _LISTENING.append(True)
