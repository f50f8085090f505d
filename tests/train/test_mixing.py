"""Mixup and CutMix against NumPy: each example mixed with its neighbour, targets by the share."""

import jax
import jax.numpy as jnp
import numpy as np

from train import mixing


def test_mixup_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 4, 4, 3)).astype(np.float32)
  t = np.eye(3)[[0, 1, 2, 0, 1]].astype(np.float32)
  mx, mt = mixing.mixup(jnp.asarray(x), jnp.asarray(t), 0.3)
  partner = x[[4, 0, 1, 2, 3]]  # example i mixes with example i - 1 (rolled by one)
  np.testing.assert_allclose(mx, 0.3 * x + 0.7 * partner, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(mt, 0.3 * t + 0.7 * t[[4, 0, 1, 2, 3]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(mt).sum(1), 1.0, rtol=1e-6)


def test_cutmix_pastes_the_box_and_weighs_targets_by_its_area():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 10, 8, 2)).astype(np.float32)
  t = np.eye(3, dtype=np.float32)
  lam, cy, cx = 0.64, 2, 6  # sides sqrt(0.36) = 0.6: 6 x 4, clipped at the top and the right
  mx, mt = mixing.cutmix(jnp.asarray(x), jnp.asarray(t), lam, cy, cx)
  top, bottom, left, right = 0, 5, 4, 8  # (2 - 3, 2 + 3) and (6 - 2, 6 + 2), clipped
  want = x.copy()
  want[:, top:bottom, left:right] = x[[2, 0, 1], top:bottom, left:right]
  np.testing.assert_array_equal(np.asarray(mx), want)
  kept = 1 - (bottom - top) * (right - left) / 80
  np.testing.assert_allclose(mt, kept * t + (1 - kept) * t[[2, 0, 1]], rtol=1e-6)


def test_mix_is_seeded_and_off_when_both_are_zero():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  t = jnp.eye(2)
  same = mixing.mix(jax.random.key(0), x, t, 0.0, 0.0)
  assert same[0] is x and same[1] is t
  a = mixing.mix(jax.random.key(3), x, t, 0.2, 1.0)
  b = mixing.mix(jax.random.key(3), x, t, 0.2, 1.0)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_allclose(np.asarray(a[1]).sum(1), 1.0, rtol=1e-6)
