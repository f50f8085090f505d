"""Every command-line tool answers a bad command line with one line, `error: ...`, exit status
2, and a failure while running with one line and exit status 1, never a traceback (`train.cli`).
The tools are found, not listed: every module of train/, eval/, experiments/ and benchmarks/
that runs as a program."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGES = ("train", "eval", "experiments", "benchmarks")


def tools() -> list[str]:
  """Module names (`eval.report`, `train`, ...) of every file with a `__main__` block."""
  out = []
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for f in sorted(files):
        path = os.path.join(folder, f)
        if f.endswith(".py"):
          with open(path) as fh:
            if not re.search(r'^if __name__ == "__main__":', fh.read(), re.M):
              continue
          name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          out.append(name[:-len(".__main__")] if name.endswith(".__main__") else name)
  return sorted(out)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), (r.args, r.returncode,
                                                             r.stdout[-2000:], r.stderr[-3000:])
  assert "Traceback" not in r.stderr + r.stdout
  return lines[0]


def test_the_tools_are_found():
  assert {"train", "train.generate", "eval", "eval.generative", "eval.drift", "eval.attention",
          "eval.compress", "eval.lm", "eval.reconstruction", "experiments.sweep",
          "experiments.reproduce", "experiments.compare", "benchmarks.run",
          "benchmarks.lm_ablation"} <= set(tools())


# Runs each tool as `python -m TOOL --no_such_flag=1` would, in a child forked from one
# interpreter that has imported the heavy libraries and the shared project modules once (the
# tools differ in their own code only; 25 fresh interpreters would spend a minute importing jax
# and TFDS, and each child importing matplotlib, Optuna and statsmodels another 15 s).
_FORKED = r"""
import json, os, runpy, sys, tempfile, traceback
import absl.flags, flax, grain, jax, ml_collections, optax, orbax.checkpoint, tensorflow_datasets
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot, optuna, scipy.stats, sklearn.linear_model, statsmodels.api
import arch, data, train.loop, train.restored
out = {}
for key, (tool, *args) in json.loads(sys.argv[1]).items():
  err = tempfile.TemporaryFile(mode="w+")
  pid = os.fork()
  if pid == 0:
    os.dup2(err.fileno(), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.argv = [tool, *args]
    try:
      runpy.run_module(tool, run_name="__main__", alter_sys=True)
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
      traceback.print_exc()
      code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  _, status = os.waitpid(pid, 0)
  err.seek(0)
  out[key] = [os.waitstatus_to_exitcode(status), err.read()]
print(json.dumps(out))
"""


def _run_forked(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
  """{key: [module, *args]} run as `python -m module args` would be, each in its own child of one
  interpreter (above); {key: finished process} with the exit status and stderr."""
  import json

  r = subprocess.run([sys.executable, "-c", _FORKED, json.dumps(commands)], cwd=ROOT,
                     capture_output=True, text=True, timeout=600,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads(r.stdout.strip().splitlines()[-1])
  assert sorted(results) == sorted(commands)
  return {k: subprocess.CompletedProcess(commands[k], status, "", stderr)
          for k, (status, stderr) in results.items()}


def _usage_errors(tmp: str) -> dict[str, list[str]]:
  """Usage and config mistakes, each with its command (the expected lines are below)."""
  return {
      "typo": ["train", "--config", "experiments/mnist1d_cnn.py:tiny", "--config.optim.lr=1"],
      "type": ["train", "--config", "experiments.mnist1d_cnn:tiny",
               "--config.train.steps=many"],
      "value": ["train", "--config", "experiments/mnist1d_cnn.py:tiny",
                "--config.optim.name=adm"],
      "arg": ["train", "--config", "experiments/mnist1d_cnn.py:huge"],
      "stray": ["train", "--config", "experiments/mnist1d_cnn.py:tiny", "extra"],
      "missing": ["eval", "--workdir", f"{tmp}/nothing_here"],
      "sweep": ["experiments.sweep", "--config", "experiments/mnist1d_cnn.py:tiny",
                "--sweep", "optim.lr=[1,2]", "--workdir", f"{tmp}/sweep"],
      "forecast": ["eval.forecast", "--workdir", f"{tmp}/nothing_here"],
      "search": ["experiments.search", "--config", "experiments/mnist1d_cnn.py:tiny",
                 "--space", "optim.learning_rate=loguniform(1e-3,1e-1)", "--sampler", "grid",
                 "--workdir", f"{tmp}/search"],
      "space": ["experiments.search", "--config", "experiments/mnist1d_cnn.py:tiny",
                "--space", "optim.learning_rate", "--workdir", f"{tmp}/search2"],
      "shard": ["experiments.sweep", "--config", "experiments/mnist1d_cnn.py:tiny",
                "--sweep", "optim.learning_rate=[0.1,0.2]", "--shard", "x",
                "--workdir", f"{tmp}/sweep2"],
      "model": ["train", "--config", "experiments/mnist1d_cnn.py:tiny",
                "--config.model.name=nope", "--workdir", f"{tmp}/model"],
      "gs": ["experiments.sweep", "--config", "experiments/mnist1d_cnn.py:tiny", "--sweep",
             "optim.learning_rate=[0.1,0.2]", "--shard", "0/2", "--workdir", "gs://b/run"],
      "search_gs": ["experiments.search", "--config", "experiments/mnist1d_cnn.py:tiny",
                    "--space", "optim.learning_rate=loguniform(1e-3,1e-1)", "--workdir",
                    "gs://b/search"],
      "topology": ["train", "--config", "experiments/mnist1d_cnn.py:tiny", "--topology", "v5e-4"],
      "slice": ["train", "--config", "experiments/mnist1d_cnn.py:tiny", "--dry_run",
                "--topology", "v5e-12"],
      "convert": ["train.convert", "--format", "timm", "--out", f"{tmp}/converted"],
      "suffix": ["train.convert", "--format", "timm", "--checkpoint", "README.md", "--out",
                 f"{tmp}/converted"],
      "tokenizer": ["train.tokenizer", "--vocab_size", "100", "--out", f"{tmp}/tok.json"],
  }


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
  """Every tool with a bad flag (key: the tool) and the usage mistakes (their keys), run in one
  forking interpreter for the module (its imports cost seconds; the slow tests run `python -m
  train` in fresh interpreters, as a user does)."""
  names = [t for t in tools()
           if t != "benchmarks.mnist1d_torch" or importlib.util.find_spec("torch")]
  commands = {t: [t, "--no_such_flag=1"] for t in names}
  commands.update(_usage_errors(str(tmp_path_factory.mktemp("usage"))))
  return _run_forked(commands), names


def test_every_tool_answers_a_bad_flag_with_one_line_and_status_2(forked):
  runs, names = forked
  for name in names:
    r = runs[name]
    line = _one_error_line(r)
    assert r.returncode == 2, (name, r.returncode, line)
    # argparse names missing required arguments before unknown ones
    assert "no_such_flag" in line or "required" in line, (name, line)


def test_train_names_the_mistyped_field_and_the_one_meant(forked):
  runs, _ = forked
  expected = {
      "typo": (2, "--config.optim.lr=1: the config has no field 'optim.lr'; did you mean "
                  "optim.learning_rate"),
      "type": (2, "train.steps='many' is a str; expected an int"),
      "value": (2, "optim.name='adm'; expected one of ['sgd'"),
      "arg": (2, "unknown argument 'huge'; expected one of ['tiny', 'augmented']"),
      "stray": (2, "unexpected arguments ['extra']"),
      "missing": (2, "nothing_here holds no config.json"),
      "sweep": (2, "'optim.lr'; did you mean optim.learning_rate"),
      "forecast": (2, "nothing_here holds no config.json"),
      "search": (2, "--sampler grid needs a flat space of lists; ['optim.learning_rate']"),
      "space": (2, "--space item 'optim.learning_rate': expected NAME=VALUES"),
      "shard": (2, "--shard='x'; expected I/N with integers"),
      "model": (2, "model.name='nope' is not a registered model"),
      "gs": (2, "--shard with --workdir=gs://b/run: shards of a sweep in object storage are not "
                "supported"),
      "search_gs": (2, "a search's default study is a SQLite file in its workdir"),
      "topology": (2, "--topology='v5e-4' compiles for a slice this host does not have; it "
                      "goes with --dry_run"),
      "slice": (2, "--topology='v5e-12': 12 chips is not a power of two"),
      "convert": (2, "--checkpoint is required"),
      "suffix": (2, "--checkpoint='README.md': unknown suffix '.md'"),
      "tokenizer": (2, "--vocab_size=100; expected more than the 256 bytes"),
  }
  # every usage or config error is status 2 (the contract in docs/guide.md)
  for key, (status, text) in expected.items():
    line = _one_error_line(runs[key])
    assert text in line, (key, line)
    if status is not None:
      assert runs[key].returncode == status, (key, runs[key].returncode, line)
    else:
      assert runs[key].returncode != 0
