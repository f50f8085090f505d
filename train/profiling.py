"""`train.profile_steps = (A, B)`: a `jax.profiler` trace of train steps A to B (inclusive) in
`WORKDIR/profile`, each step annotated (`StepTraceAnnotation`), readable in TensorBoard's profile
plugin or Perfetto (`WORKDIR/profile/plugins/profile/<run>/*.xplane.pb`). Every process of a
multi-process run traces itself."""

from __future__ import annotations

import contextlib
from typing import Any

import jax

from train import progress


class StepProfiler:
  """Starts the trace before step A and stops it once step B's results are ready."""

  def __init__(self, steps: tuple[int, int], directory: str):
    self.first, self.last = steps
    self.directory = directory
    self.active = False

  def begin(self, step: int) -> None:
    if self.first and step == self.first:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def step(self, step: int) -> Any:
    if not self.active:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def end(self, step: int, outputs: Any) -> None:
    if self.active and step == self.last:
      jax.block_until_ready(outputs)
      self.close()
      progress.console(f"wrote a profiler trace of steps {self.first}-{self.last} to "
                       f"{self.directory}")

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
