"""`python -m train --config experiments/X.py[:arg] [--config.a.b=v ...] [--workdir DIR]`

Parses flags and calls `train.loop.train_and_evaluate`; nothing else lives here. `--config` is a
file or a module (`experiments.mnist1d_cnn:tiny`), loaded by `train.config.load`; each
`--config.SECTION.FIELD=VALUE` overrides one field, parsed as the field's type. The default
workdir is `runs/<experiment>[_<arg>]`; compiled steps are cached in `--compilation_cache`.
A bad command line prints one `error: ...` line and exits with status 2; a failure while running
(data, checkpoint, non-finite loss) one line and status 1 (`train.cli`). Multi-process: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on
each process (or `--distributed` where JAX detects them), with one shared `--workdir`.
"""

from __future__ import annotations

# standard library only: SIGTERM, SIGINT and SIGUSR1 are handled from the first instant, before jax
from train import huge_pages, signals

if __name__ == "__main__":
  signals.install_early()

import os  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from train import (  # noqa: E402
  aot,
  cli,
  compilation_cache,
  loop,
  remote_workdir,
  topology,
  watchdog,
)
from train import config as config_lib  # noqa: E402
from train.errors import FlagError  # noqa: E402

_CONFIG = flags.DEFINE_string(
    "config", None, "Experiment file or module, optionally with an argument: "
    "experiments/X.py:tiny or experiments.X:tiny. --config.SECTION.FIELD=VALUE overrides a field.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<experiment>).")
_CACHE = flags.DEFINE_string(
    "compilation_cache", compilation_cache.DEFAULT_COMPILATION_CACHE,
    "Persistent XLA compilation cache directory; '' disables it. A second run of the same "
    "experiment loads its compiled steps instead of compiling them (2.5 s of the MNIST-1D CNN run "
    "on 2 CPU cores).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs: host:port of process 0. With "
    "--num_processes and --process_id, calls jax.distributed.initialize before anything else; "
    "on TPU pods and SLURM/Open MPI clusters, --distributed alone lets JAX detect all three.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with detected settings.")
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300, "Multi-process runs: seconds to wait for every process to join; "
    "then one line naming this process and exit status 1 (a process that never started, a wrong "
    "address or port).")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Build and compile the run, print its per-device memory (parameters, "
    "optimizer state, batch, XLA temporaries) and FLOPs per step, and stop without training.")
_TOPOLOGY = flags.DEFINE_string(
    "topology", None, "With --dry_run: compile for this TPU slice instead of the devices here "
    "(v5e-16, v5p-128, v4-8, v6e-256, or a grid v5e:4x4), through libtpu on this host "
    "(pip install -e '.[tpu]'), and print per chip: memory against HBM, FLOPs, the estimated "
    "step time, examples/s and MFU (docs/pods.md). No dataset is read.")
_TOPOLOGY_SLICES = flags.DEFINE_integer(
    "topology_slices", 1, "With --topology: this many slices joined over the data-centre "
    "network (multi-slice); the mesh's data axis spans them.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Start again from step 0 in a workdir that holds an earlier start's "
    "records: they move into WORKDIR/restarted-<time>/ (nothing is deleted).")
flags.mark_flags_as_required(["config"])


def init_distributed() -> None:
  """`jax.distributed.initialize` from the flags; on CPU, collectives across processes use gloo."""
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not _DISTRIBUTED.value and all(v is None for v in explicit):
    return
  if not _DISTRIBUTED.value and any(v is None for v in explicit):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together "
                         f"(got {explicit})")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = _DISTRIBUTED_TIMEOUT.value
  who = ("this process" if _DISTRIBUTED.value else
         f"process {_PROCESS_ID.value} of {_NUM_PROCESSES.value}, coordinator "
         f"{_COORDINATOR.value},")
  # JAX's own timeout aborts with a C++ stack trace: ours fires first, in one line.
  with watchdog.Watchdog(timeout, f"joining the job ({who} --distributed_timeout)"):
    if _DISTRIBUTED.value:
      jax.distributed.initialize(initialization_timeout=timeout + 60)
    else:
      jax.distributed.initialize(*explicit, initialization_timeout=timeout + 60)


def default_workdir(config_arg: str) -> str:
  """runs/<experiment>[_<arg>] for `experiments/X.py[:arg]` or `experiments.X[:arg]`."""
  name, arg = config_lib.experiment_name(config_arg), config_arg.partition(":")[2]
  return os.path.join("runs", f"{name}_{arg}" if arg else name)


def main(argv: list[str], overrides: dict[str, str]) -> None:
  config = config_lib.from_command_line(_CONFIG.value, overrides)
  huge_pages.restart_for([config], __spec__)  # train.huge_pages: once, before anything runs
  if _TOPOLOGY.value is not None:
    if not _DRY_RUN.value:
      raise FlagError(f"--topology={_TOPOLOGY.value!r} compiles for a slice this host does not "
                      "have; it goes with --dry_run")
    topology.parse(_TOPOLOGY.value, _TOPOLOGY_SLICES.value)  # a bad name: one line, here
    if not os.environ.get(aot.CHILD):  # compiled in a child: a libtpu crash becomes one line
      aot.in_child(sys.argv, _TOPOLOGY.value)
      return
    compilation_cache.use_compilation_cache(_CACHE.value)
    aot.dry_run(config, _TOPOLOGY.value, _TOPOLOGY_SLICES.value)
    return
  init_distributed()
  compilation_cache.use_compilation_cache(_CACHE.value)
  workdir = _WORKDIR.value or default_workdir(_CONFIG.value)
  if _DRY_RUN.value and remote_workdir.is_remote(workdir):  # writes nothing: no copy to keep
    workdir = remote_workdir.cache_for(workdir)
  if _RESTART.value and remote_workdir.is_remote(workdir) and remote_workdir.in_bucket():
    raise FlagError(f"--restart with --workdir={workdir} whose checkpoints orbax writes in the "
                    f"bucket ({jax.process_count()} process(es)): they cannot be moved aside "
                    "with the records; use another --workdir")
  with remote_workdir.local_workdir(workdir) as local:  # gs://...: a local copy, uploaded
    loop.train_and_evaluate(config, local, dry_run=_DRY_RUN.value, restart=_RESTART.value)


if __name__ == "__main__":
  args, config_items = cli.config_overrides(sys.argv)
  cli.run(lambda argv: main(argv, config_items), argv=args)
