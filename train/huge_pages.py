"""Transparent huge pages for glibc malloc's large blocks, for the experiments that set
`train.huge_pages`: the command-line programs then restart themselves once with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, after loading the config and before anything runs.

Why: XLA:CPU allocates a compiled step's temporaries as one block per execution and frees it at
the end (159 MB for `charlm_transformer`'s step, 58 MB for `digits_ddpm`'s UNet). glibc serves a
block that large with a fresh `mmap` each time and unmaps it on free, so every step the kernel
faults in and zeroes every 4 KB page of it again: 38,800 page faults a step for the LM, a
quarter of the process's cycles in the kernel (`perf`). With the tunable (glibc 2.35+), malloc
asks for transparent huge pages on its blocks of 2 MB or more (`madvise(MADV_HUGEPAGE)`), which
the kernel grants under its default THP mode "madvise": 2 MB pages, 500 faults a step. The
setting is read only when a process starts, hence the restart (`os.execve`: the same process id,
arguments and environment plus the tunable). Measured in docs/speed_attempts.md (item 11): the LM's
and the UNet's steps 21-24% faster; the streaming experiment's run 7% (medians of three).

Why only where a config asks: the tunable has a cost of its own, about 0.25 s a process on this
machine (the kernel zeroes a whole 2 MB page wherever malloc's heap grows, and the second
process imports again what the first had), 2.7% of the default experiment's 9 s run, whose step
has no block that large (docs/default_run.md). `charlm_transformer`, `digits_ddpm` and
`shapes_resnet` set it.

Nothing happens when: the configs do not set it, not Linux with glibc 2.35 or newer, THP is
"never" on this machine, `GLIBC_TUNABLES` already names `glibc.malloc.hugetlb` (a user's own
setting stands, and a restarted process does not restart again), `STRATA_HUGE_PAGES=0`, or the
interpreter was not started as `python -m` that program (`started_as`).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.machinery import ModuleSpec
from typing import Any, Iterable

TUNABLE = "glibc.malloc.hugetlb"
OFF = "STRATA_HUGE_PAGES"  # "0": keep glibc's defaults (no restart)
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_at_least(version: tuple[int, int]) -> bool:
  name, found = platform.libc_ver()
  try:
    return name == "glibc" and tuple(int(p) for p in found.split(".")[:2]) >= version
  except ValueError:
    return False


def _thp_possible() -> bool:
  try:
    with open(THP_MODE) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def environment(env: dict[str, str] | None = None) -> dict[str, str] | None:
  """The environment to restart with (`env`, default os.environ, plus the tunable), or None when
  this process should run as it is (module docstring)."""
  env = dict(os.environ if env is None else env)
  if env.get(OFF) == "0" or TUNABLE in env.get("GLIBC_TUNABLES", ""):
    return None
  if not sys.platform.startswith("linux") or not _glibc_at_least((2, 35)) or not _thp_possible():
    return None
  tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
  env["GLIBC_TUNABLES"] = ":".join([*tunables, f"{TUNABLE}=1"])
  return env


def started_as(module: str) -> bool:
  """Whether this interpreter was started as `python [options] -m module ...`: only then does
  its command line (`sys.orig_argv`) run that program again. A module run by `runpy` in another
  program (a test's forked child, a notebook) is not restarted: that line is the other's."""
  argv = sys.orig_argv
  return any(a == "-m" and b == module for a, b in zip(argv, argv[1:]))


def not_in_effect(asked: bool, env: dict[str, str] | None = None) -> str:
  """Why this process runs without the huge pages `train.huge_pages` asked for ("" when it does,
  or was not asked): a run started otherwise than `python -m train` (a notebook, `runpy`) is
  not restarted, and says so rather than ignore the field."""
  env = dict(os.environ if env is None else env)
  if not asked or f"{TUNABLE}=1" in env.get("GLIBC_TUNABLES", "").split(":"):
    return ""
  if env.get(OFF) == "0":
    why = f"{OFF}=0"
  elif TUNABLE in env.get("GLIBC_TUNABLES", ""):
    why = f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']} sets it"
  elif environment(env) is None:
    why = "they need Linux with glibc 2.35+ and transparent huge pages"
  else:
    why = "this process was not started as `python -m` a strata program, which restarts with them"
  return f"train.huge_pages=True: running without malloc's huge pages ({why})"


def wanted(configs: Iterable[Any]) -> bool:
  """Whether any of these experiment configs sets `train.huge_pages`."""
  return any(bool(c.train.get("huge_pages", False)) for c in configs)


def restart_for(configs: Iterable[Any], spec: ModuleSpec | None) -> None:
  """`restart(spec)` when any of `configs` (the run's, a sweep's base, a benchmark's workloads)
  sets `train.huge_pages`; call it once they are loaded, before anything is written or run."""
  if wanted(configs):
    restart(spec)


def restart(spec: ModuleSpec | None) -> None:
  """Restarts the program `python -m M` with huge pages for malloc's large blocks, when
  `environment` says to and this interpreter was started as that command; returns only when it
  is not restarted. `spec` is the calling module's `__spec__` (M is its name, a package's
  `__main__` standing for the package; None for a script run by path, never restarted). The
  process starts again from its command line: call it before anything is written or started
  (what was imported is imported again)."""
  if spec is None:
    return
  env = environment()
  names = {spec.name, spec.name.removesuffix(".__main__")}
  if env is None or not any(started_as(name) for name in names):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
