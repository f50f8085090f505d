"""The PyTorch twins are the same models as strata's: equal parameter counts at full size, equal
forward passes given equal weights (CNN, language model), and each trains a step. Needs the
`bench` extra (torch); skipped without it."""

import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# The benchmark's own machinery, with the slow checks (`-m slow`, and in CI).
pytestmark = pytest.mark.slow

from benchmarks import run, torch_workloads  # noqa: E402
from train import config as config_lib  # noqa: E402
from train import loop  # noqa: E402


def _config(name, data_dir, tiny=False):
  path = os.path.join(run.ROOT, "experiments", f"{run.WORKLOADS[name][0]}.py")
  config = config_lib.load(path + (":tiny" if tiny else ""))
  config.data.data_dir = data_dir
  return config


def _strata(config):
  built = loop.build(config)
  return built, jax.tree.map(np.asarray, built.example)


@pytest.mark.parametrize("name", list(run.WORKLOADS))
def test_twin_has_strata_parameter_count(name, data_dir):
  config = _config(name, data_dir)
  built, example = _strata(config)
  shapes = jax.eval_shape(built.init_state).params
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  assert torch_workloads.build(config, example).parameters == count


@pytest.mark.parametrize("name", ["mnist1d_cnn", "charlm_transformer"])
def test_twin_forward_equals_strata_with_the_same_weights(name, data_dir):
  config = _config(name, data_dir)
  built, example = _strata(config)
  params = built.init_state().params
  twin = torch_workloads.build(config, example)
  assert twin.parameters == sum(int(np.size(p)) for p in jax.tree.leaves(params))
  torch_workloads.load_flax(twin, params)
  ours = built.model.apply({"params": params}, example["inputs"])
  with torch.no_grad():
    theirs = twin.model(twin.convert(example)["inputs"]).numpy()
  np.testing.assert_allclose(theirs, np.asarray(ours), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(run.WORKLOADS))
def test_twin_trains_a_tiny_step(name, data_dir):
  config = _config(name, data_dir, tiny=True)
  _, example = _strata(config)
  twin = torch_workloads.build(config, example)
  before = [p.detach().clone() for p in twin.model.parameters()]
  batch = twin.convert(example)
  losses = [twin.step(batch) for _ in range(2)]  # a warm-up schedule's first rate is 0
  assert all(torch.isfinite(loss) for loss in losses)
  assert any(not torch.equal(a, b) for a, b in zip(before, twin.model.parameters()))


def test_unsupported_feature_is_a_clear_error(data_dir):
  config = _config("mnist1d_cnn", data_dir, tiny=True)
  _, example = _strata(config)
  config.model.ndim = 2
  with pytest.raises(ValueError, match="model.ndim=2: the PyTorch CNN twin is 1-D"):
    torch_workloads.build(config, example)
