"""TPU slices by name, as abstract devices to compile for on a host that has none.

    slice_ = topology.parse("v5e-16")          # or "v5e:4x4", "v5p-128", "v4-8", "v6e-256"
    devices = topology.devices(slice_)         # 16 abstract TPU v5e devices, through libtpu

Names follow Cloud TPU and MaxText (`accelerator_to_spec_map.py`): v5e and v6e names count
chips (v5e-16 is 16 chips, 4x4); v4 and v5p names count TensorCores, two a chip (v5p-128 is 64
chips, 4x4x4). The `GEN:AxB[xC]` form names the chip grid itself. `slices` > 1 repeats the slice,
joined over the data-centre network (DCN). libtpu, the TPU compiler, comes from the `tpu`
extra (`pip install -e '.[tpu]'`) and runs on a CPU host: `jax.experimental.topologies` hands it
the slice, and `jit(...).lower(...).compile()` compiles for those devices (MaxText's
`train_compile.py` does the same).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import math
import os
import re

from train.errors import FlagError


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation: its names and how its slices are laid out."""
  name: str           # as in slice names: v4, v5e, v5p, v6e
  topology: str       # the prefix libtpu's topology names use
  dims: int           # 2: a 2D torus of chips (v5e, v6e); 3: a 3D torus (v4, v5p)
  cores_per_chip: int  # what the number in a slice name counts per chip
  chip_config: str    # libtpu's chip config: "megacore" joins a chip's two TensorCores


GENERATIONS = {
    "v4": Generation("v4", "v4", 3, 2, "megacore"),
    "v5e": Generation("v5e", "v5e", 2, 1, "default"),
    "v5p": Generation("v5p", "v5", 3, 2, "megacore"),
    "v6e": Generation("v6e", "v6e", 2, 1, "default"),
}
# Chips per host: four (2x2), as on the multi-host slices of every generation here.
HOST_BOUNDS = (2, 2, 1)


@dataclasses.dataclass(frozen=True)
class Slice:
  """A named TPU slice: `generation`, the chip grid `shape` (2 or 3 numbers), `slices` copies."""
  name: str
  generation: Generation
  shape: tuple[int, ...]
  slices: int = 1

  @property
  def chips(self) -> int:
    """Chips of one slice."""
    return math.prod(self.shape)

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Which grid dimensions close into a ring: those of 16 chips on the 2D generations (a full
    v5e-256 or v6e-256 row), every one of a 3D slice of whole 4x4x4 cubes (MaxText's table)."""
    if self.generation.dims == 2:
      return (self.shape[0] == 16, self.shape[1] == 16, False)
    full = all(d % 4 == 0 for d in self.shape)
    return (full, full, full)

  def describe(self) -> str:
    grid = "x".join(map(str, self.shape))
    many = f" x {self.slices} slices over DCN" if self.slices > 1 else ""
    return f"{self.name} ({self.chips} chips, {grid}){many}"


def _grid(generation: Generation, chips: int, name: str) -> tuple[int, ...]:
  """The chip grid of a slice of `chips` chips: powers of two, the later dimensions the larger
  (v5e-32 is 4x8; v5p-64 is 2x4x4), as in Cloud TPU's slice shapes."""
  if chips < 1 or chips & (chips - 1):
    raise FlagError(f"--topology={name!r}: {chips} chips is not a power of two; name the grid "
                    f"instead ({generation.name}:AxB{'xC' if generation.dims == 3 else ''})")
  shape = [1] * generation.dims
  if generation.dims == 3 and chips >= 4:  # the smallest 3D slice is one host, 2x2x1
    shape, chips = [2, 2, 1], chips // 4
  while chips > 1:  # double the dimension that is smallest, the last first
    i = min(range(generation.dims), key=lambda k: (shape[k], -k))
    shape[i] *= 2
    chips //= 2
  return tuple(sorted(shape)) if generation.dims == 2 else tuple(shape)


def parse(name: str, slices: int = 1) -> Slice:
  """The slice `name` names: `v5e-16`, `v5p-128`, or a grid `v5e:4x4`, `v5p:4x4x4`.

  Raises:
    FlagError: an unknown generation, a count that is not a whole number of chips, a grid with
      the wrong number of dimensions, or `slices` < 1.
  """
  if slices < 1:
    raise FlagError(f"--topology_slices={slices}; expected 1 or more")
  known = sorted(GENERATIONS)
  m = re.fullmatch(r"(v\d+[a-z]?)(?:-(\d+)|:(\d+(?:x\d+){1,2}))", name.strip().lower())
  if m is None or m.group(1) not in GENERATIONS:
    raise FlagError(f"--topology={name!r}; expected a slice such as v5e-16, v5p-128 or v5e:4x4 "
                    f"of the generations {known}")
  generation = GENERATIONS[m.group(1)]
  if m.group(3):
    shape = tuple(int(v) for v in m.group(3).split("x"))
    if len(shape) != generation.dims or min(shape) < 1:
      raise FlagError(f"--topology={name!r}: a {generation.name} grid has {generation.dims} "
                      f"dimensions of at least 1 chip")
  else:
    count = int(m.group(2))
    if count % generation.cores_per_chip:
      raise FlagError(f"--topology={name!r}: {generation.name} names count TensorCores, "
                      f"{generation.cores_per_chip} a chip; expected an even number")
    shape = _grid(generation, count // generation.cores_per_chip, name)
  return Slice(name.strip().lower(), generation, shape, slices)


def has_tpu_chip() -> bool:
  """Whether this host has a TPU chip: libtpu opens one as /dev/accel<N> (v4, v5p) or through
  VFIO (/dev/vfio/<N>: v5e, v6e). Standard library only (no JAX import)."""
  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _has_gpu() -> bool:
  """Whether this host shows an NVIDIA or AMD GPU (as JAX's own checks look for them)."""
  return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg",
                                          "/dev/kfd"))


