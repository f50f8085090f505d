"""RandAugment's ops against NumPy references written from their definitions (big_vision's
`pp/autoaugment.py` semantics), and the policy's determinism."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data import randaugment as ra


@pytest.fixture
def image() -> np.ndarray:
  rng = np.random.default_rng(0)
  base = np.linspace(20, 230, 48)[None, :, None] * np.ones((40, 1, 3))
  return np.clip(base + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)


def _op(image, op, magnitude, seed=0):
  return np.asarray(ra.apply(Image.fromarray(image), op, magnitude, np.random.default_rng(seed)))


def _grey(x):  # ITU-R 601-2 luma, as PIL's "L" conversion
  return (x[..., 0] * 299 + x[..., 1] * 587 + x[..., 2] * 114 + 500) // 1000


def _blend(degenerate, x, factor):
  return np.clip(degenerate + factor * (x - degenerate), 0, 255)


def test_pixelwise_ops_equal_their_definitions(image):
  x = image.astype(np.int64)
  np.testing.assert_array_equal(_op(image, "Invert", 10), 255 - x)
  np.testing.assert_array_equal(_op(image, "Posterize", 7), (x >> 6) << 6)   # int(2.8) = 2 bits
  np.testing.assert_array_equal(_op(image, "Posterize", 2), 0)              # 0 bits: black
  np.testing.assert_array_equal(_op(image, "Solarize", 5), np.where(x < 128, x, 255 - x))
  np.testing.assert_array_equal(_op(image, "Solarize", 10), x)    # threshold 256: unchanged
  np.testing.assert_array_equal(_op(image, "SolarizeAdd", 10),
                                np.where(x < 128, np.minimum(x + 110, 255), x))
  for c in range(3):  # autocontrast: each channel stretched to 0..255
    lo, hi = x[..., c].min(), x[..., c].max()
    want = np.clip(np.round((x[..., c] - lo) * 255.0 / (hi - lo)), 0, 255)
    assert np.abs(_op(image, "AutoContrast", 10)[..., c] - want).max() <= 1


def test_equalize_follows_the_histogram_lut(image):
  got = _op(image, "Equalize", 10)
  for c in range(3):
    ch = image[..., c].astype(np.int64)
    hist = np.bincount(ch.ravel(), minlength=256)
    step = (hist.sum() - hist[np.flatnonzero(hist)[-1]]) // 255
    lut = np.concatenate([[0], (np.cumsum(hist) + step // 2) // step])[:256]
    np.testing.assert_array_equal(got[..., c], np.clip(lut, 0, 255)[ch])


@pytest.mark.parametrize("magnitude", [3, 10])
def test_enhance_ops_blend_with_their_degenerate_image(image, magnitude):
  x = image.astype(np.float64)
  f = 0.1 + 1.8 * magnitude / 10
  grey = _grey(image.astype(np.int64)).astype(np.float64)
  refs = {
      "Brightness": _blend(np.zeros_like(x), x, f),
      "Color": _blend(np.repeat(grey[..., None], 3, -1), x, f),
      "Contrast": _blend(np.full_like(x, np.floor(grey.mean() + 0.5)), x, f),
  }
  smooth = np.zeros_like(x)  # PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, borders kept
  kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
  for dy in range(3):
    for dx in range(3):
      smooth[1:-1, 1:-1] += kernel[dy, dx] * x[dy:dy + x.shape[0] - 2, dx:dx + x.shape[1] - 2]
  smooth = np.clip(np.round(smooth), 0, 255)
  smooth[[0, -1]], smooth[:, [0, -1]] = x[[0, -1]], x[:, [0, -1]]
  refs["Sharpness"] = _blend(smooth, x, f)
  for op, want in refs.items():
    diff = np.abs(_op(image, op, magnitude).astype(np.float64) - want)
    assert diff.max() <= 1.5, (op, diff.max())


def _nearest_affine(x, a, b, c, d, e, f):
  """Output (col, row) samples input (a col + b row + c, d col + e row + f) at pixel centres."""
  h, w = x.shape[:2]
  rows, cols = np.mgrid[0:h, 0:w] + 0.5
  sx, sy = a * cols + b * rows + c, d * cols + e * rows + f
  ix, iy = np.floor(sx).astype(int), np.floor(sy).astype(int)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  out = np.full_like(x, 128)
  out[inside] = x[iy[inside], ix[inside]]
  return out


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops_sample_the_sheared_or_shifted_grid(image, op):
  for seed in range(4):  # both signs
    sign = -1.0 if np.random.default_rng(seed).random() < 0.5 else 1.0
    m = {"ShearX": (1, 0.3 * sign, 0, 0, 1, 0), "ShearY": (1, 0, 0, 0.3 * sign, 1, 0),
         "TranslateX": (1, 0, 10 * sign, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, 10 * sign)}[op]
    got = _op(image, op, 10 if op.startswith("Shear") else 1, seed)
    want = _nearest_affine(image, *m)
    # Pixel centres that fall exactly on a boundary may round either way.
    assert (got != want).any(-1).mean() < 0.01, op


def test_rotate_and_cutout(image):
  got = _op(image, "Rotate", 10)
  assert (got == 128).all(-1).sum() > 0              # corners uncovered by a 30 degree turn
  centre = image.shape[0] // 2, image.shape[1] // 2
  np.testing.assert_array_equal(got[centre], image[centre])  # the centre stays
  got = _op(image, "Cutout", 1, seed=3)              # a 8 x 8 grey square
  grey = (got == 128).all(-1) & (image != 128).any(-1)
  rng = np.random.default_rng(3)
  cy, cx = int(rng.integers(40)), int(rng.integers(48))
  box = np.zeros(grey.shape, bool)
  box[max(0, cy - 4):cy + 4, max(0, cx - 4):cx + 4] = True
  np.testing.assert_array_equal(grey, box & (image != 128).any(-1))
  np.testing.assert_array_equal(got[~box], image[~box])


def test_the_policy_is_a_function_of_the_generator(image):
  a = ra.randaugment(image, np.random.default_rng([5, 7]), 2, 10)
  b = ra.randaugment(image, np.random.default_rng([5, 7]), 2, 10)
  np.testing.assert_array_equal(a, b)
  # At magnitude 10 a 100-pixel translation greys out this small image; 2 keeps it visible.
  outs = {ra.randaugment(image, np.random.default_rng(s), 2, 2).tobytes() for s in range(20)}
  assert len(outs) > 15                              # different draws, different images
  np.testing.assert_array_equal(ra.randaugment(image, np.random.default_rng(0), 0, 10), image)
  with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
    ra.randaugment(image[..., :1], np.random.default_rng(0))
