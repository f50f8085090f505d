"""Transparent huge pages for glibc malloc's large blocks: the command-line programs restart
themselves once, before importing jax, with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.

Why: XLA:CPU allocates a compiled step's temporaries as one block per execution and frees it at
the end (159 MB for `charlm_transformer`'s step, 58 MB for `digits_unet`'s). glibc serves a block
that large with a fresh `mmap` each time and unmaps it on free, so every step the kernel faults
in and zeroes every 4 KB page of it again: 38,800 page faults a step for the LM, a quarter of
the process's cycles in the kernel (`perf`). With the tunable (glibc 2.35+), malloc asks for
transparent huge pages on those blocks (`madvise(MADV_HUGEPAGE)`), which the kernel grants under
its default THP mode "madvise": 2 MB pages, 500 faults a step. The setting is read only when a
process starts, hence the restart (`os.execve`: the same process id, arguments and environment
plus the tunable). Measured in docs/benchmarks.md (item 11): the LM's and the UNet's steps 21-24%
faster; the streaming experiment's run 7% (medians of three), at 0-137 MB more peak memory.

Nothing happens when: not Linux with glibc 2.35 or newer, THP is "never" on this machine,
`GLIBC_TUNABLES` already names `glibc.malloc.hugetlb` (a user's own setting stands, and a
restarted process does not restart again), `STRATA_HUGE_PAGES=0`, or the interpreter was not
started as `python -m` that program (`started_as`).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.machinery import ModuleSpec

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


def restart(spec: ModuleSpec | None) -> None:
  """Restarts the program `python -m M` with huge pages for malloc's large blocks, when
  `environment` says to and this interpreter was started as that command; returns only when it
  is not restarted. `spec` is the calling module's `__spec__` (M is its name, a package's
  `__main__` standing for the package; None for a script run by path, never restarted). Call it
  first in the module's `__main__` code, before jax is imported (an import done here would be
  done twice)."""
  if spec is None:
    return
  env = environment()
  names = {spec.name, spec.name.removesuffix(".__main__")}
  if env is None or not any(started_as(name) for name in names):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
