"""One run's machinery: config, build, loop, checkpoints, records (docs/guide.md).

Importing the package quiets libtpu on a host without a TPU chip (`topology.quiet_absent_tpu`:
with the `tpu` extra installed, JAX would otherwise print libtpu's warnings at its first use).
Standard library only, so that `python -m train` handles signals before its heavy imports."""

from train import topology as _topology

_topology.quiet_absent_tpu()
