"""Shared fixtures: one prepared TFDS data directory per test session, and helpers to load
experiment files and run the CLI in a subprocess."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")
# The MNIST-1D paper's frozen data (the authors' published pickle as plain arrays x, y, x_test,
# y_test), kept in the repository so that a clone anywhere passes the suite.
FROZEN_MNIST1D = os.path.join(ROOT, "tests", "data", "mnist1d_frozen.npz")

# One XLA compilation cache for the whole run, made by the first process (pytest's) and inherited
# by the xdist workers and the command-line tools the tests start, so a program that several of
# them compile (the same tiny model's step) is compiled once. Empty at the start of every run.
# Every program is cached, however quick to compile: the many small ones (inits at optimisation
# level 0, evaluation steps) add up, and a second worker or tool loads them (0.5 s as the
# threshold: 338 s for the default suite here; 0: 304 s, 2026-12-03).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="strata-tests-xla-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  atexit.register(shutil.rmtree, _CACHE, True)

# XLA's CPU backend at optimisation level 0, with its older (LLVM elemental) fusion emitters
# instead of the MLIR fusion emitters jax 0.10 uses by default: compiling, not running, is most of
# this suite's time. Level 0 compiles 1.5-3x faster (a tiny UNet's init: 14 s -> 4.5 s); the older
# emitters compile a further third faster (a tiny GAN's init: 1.33 s -> 0.90 s; the default suite
# 305-349 s -> 186 s, 2026-12-03, docs/testing.md). What the tests check does not depend on either:
# numerics are compared with references at tolerances, and runs that must agree bit for bit run
# under the same flags. STRATA_TEST_XLA_DEFAULT=1 keeps XLA's defaults (for a run that should see
# exactly what production compiles).
if not os.environ.get("STRATA_TEST_XLA_DEFAULT") and \
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = ("--xla_backend_optimization_level=0 "
                             "--xla_cpu_use_fusion_emitters=false " +
                             os.environ.get("XLA_FLAGS", "")).strip()


def pytest_ignore_collect(collection_path, config):
  """A module marked slow as a whole is not imported when slow tests are deselected (the
  default `-m 'not slow'`): its imports (PyTorch: 2 s) would cost every worker for nothing."""
  if config.getoption("markexpr", "") != "not slow" or collection_path.suffix != ".py":
    return None
  if not collection_path.name.startswith("test_"):
    return None
  with open(collection_path) as f:
    return "\npytestmark = pytest.mark.slow\n" in f.read() or None


def data_config(source: str, data_dir: str, **fields):
  """`config.data` of the base config for `source` in `data_dir`, with `fields` set (a dict value
  sets fields of that section: `augment={"shift": 3}`)."""
  from train import config as config_lib

  c = config_lib.base().data
  c.source, c.data_dir = source, data_dir
  for k, v in fields.items():
    if isinstance(v, dict):
      for kk, vv in v.items():
        c[k][kk] = vv
    else:
      c[k] = v
  return c


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir with the offline sources prepared once for the whole session."""

  from data import sources
  from train import config as config_lib

  path = str(tmp_path_factory.mktemp("tfds"))
  for name in ("digits", "breast_cancer", "mnist1d"):
    c = config_lib.base().data
    c.source, c.data_dir = name, path
    sources.source_info(c)
  return path


# Runs trained once per test session and shared by the xdist workers (`trained`): made by the
# first process, inherited by the workers, removed at the end.
if "STRATA_TEST_TRAINED" not in os.environ:
  os.environ["STRATA_TEST_TRAINED"] = tempfile.mkdtemp(prefix="strata-tests-trained-")
  atexit.register(shutil.rmtree, os.environ["STRATA_TEST_TRAINED"], True)


@pytest.fixture(scope="session")
def trained(data_dir):
  """`trained(name)`: the workdir of experiment `name` trained once in tiny mode per session;
  `trained(name, steps=N)`: its full config trained for N steps (evaluated and checkpointed at
  the end only). One training for all the workers: the first to ask trains it under a file
  lock, the others wait for it and reuse it (the run's config names the first worker's data
  directory, which lives as long as the session). Tests read these workdirs; a test that writes
  into one passes its own --out."""
  import fcntl

  from train import files, loop

  def get(name: str, steps: int | None = None) -> str:
    workdir = os.path.join(os.environ["STRATA_TEST_TRAINED"], f"{name}_{steps or 'tiny'}")
    with open(workdir + ".lock", "w") as lock:
      fcntl.lockf(lock, fcntl.LOCK_EX)  # waits while another worker trains it
      if not os.path.exists(os.path.join(workdir, files.SUMMARY)):
        shutil.rmtree(workdir, ignore_errors=True)  # a failed attempt's leftovers
        config = load_experiment(name, None if steps else "tiny", data_dir)
        if steps:
          config.train.steps = steps
          config.train.log_every = min(config.train.log_every, steps)
          config.train.eval_every = config.train.checkpoint_every = 0
        loop.train_and_evaluate(config, workdir)
    return workdir
  return get


def mock_catalog(num_examples: int):
  """TFDS's own mock data for catalog datasets (`data.abstract.mock_source`): random examples
  with the real dataset's feature spec, encoded and decoded as the real ones are."""
  from data import abstract

  return abstract.mock_source(num_examples)


def load_experiment(name: str, arg: str | None = None, data_dir: str | None = None):
  """`experiments/<name>.py:get_config(arg)` through `train.config.load`, with `data_dir` set."""
  from train import config as config_lib

  config = config_lib.load(f"experiments.{name}" + (f":{arg}" if arg else ""))
  if data_dir is not None:
    with config.unlocked():
      config.data.data_dir = data_dir
  return config


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, timeout: int = 300,
            **kwargs) -> subprocess.CompletedProcess:
  """`python -m train ARGS` from the repository root."""
  env = dict(os.environ)
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, **kwargs)
