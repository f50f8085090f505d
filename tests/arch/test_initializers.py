import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import arch


def _params(name, x, **kw):
  return arch.build({"name": name, "num_classes": 7, **kw}).init(jax.random.key(0), x)["params"]


def test_torch_init_is_uniform_within_one_over_sqrt_fan_in():
  # PyTorch's nn.Conv1d / nn.Linear default: kernel and bias ~ U(+-1/sqrt(fan_in)), fan_in =
  # kernel size x input channels. A KS test against that uniform, not just a bound check.
  p = _params("cnn.CNN", jnp.ones((2, 40, 8)), features=(64,), kernel_sizes=5, strides=1,
              padding="SAME", weight_init="torch")
  for layer, fan_in in (("conv0", 5 * 8), ("head", 40 * 64)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in ("kernel", "bias"):
      v = np.asarray(p[layer][leaf]).ravel()
      assert np.abs(v).max() <= bound
      if v.size > 500:
        assert stats.kstest(v, stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3, (layer, leaf)
  mlp = _params("mlp.MLP", jnp.ones((2, 30)), widths=(50,), weight_init="torch")
  assert np.abs(np.asarray(mlp["dense0"]["bias"])).max() <= 1 / np.sqrt(30)
  assert np.abs(np.asarray(mlp["dense0"]["bias"])).max() > 0.5 / np.sqrt(30)


def test_default_init_is_flax_lecun_normal_with_zero_bias():
  p = _params("mlp.MLP", jnp.ones((2, 400)), widths=(300,))
  k = np.asarray(p["dense0"]["kernel"])
  np.testing.assert_allclose(k.std(), np.sqrt(1 / 400), rtol=0.03)
  assert not np.asarray(p["dense0"]["bias"]).any()


def test_unknown_init_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"model.weight_init='kaiming'.*'torch'"):
    _params("mlp.MLP", jnp.ones((1, 3)), weight_init="kaiming")
