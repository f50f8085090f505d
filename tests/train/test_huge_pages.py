"""train.huge_pages: the restart's conditions, and what it does to a large malloc'd block."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from train import huge_pages

ON_GLIBC = huge_pages.environment({}) is not None  # Linux, glibc 2.35+, THP not "never"

# A block of 100 MB from glibc's malloc (numpy's own large arrays ask for huge pages already),
# written and freed 10 times: the page faults per block, and the process's id and tunables.
_SCRIPT = """
import ctypes, os, resource
from train import huge_pages
before = os.getpid()
huge_pages.restart(__spec__)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  p = libc.malloc(100 << 20)
  ctypes.memset(p, 1, 100 << 20)
  libc.free(p)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) // 10
print(before, os.getpid(), os.environ.get("GLIBC_TUNABLES"), faults)
"""


def _run(tmp_path, **env: str) -> list[str]:
  """`python -m fault_probe` (the script above): restarted as any `python -m` program is."""
  (tmp_path / "fault_probe.py").write_text(_SCRIPT)
  out = subprocess.run([sys.executable, "-m", "fault_probe"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=True,
                       env={**os.environ, "PYTHONPATH": ROOT, **env})
  lines = out.stdout.splitlines()
  assert len(lines) == 1, out.stdout  # the restarted program ran once
  return lines[0].split()


def test_the_tunable_is_added_to_a_users_own_and_a_set_one_stands():
  if not ON_GLIBC:
    pytest.skip("not Linux with glibc 2.35+ and transparent huge pages")
  assert huge_pages.environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  env = huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "b"}
  assert huge_pages.environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert huge_pages.environment({"STRATA_HUGE_PAGES": "0"}) is None


def test_restart_keeps_the_process_and_takes_a_large_blocks_page_faults_down(tmp_path):
  if not ON_GLIBC:
    pytest.skip("not Linux with glibc 2.35+ and transparent huge pages")
  before, after, tunables, faults = _run(tmp_path)
  assert before == after and tunables == "glibc.malloc.hugetlb=1"
  before, after, tunables, plain = _run(tmp_path, STRATA_HUGE_PAGES="0")
  assert before == after and tunables == "None"
  assert int(plain) >= 25_000  # 100 MB in 4 KB pages, each faulted in again after each free
  # huge pages where the kernel grants them (THP "madvise" or "always"): 2 MB pages
  assert int(faults) < int(plain) / 10, (faults, plain)


@pytest.mark.parametrize("asked", [True, False])
def test_the_training_cli_restarts_when_the_config_asks(tmp_path, data_dir, asked):
  """`python -m train` restarts once its config is loaded when it sets train.huge_pages (the
  restarted process imports everything again), and only then."""
  if not ON_GLIBC:
    pytest.skip("not Linux with glibc 2.35+ and transparent huge pages")
  r = subprocess.run([sys.executable, "-X", "importtime", "-m", "train", "--config",
                      "experiments/mnist1d_cnn.py:tiny", f"--config.data.data_dir={data_dir}",
                      f"--config.train.huge_pages={asked}", "--dry_run",
                      "--workdir", str(tmp_path / "w"), "--compilation_cache="], cwd=ROOT,
                     capture_output=True, text=True, timeout=120,
                     env={k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"})
  assert r.returncode == 0 and "dry run: cnn.CNN" in r.stderr, r.stderr[-2000:]
  # `-X importtime` prints one line per module imported, in each process
  assert r.stderr.count("| jax\n") == r.stderr.count("| train.huge_pages\n") == 1 + asked


def test_the_experiments_that_ask_for_huge_pages():
  """Set where their steps measured faster (docs/speed_attempts.md item 11), never in a smoke run;
  the default experiment's step has no block large enough to gain (docs/default_run.md)."""
  from train import config as config_lib

  def asks(arg):
    return huge_pages.wanted([config_lib.load(os.path.join(ROOT, "experiments", arg))])

  assert all(asks(f"{e}.py") and not asks(f"{e}.py:tiny")
             for e in ("charlm_transformer", "digits_ddpm", "shapes_resnet"))
  assert not asks("mnist1d_cnn.py") and not config_lib.base().train.huge_pages


def test_a_module_run_inside_another_program_is_not_restarted():
  """`runpy` in a program started otherwise (a test's forked child, a notebook): its command
  line is that program's, which a restart would run again."""
  code = ("import os, runpy, sys; sys.argv = ['train', '--help']\n"
          "try:\n  runpy.run_module('train', run_name='__main__')\n"
          "except SystemExit:\n  pass\n"
          "print('ran once', os.environ.get('GLIBC_TUNABLES'))")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=120, env={k: v for k, v in os.environ.items()
                                       if k != "GLIBC_TUNABLES"})
  assert r.stdout.count("ran once") == 1 and "ran once None" in r.stdout, r.stderr[-2000:]
  assert not huge_pages.started_as("train")  # pytest's own command line


def test_the_training_programs_restart():
  """Each program that trains or times steps restarts itself when its configs ask (with its own
  `__spec__`, from which the restart reads the `python -m` name it was started under)."""
  callers = set()
  for folder in ("train", "experiments", "benchmarks", "eval"):
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
      if name.endswith(".py"):
        with open(os.path.join(ROOT, folder, name)) as f:
          if re.search(r"huge_pages\.restart_for\(.*?__spec__\)", f.read(), re.S):
            callers.add(f"{folder}.{name[:-3]}".removesuffix(".__main__"))
  assert {"train", "experiments.search", "experiments.sweep", "experiments.reproduce",
          "benchmarks.run", "benchmarks.step_profile", "benchmarks.step_variants"} <= callers


def test_a_run_asking_for_huge_pages_without_them_says_why():
  hp = "glibc.malloc.hugetlb"
  assert huge_pages.not_in_effect(False, {}) == ""
  assert huge_pages.not_in_effect(True, {"GLIBC_TUNABLES": f"a=1:{hp}=1"}) == ""
  assert "STRATA_HUGE_PAGES=0" in huge_pages.not_in_effect(True, {"STRATA_HUGE_PAGES": "0"})
  assert f"{hp}=0 sets it" in huge_pages.not_in_effect(True, {"GLIBC_TUNABLES": f"{hp}=0"})
  note = huge_pages.not_in_effect(True, {})
  assert note.startswith("train.huge_pages=True: running without") and "\n" not in note
  assert ("python -m" in note) == ON_GLIBC  # else: the platform's reason
