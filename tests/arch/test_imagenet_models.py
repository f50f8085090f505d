"""ResNet-50 and ViT-S/16 against the published parameter counts, and ViT's image patches
against a NumPy cut."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch.cnn import ResNet50
from arch.transformer import TransformerClassifier, ViTB16, ViTS16


def _count(model, x):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  return sum(a.size for a in jax.tree.leaves(shapes["params"]))


def test_parameter_counts_match_the_reference_implementations():
  x = jnp.zeros((1, 224, 224, 3))
  # torchvision.models.resnet50(): 25,557,032 parameters.
  assert _count(ResNet50(num_classes=1000), x) == 25_557_032
  # timm's vit_small_patch16_224: 22,050,664, less its CLS token (384) and learned position
  # table (197 x 384), plus big_vision's pre-logits layer (384 x 384 + 384).
  assert _count(ViTS16(num_classes=1000), x) == 22_050_664 - 384 - 197 * 384 + 384 * 385
  # timm's vit_base_patch16_224: 86,567,656, with the same differences at width 768.
  assert _count(ViTB16(num_classes=1000), x) == 86_567_656 - 768 - 197 * 768 + 768 * 769


def test_sincos2d_positions_pre_logits_and_zero_head():
  from arch.attention import sincos2d

  pe = np.asarray(sincos2d(3, 5, 8))
  for r in range(3):
    for c in range(5):
      want = []
      for f in (math.sin, math.cos):
        want += [f(c / 10_000.0 ** (k / 1)) for k in range(2)]
      for f in (math.sin, math.cos):
        want += [f(r / 10_000.0 ** (k / 1)) for k in range(2)]
      np.testing.assert_allclose(pe[r * 5 + c], want, rtol=1e-6, atol=1e-7)
  model = TransformerClassifier(num_classes=3, width=8, depth=1, num_heads=2, mlp_dim=8,
                                patch_size=4, max_len=6, pool="mean", positions="sincos2d",
                                pre_logits=8, head_zero_init=True)
  images = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), images)
  assert "position_embedding" not in str(jax.tree_util.tree_structure(variables))
  assert not np.asarray(variables["params"]["head"]["kernel"]).any()
  _, inter = model.apply(variables, images, mutable=["intermediates"])
  feats = np.asarray(inter["intermediates"]["features"][0])
  assert feats.shape == (2, 8) and np.abs(feats).max() < 1  # after tanh
  with pytest.raises(ValueError, match="sincos2d.*takes images"):
    model.init(jax.random.key(0), np.zeros((2, 12), np.float32))


def test_image_patches_are_row_major_p_by_p_cuts():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)
  model = TransformerClassifier(num_classes=3, width=8, depth=1, num_heads=2, mlp_dim=8,
                                patch_size=4, max_len=6, pool="mean")
  variables = model.init(jax.random.key(0), images)
  # The same network on the patches cut with NumPy, as a (B, 6, 48) sequence of features.
  patches = np.stack([images[:, i:i + 4, j:j + 4].reshape(2, -1)
                      for i in range(0, 8, 4) for j in range(0, 12, 4)], axis=1)
  on_tokens = TransformerClassifier(num_classes=3, width=8, depth=1, num_heads=2, mlp_dim=8,
                                    patch_size=1, max_len=6, pool="mean")
  np.testing.assert_allclose(model.apply(variables, images),
                             on_tokens.apply(variables, patches), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="not divisible into model.patch_size=5"):
    TransformerClassifier(num_classes=3, patch_size=5).init(jax.random.key(0), images)
