import functools
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch


def _count(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,kwargs,shape,params", [
    # Reference counts: the MNIST-1D paper's PyTorch models, LeNet-5, He et al.'s ResNet-20,
    # torchvision's ResNet-18 with a 10-class head.
    ("mlp.MLP", dict(widths=()), (2, 40), 410),
    ("mlp.MLP", dict(widths=(100, 100)), (2, 40), 15_210),
    ("cnn.CNN", dict(features=(25, 25, 25), kernel_sizes=(5, 3, 3), strides=2, padding=1),
     (2, 40), 5_210),
    ("cnn.LeNet5", {}, (2, 28, 28, 1), 61_706),
    # ResNet-20: option-A shortcuts as the paper (its 0.27M), and with projection shortcuts.
    ("cnn.ResNet20", {}, (2, 32, 32, 3), 269_722),
    ("cnn.ResNet20", dict(shortcut="projection"), (2, 32, 32, 3), 272_474),
    ("cnn.ResNet18", {}, (2, 64, 64, 3), 11_181_642),
    ("cnn.ResNet", dict(ndim=1, stage_sizes=(1,), widths=(8,)), (2, 40, 1), None),
])
def test_shapes_and_parameter_counts(name, kwargs, shape, params):
  model = arch.build({"name": name, "num_classes": 10, **kwargs})
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
  if params is not None:
    assert _count(variables) == params
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
  assert out.shape == (2, 10)


def test_option_a_shortcut_subsamples_and_appends_zero_channels():
  from arch.cnn import ResidualBlock

  # The last BatchNorm's scale starts at zero, so a fresh block is relu(shortcut(x)) exactly.
  norm = functools.partial(nn.BatchNorm, use_running_average=False)
  block = ResidualBlock(8, 2, 2, 3, norm, jnp.float32, jnp.float32, shortcut="zero_pad")
  x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
  variables = block.init(jax.random.key(0), x)
  assert not any("proj" in k for k in variables["params"])
  out = np.asarray(block.apply(variables, x, mutable=["batch_stats"])[0])
  expected = np.zeros((2, 3, 3, 8), np.float32)
  expected[..., :3] = np.maximum(np.asarray(x)[:, ::2, ::2], 0)
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_own_code_can_import_init_and_apply_resnet():
  from arch.cnn import ResNet

  model = ResNet(num_classes=3, stage_sizes=(1, 1), widths=(4, 8))
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 3)
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))  # BN statistics moved
  np.testing.assert_allclose(model.apply(variables, x, train=False), model.apply(
      variables, x, train=False))


def test_arch_imports_nothing_from_train_data_or_eval():
  code = ("import sys, arch, arch.cnn, arch.mlp; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('train', 'data', 'eval')]; "
          "print(bad); sys.exit(1 if bad else 0)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr


def test_residual_mlp_equals_numpy():
  # The MNIST-1D paper's MLPBase: h = relu(W1 x); h = h + relu(W2 h); W3 h. The skip is only
  # where a layer keeps its input's width (not around the 40 -> 16 layer here).
  model = arch.build({"name": "mlp.MLP", "num_classes": 3, "widths": (16, 16, 8),
                      "residual": True})
  x = np.random.default_rng(0).normal(size=(5, 40))
  with jax.enable_x64(True):
    v = model.init(jax.random.key(0), jnp.zeros((1, 40)))
    p = jax.tree.map(np.asarray, v["params"])
    out = np.asarray(model.clone(dtype=jnp.float64, param_dtype=jnp.float64).apply(
        v, jnp.asarray(x)))

  def dense(name, h):
    return h @ p[name]["kernel"] + p[name]["bias"]

  h = np.maximum(dense("dense0", x), 0)
  h = h + np.maximum(dense("dense1", h), 0)
  h = np.maximum(dense("dense2", h), 0)
  np.testing.assert_allclose(out, dense("head", h), rtol=1e-5)
  plain = model.clone(residual=False).apply(v, jnp.asarray(x, jnp.float32))
  assert not np.allclose(plain, out, atol=1e-3)


def test_dropout_differs_in_training_only():
  model = arch.build({"name": "mlp.MLP", "num_classes": 4, "widths": (32,), "dropout": 0.5})
  x = jnp.ones((3, 10))
  v = model.init(jax.random.key(0), x)
  a = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(model.apply(v, x), model.apply(v, x))


def test_registry_errors_name_the_valid_choices():
  with pytest.raises(ValueError, match=r"model.name='cnn.Nope'.*cnn.ResNet20"):
    arch.build({"name": "cnn.Nope", "num_classes": 2})
  with pytest.raises(ValueError, match=r"model.widht is not an argument of mlp.MLP.*widths"):
    arch.build({"name": "mlp.MLP", "num_classes": 2, "widht": (3,)})
  with pytest.raises(ValueError, match=r"model.activation='relux'"):
    m = arch.build({"name": "mlp.MLP", "num_classes": 2, "activation": "relux"})
    m.init(jax.random.key(0), jnp.ones((1, 3)))


def test_features_are_sown_for_transfer_learning():
  model = arch.build({"name": "cnn.ResNetTiny", "num_classes": 5, "ndim": 1})
  x = jnp.ones((2, 12))
  v = model.init(jax.random.key(0), x)
  _, inter = model.apply(v, x, mutable=["intermediates"])
  assert inter["intermediates"]["features"][0].shape == (2, 8)
