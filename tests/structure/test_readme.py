"""The README is a doorway that cannot rot: at most 250 lines, every page it links exists, and the
three "How to extend" examples run as written (a new model, an experiment that uses it, and a new
paradigm that trains it)."""

from __future__ import annotations

import math
import os
import re
import sys

import pytest

from tests.conftest import ROOT

README = os.path.join(ROOT, "README.md")


def _text() -> str:
  with open(README) as f:
    return f.read()


def extension_files() -> dict[str, str]:
  """{relative path: code} of the python blocks under "## How to extend", each named by its
  first line, `# path`."""
  section = _text().split("## How to extend", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  return {b.splitlines()[0][2:].strip(): b for b in blocks}


def test_readme_is_short_and_its_links_exist():
  text = _text()
  assert len(text.splitlines()) <= 250
  links = re.findall(r"\]\(([^)#]+)\)", text)
  assert links, "the README points to no page"
  for link in links:
    assert os.path.exists(os.path.join(ROOT, link)), link
  for page in re.findall(r"`(docs/[\w/.-]+\.md)`", text):
    assert os.path.exists(os.path.join(ROOT, page)), page


def test_the_three_extension_examples_are_there():
  assert set(extension_files()) == {"mymodels.py", "experiments/digits_wide.py", "svm.py"}


@pytest.fixture
def extension(tmp_path, monkeypatch):
  """The README's example files written to a folder on sys.path; afterwards the model and the
  paradigm they register are taken out again."""
  import arch
  from train import paradigms

  for path, code in extension_files().items():
    os.makedirs(os.path.dirname(tmp_path / path), exist_ok=True)
    (tmp_path / path).write_text(code)
  monkeypatch.syspath_prepend(str(tmp_path))
  yield tmp_path
  arch.REGISTRY.pop("mymodels.WideMLP", None)
  paradigms.REGISTRY.pop("svm", None)
  for name in ("mymodels", "svm"):
    sys.modules.pop(name, None)


def test_the_new_experiment_trains_the_new_model(extension, data_dir):
  from train import config as config_lib
  from train import loop

  config = config_lib.load(str(extension / "experiments" / "digits_wide.py") + ":tiny")
  with config.unlocked():
    config.data.data_dir = data_dir
  config.train.steps = 100  # tiny's 20 steps, and then some, so that accuracy means something
  final = loop.train_and_evaluate(config, str(extension / "run_wide"))
  assert final["count"] == 360 and final["accuracy"] > 0.8, final
  with pytest.raises(config_lib.ConfigError, match="unknown argument 'huge'"):
    config_lib.load(str(extension / "experiments" / "digits_wide.py") + ":huge")


def test_the_new_paradigm_trains_and_checks_its_section(extension, data_dir):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import svm  # registers the paradigm

  import arch
  from train import config as config_lib
  from train import loop

  config = config_lib.load(str(extension / "experiments" / "digits_wide.py"))
  svm_config = config_lib.base("svm")
  with svm_config.unlocked():
    for section in ("data", "model", "optim"):
      svm_config[section] = config[section]
  svm_config.data.data_dir = data_dir
  config_lib.tiny(svm_config, steps=100)
  final = loop.train_and_evaluate(svm_config, str(extension / "run_svm"))
  assert final["count"] == 360 and final["accuracy"] > 0.8 and math.isfinite(final["loss"])

  # the hinge loss against NumPy on one batch
  model = arch.build(svm_config.model)
  batch = {"inputs": jnp.asarray(np.random.default_rng(0).normal(size=(5, 64)), jnp.float32),
           "label": jnp.asarray([0, 3, 9, 3, 1]), "mask": jnp.ones(5)}
  paradigm = svm.make(model, svm_config)
  state = paradigm.init(jax.random.key(0), batch)
  logits = np.asarray(paradigm.predict(state, batch["inputs"]), np.float64)
  y = 2.0 * np.eye(10)[np.asarray(batch["label"])] - 1.0
  expected = np.sum(np.maximum(0.0, 1.0 - y * logits) ** 2)
  sums = paradigm.eval_step(state, batch, None)
  np.testing.assert_allclose(float(sums["loss_sum"]), expected, rtol=1e-5)

  svm_config.svm.margin = 0.0
  with pytest.raises(config_lib.ConfigError, match=r"svm.margin=0.0; expected a positive"):
    config_lib.validate(svm_config)
