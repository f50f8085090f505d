"""The import graph of arch/, data/, train/, eval/, experiments/ and benchmarks/ has no circle,
counting every import in a file, also those inside functions (a function-local import hides a
circle from Python, not from this test), and the layers point one way:
arch <- data <- train <- eval <- experiments <- benchmarks.

One exception, named here: `train.evaluators.TYPES` names evaluator factories in eval/ by string,
imported only when a config asks for that type (big_vision's trainer finds its evaluators the same
way), so that a run can evaluate with what eval/ offers while train/ imports nothing of eval/."""

from __future__ import annotations

import ast
import os

import pytest

from tests.conftest import ROOT

PACKAGES = ("arch", "data", "train", "eval", "experiments", "benchmarks")
# Which packages each may import: arch stands alone, data knows none, train knows arch and data,
# eval knows everything below it, experiments (files, recipes, sweeps and search) everything but
# benchmarks, benchmarks everything.
ALLOWED = {"arch": {"arch"}, "data": {"data"}, "train": {"arch", "data", "train"},
           "eval": {"arch", "data", "train", "eval"},
           "experiments": {"arch", "data", "train", "eval", "experiments"},
           "benchmarks": set(PACKAGES)}


def _modules(root: str) -> dict[str, str]:
  """{dotted module name: file path} of every module in PACKAGES."""
  out = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, f), root)[:-3].replace(os.sep, ".")
          out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(
              folder, f)
  return out


def import_graph(root: str = ROOT) -> dict[str, set[str]]:
  """{module: the project modules it imports anywhere in its file}. `from P import X` counts as
  an import of `P.X` when that is a module, else of `P`."""
  modules = _modules(root)
  graph: dict[str, set[str]] = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets: set[str] = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          base = name if is_package else name.rpartition(".")[0]
          for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
          module = f"{base}.{node.module}" if node.module else base
        else:
          module = node.module or ""
        found = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                 for a in node.names]
      else:
        continue
      for target in found:
        while target and target not in modules:  # `import a.b.c` of a non-module attribute
          target = target.rpartition(".")[0]
        # A package's __init__ that a submodule's import runs first is not counted: it is a
        # circle only where the submodule asks the __init__ for a name (`from data import X`).
        targets.add(target)
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import circle as [a, b, ..., a], or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_no_import_circle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layers_point_down():
  wrong = sorted(f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
                 if b.split(".")[0] not in ALLOWED[a.split(".")[0]])
  assert not wrong, wrong


def test_the_checker_sees_a_circle_inside_a_function(tmp_path):
  """The check itself: a circle closed only by a function-local import is found."""
  for package in PACKAGES:
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
  (tmp_path / "train" / "a.py").write_text("from train import b\n")
  (tmp_path / "train" / "b.py").write_text("def f():\n  from train.a import x\n  return x\n")
  assert find_cycle(import_graph(str(tmp_path))) == ["train.a", "train.b", "train.a"]
  (tmp_path / "train" / "b.py").write_text("import numpy\n")
  assert find_cycle(import_graph(str(tmp_path))) is None


def test_eval_modules_share_helpers_not_each_others_tools():
  """A tool (a module run with `python -m`) is imported by no other module of eval/: what two
  tools share lives in a module of helpers (eval.sample_quality, eval.attention_maps, ...)."""
  modules = _modules(ROOT)
  tools = {name for name, path in modules.items() if name.startswith("eval.") and
           'if __name__ == "__main__"' in open(path).read()}
  wrong = sorted(f"{a} imports the tool {b}" for a, targets in import_graph().items()
                 if a.startswith("eval") for b in targets if b in tools and b != a)
  assert not wrong, wrong


def test_every_evaluator_type_names_a_factory_in_eval():
  import importlib

  from train import evaluators

  for name, target in evaluators.TYPES.items():
    module, _, attr = target.partition(":")
    assert module.split(".")[0] == "eval", (name, target)
    assert callable(getattr(importlib.import_module(module), attr)), (name, target)


@pytest.mark.parametrize("package", PACKAGES[:5])  # benchmarks import torch, an extra
def test_every_module_imports(package):
  """Code that rots unseen: every module of the package imports on its own."""
  import importlib

  for name in sorted(m for m in _modules(ROOT) if m.split(".")[0] == package):
    if not name.endswith("__main__"):
      importlib.import_module(name)


def test_a_training_run_imports_no_optional_heavyweights(tmp_path, data_dir):
  """A run of the default experiment loads what it uses: PyTorch (which tensorboardX's package
  imports whenever it is installed: 4.5 s), the forecasting series' statsmodels and pandas
  (1.6 s), the search's optuna, the audit's cleanlab, scikit-learn and the reference libraries
  stay out until a run asks for them. Read from the run's own `-X importtime` lines. The data
  is prepared (`data_dir`): building MNIST-1D once imports the mnist1d package, whose utils
  import matplotlib; the run read the default data dir before, and failed in CI whenever no
  earlier test had built the data there."""
  import re
  import subprocess
  import sys

  r = subprocess.run([sys.executable, "-X", "importtime", "-m", "train", "--config",
                      "experiments/mnist1d_cnn.py:tiny", "--workdir", str(tmp_path / "run"),
                      f"--config.data.data_dir={data_dir}"],
                     capture_output=True, text=True, cwd=ROOT, timeout=300,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stderr[-2000:]
  imported = set(re.findall(r"^import time:.*\|\s+([\w.]+)$", r.stderr, re.M))
  assert len(imported) > 500  # the lines are there: jax alone imports hundreds of modules
  heavy = ("torch", "tensorboardX", "statsmodels", "pandas", "optuna", "cleanlab", "sklearn",
           "transformers", "timm", "matplotlib")
  assert not sorted(m for m in imported if m.split(".")[0] in heavy)
