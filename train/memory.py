"""Will the step fit? Per-device bytes of the compiled train step, before the first step runs.

`report(run, compiled)` splits one device's share into parameters, optimizer state (and the
rest of the train state), the batch and XLA's temporaries (`compiled.memory_analysis()`), and
`check` refuses a run whose total passes the limit: `train.memory_limit_gb` when set, else the
device's own (`device.memory_stats()["bytes_limit"]` on GPU and TPU; CPU runs are checked only
against a configured limit). The refusal names concrete ways down: a smaller per-device batch,
`model.remat`, more `mesh.fsdp`. `python -m train ... --dry_run` prints the report and stops.
"""

from __future__ import annotations

from typing import Any

import jax

from train.errors import ConfigError
from train.parallel import device_bytes  # noqa: F401  (re-exported: memory.device_bytes)

GB = 1e9


class OutOfMemoryError(ConfigError):
  """The compiled step needs more memory per device than there is (or than configured)."""


def report(abstract_state: Any, batch_bytes: int, compiled: Any,
           params: Any = None) -> dict[str, int]:
  """{"parameters", "optimizer_state", "batch", "temporaries", "outputs", "total"}: one
  device's bytes. `params` (default `abstract_state.params`) is the part of the state counted
  as parameters, `optimizer_state` every other part; with `compiled` None (not compiled),
  temporaries and outputs count 0. `benchmarks.pod_table` reports the anchors' steps with it."""
  params = device_bytes(abstract_state.params if params is None else params)
  state = device_bytes(abstract_state)
  stats = compiled.memory_analysis() if compiled is not None else None
  temp = int(getattr(stats, "temp_size_in_bytes", 0) or 0) if stats is not None else 0
  # The outputs (the new state) alias the donated inputs on accelerators; otherwise XLA holds
  # them beside the inputs.
  out = int(getattr(stats, "output_size_in_bytes", 0) or 0) if stats is not None else 0
  alias = int(getattr(stats, "alias_size_in_bytes", 0) or 0) if stats is not None else 0
  extra_out = max(out - alias, 0)
  return {"parameters": params, "optimizer_state": state - params, "batch": batch_bytes,
          "temporaries": temp, "outputs": extra_out,
          "total": state + batch_bytes + temp + extra_out}


def device_limit(configured_gb: float) -> tuple[float | None, str]:
  """(bytes one device may use, where the figure comes from); None when nothing is known."""
  if configured_gb > 0:
    return configured_gb * GB, f"train.memory_limit_gb={configured_gb:g}"
  device = jax.devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # CPU and some backends do not report
    stats = {}
  if "bytes_limit" in stats:
    return float(stats["bytes_limit"]), f"{device.device_kind}'s memory"
  return None, "no device limit known: set train.memory_limit_gb to check one"


def size(n: float) -> str:
  """Bytes as a short figure: 1.23 GB, 456 MB, 7.8 kB, 12 B."""
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if n >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.0f} B"


def line(rep: dict[str, int], limit: float | None, source: str) -> str:
  """The report as one console line."""
  parts = ", ".join(f"{k.replace('_', ' ')} {size(rep[k])}" for k in (
      "parameters", "optimizer_state", "batch", "temporaries", "outputs"))
  tail = f" of {size(limit)} ({source})" if limit else f"; {source}"
  return f"memory per device: {parts}; total {size(rep['total'])}{tail}"


def fixes(config: Any, rep: dict[str, int], devices: int) -> list[str]:
  """Concrete ways to need less memory a device, for a run over `devices` devices whose report
  (`report`) is `rep` (its temporaries may be unknown: 0)."""
  per_device = config.data.batch_size // max(devices // config.mesh.get("tensor", 1), 1)
  temp = f"; temporaries {size(rep['temporaries'])} grow with it" if rep["temporaries"] else ""
  ways = [f"a smaller per-device batch (data.batch_size={config.data.batch_size} is "
          f"{per_device} a device{temp})"]
  if not config.model.get("remat", False) and not config.model.get("remat_policy", ""):
    ways.append("model.remat=True (recompute activations in the backward pass; or "
                "model.remat_policy='dots_saveable', which keeps the matmuls' outputs)")
  ways.append(f"more mesh.fsdp (now {config.mesh.fsdp}; parameters and optimizer state "
              f"{size(rep['parameters'] + rep['optimizer_state'])} split over it)")
  if str(config.model.get("name", "")).startswith("transformer."):
    ways.append(f"more mesh.tensor (now {config.mesh.get('tensor', 1)}; the blocks' attention "
                "heads and MLP split over it, activations too)")
    sharding = config.get("sharding", {})
    if config.mesh.get("tensor", 1) > 1 and not sharding.get("sequence_parallel", False):
      ways.append("sharding.sequence_parallel=True (the activations between the blocks' "
                  "tensor-parallel layers split over mesh.tensor along the sequence)")
  return ways


def check(rep: dict[str, int], limit: float | None, source: str, config: Any,
          devices: int | None = None, per: str = "per device") -> None:
  """Raises OutOfMemoryError naming the ways down when `rep['total']` passes `limit`, for a run
  over `devices` devices (default: this process's job's)."""
  if limit is None or rep["total"] <= limit:
    return
  ways = fixes(config, rep, jax.device_count() if devices is None else devices)
  raise OutOfMemoryError(f"the train step needs {size(rep['total'])} {per} but {source} "
                         f"allows {size(limit)}; try " + "; or ".join(ways))
