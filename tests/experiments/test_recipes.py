"""The catalog recipes against their anchors (docs/recipes.md): the learning rate of each at
steps 0, the end of warm-up, half-way and last equals the anchor's own formula (transcribed in
benchmarks/recipe_anchors.py), the models have the published parameter counts, and the ViT's
dense kernels follow big_vision's Xavier-uniform initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from benchmarks import recipe_anchors
from tests.conftest import load_experiment


@pytest.mark.parametrize("name", recipe_anchors.RECIPES)
def test_each_recipes_schedule_equals_its_anchors_formula(name):
  rows = recipe_anchors.rows(name)
  assert len(rows) >= 4
  for label, ours, theirs in rows:
    # float32 (optax) against float64: equal to rounding; 0 and 7e-11 at the last step
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-8), (name, label)
  config = load_experiment(name)
  if config.optim.warmup_steps:  # the warm-up is taken: 0 at the start, the peak at its end
    assert rows[0][1] == 0.0 and rows[1][1] == pytest.approx(config.optim.learning_rate)


def test_the_anchor_formulas_are_not_our_schedule():
  # a schedule that ignored its warm-up (the bug this guards) disagrees at step 0
  assert recipe_anchors.flax_imagenet(0, 0.4, 6255, 118845) == 0.0
  assert recipe_anchors.big_vision(5000, 1e-3, 10_000, 111_476) == pytest.approx(5e-4, rel=1e-3)
  assert recipe_anchors.he2016(47_999) == pytest.approx(0.01)


def _count(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def test_resnet20_recipe_has_the_papers_parameter_count():
  config = load_experiment("cifar10_resnet20")
  assert _count(arch.build(config.model), (1, 32, 32, 3)) == 269_722  # option A, the paper's
  config = load_experiment("cifar10_resnet20", "projection")
  assert _count(arch.build(config.model), (1, 32, 32, 3)) == 272_474


@pytest.mark.parametrize("dense_init", ["lecun_normal", "xavier_uniform"])
def test_vit_dense_kernels_follow_the_chosen_initialiser(dense_init):
  width, mlp = 64, 256
  model = arch.build(dict(name="transformer.TransformerClassifier", num_classes=10, width=width,
                          depth=1, num_heads=4, mlp_dim=mlp, patch_size=8, pool="mean",
                          positions="sincos2d", max_len=16, dense_init=dense_init))
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]["encoder"]["block0"]
  kernel = np.asarray(params["mlp_in"]["kernel"])       # (64, 256)
  query = np.asarray(params["attn"]["query"]["kernel"]).reshape(width, width)
  if dense_init == "xavier_uniform":  # U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    for k, (fan_in, fan_out) in ((kernel, (width, mlp)), (query, (width, width))):
      bound = np.sqrt(6 / (fan_in + fan_out))
      assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
      assert k.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
    bias = np.asarray(params["mlp_in"]["bias"])
    assert 0 < np.abs(bias).max() < 1e-5  # N(0, 1e-6)
  else:  # flax's default: truncated normal with variance 1 / fan_in, zero biases
    assert kernel.std() == pytest.approx(np.sqrt(1 / width), rel=0.05)
    assert not np.asarray(params["mlp_in"]["bias"]).any()