def quiet_absent_tpu() -> None:
  """Keeps libtpu, installed for compiling (the `tpu` extra), out of runs on a host with no TPU
  chip. JAX would still try it as a backend at its first use: a page of warnings about missing
  TPU metadata, 100 MB more memory in every process, and libtpu's one-process lock
  (/tmp/libtpu_lockfile) taken, so that a topology compile beside any other JAX process failed
  ("ABORTED: ... libtpu multi-process lockfile"). With no GPU either, JAX_PLATFORMS=cpu (a
  topology compile loads libtpu by itself); beside a GPU, libtpu's settings and no lock. Nothing
  is set where a TPU chip is present, libtpu is not installed, or a variable is already set.
  Standard library only: `train/__init__.py` calls it, before any JAX backend starts."""
  if has_tpu_chip() or importlib.util.find_spec("libtpu") is None:
    return
  if not _has_gpu():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  for key, value in (("TPU_ACCELERATOR_TYPE", "v5litepod-1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                     ("TPU_WORKER_ID", "0"), ("TPU_SKIP_MDS_QUERY", "1"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
    os.environ.setdefault(key, value)


def devices(slice_: Slice) -> list:
  """The abstract TPU devices of `slice_` (jax devices of platform "tpu" that compile but never
  run), ordered as libtpu gives them.

  Raises:
    ImportError: libtpu is not installed (one line saying how to install it; exit status 1, a
      missing optional package, as the contract in train/cli.py says).
  """
  if importlib.util.find_spec("libtpu") is None:
    raise ImportError("--topology needs libtpu, the TPU compiler (it runs on this CPU host): "
                      "pip install -e '.[tpu]'")
  from jax.experimental import topologies

  g = slice_.generation
  grid = "x".join(map(str, slice_.shape))
  bounds = tuple(min(b, s) for b, s in zip(HOST_BOUNDS, (*slice_.shape, 1, 1)))
  topo = topologies.get_topology_desc(
      platform="tpu", topology_name=f"{g.topology}:{grid}", chip_config_name=g.chip_config,
      chips_per_host_bounds=bounds, num_slices=slice_.slices, wrap=slice_.wrap)
  return list(topo.devices)
