"""Image preprocessing ops against independent references: a float64 NumPy resampler, NumPy
slicing, PIL's own crop, flip and codecs."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from data import image_ops
from data.preprocess import Preprocess
from train import config as config_lib


def _triangle_weights(in_size: int, out_size: int, start: float, stop: float) -> np.ndarray:
  """(out_size, in_size) weights of an antialiased bilinear (triangle) filter over the input
  interval [start, stop): the filter widens by the shrink factor, as PIL's does."""
  scale = (stop - start) / out_size
  widen = max(scale, 1.0)
  w = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = start + (i + 0.5) * scale
    lo = max(int(center - widen + 0.5), 0)
    hi = min(int(center + widen + 0.5), in_size)
    j = np.arange(lo, hi)
    t = np.clip(1.0 - np.abs((j + 0.5 - center) / widen), 0.0, None)
    w[i, lo:hi] = t / t.sum()
  return w


def _reference_resize(image, height, width, box=None):
  h, w = image.shape[:2]
  left, top, right, bottom = box or (0, 0, w, h)
  wy = _triangle_weights(h, height, top, bottom)
  wx = _triangle_weights(w, width, left, right)
  return np.einsum("ih,hwc,jw->ijc", wy, image.astype(np.float64), wx)


@pytest.fixture(scope="module")
def image():
  rng = np.random.default_rng(0)
  # Smooth structure plus noise, 37 x 53 (odd sizes, not square).
  yy, xx = np.mgrid[0:37, 0:53]
  base = np.stack([128 + 100 * np.sin(xx / 5.0), 128 + 100 * np.cos(yy / 7.0),
                   (xx * yy) % 256], -1)
  return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(16, 16), (24, 40), (37, 53), (80, 101)])
def test_resize_matches_a_float64_antialiased_bilinear(image, size):
  out = image_ops.resize_box(image, *size)
  assert out.shape == (*size, 3) and out.dtype == np.uint8
  ref = _reference_resize(image, *size)
  # PIL rounds to uint8 between its horizontal and vertical passes: within 1 level.
  assert np.abs(out.astype(np.float64) - ref).max() <= 1.0 + 1e-9


def test_enlargements_match_a_float64_bilinear_closer_than_pil(image):
  # A box no larger than the output (most Inception crops) is resampled by OpenCV's affine warp:
  # within 0.53 level of the exact value where PIL, rounding between its passes, reaches 1. The
  # bound fails if these crops go back to PIL (checked: 1.0 on this set), and each filter reads
  # pixels beyond the box and at the image's edges as the float64 reference does.
  rng = np.random.default_rng(2)
  worst = {"ops": 0.0, "pil": 0.0}
  for _ in range(40):
    w, h = rng.uniform(3, 40), rng.uniform(3, 30)
    left, top = rng.uniform(0, 53 - w), rng.uniform(0, 37 - h)
    box = (left, top, left + w, top + h)
    if rng.random() < 0.5:  # integer boxes, as the crops draw them, some on the image's edge
      box = tuple(float(round(v)) for v in box)
    size = (int(rng.integers(math.ceil(box[3] - box[1]), 64)),
            int(rng.integers(math.ceil(box[2] - box[0]), 64)))
    mirror = bool(rng.random() < 0.5)
    ref = _reference_resize(image, *size, box)
    ref = ref[:, ::-1] if mirror else ref
    out = image_ops.resize_box(image, *size, box, mirror=mirror)
    pil = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR, box))
    pil = pil[:, ::-1] if mirror else pil
    worst["ops"] = max(worst["ops"], np.abs(out.astype(np.float64) - ref).max())
    worst["pil"] = max(worst["pil"], np.abs(pil.astype(np.float64) - ref).max())
  assert worst["ops"] <= 0.55 and worst["pil"] >= 0.99, worst
  grey = image[..., :1]
  out = image_ops.resize_box(grey, 50, 60, (2, 3, 30, 33))
  assert out.shape == (50, 60, 1)
  assert np.abs(out - _reference_resize(grey, 50, 60, (2, 3, 30, 33))).max() <= 0.55


def test_shrinks_match_a_float64_antialiased_bilinear_and_pil(image, monkeypatch):
  # A box larger than the output on some side (a quarter of the Inception crops of a 256 px
  # image, most of ImageNet's) goes through fast_image_resize's port of PIL's antialiased
  # filter: within 1 level of the float64 reference, as PIL is, and of PIL's own pixels.
  calls = []
  shrink = image_ops._shrink
  monkeypatch.setattr(image_ops, "_shrink", lambda *a: calls.append(a[1:3]) or shrink(*a))
  rng = np.random.default_rng(3)
  for i in range(60):
    w, h = rng.uniform(8, 53), rng.uniform(8, 37)
    left, top = rng.uniform(0, 53 - w), rng.uniform(0, 37 - h)
    box = (left, top, left + w, top + h)
    if rng.random() < 0.5:  # integer boxes, some on the image's edge
      box = tuple(float(round(v)) for v in box)
    # narrower than the box; taller or shorter (a side that enlarges is the plain filter)
    size = (int(rng.integers(3, math.floor(box[3] - box[1]) + 8)),
            int(rng.integers(3, math.floor(box[2] - box[0]))))
    grey = i % 5 == 0
    x = image[..., :1] if grey else image
    mirror = bool(rng.random() < 0.5)
    ref = _reference_resize(x, *size, box)
    out = image_ops.resize_box(x, *size, box, mirror=mirror)
    pil = np.asarray(image_ops._pil(x).resize(size[::-1], Image.Resampling.BILINEAR, box))
    pil = pil.reshape(*size, x.shape[-1])
    if mirror:
      ref, pil = ref[:, ::-1], pil[:, ::-1]
    assert out.shape == (*size, x.shape[-1]) and out.dtype == np.uint8
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0 + 1e-9, (box, size)
    assert np.abs(out.astype(int) - pil.astype(int)).max() <= 1, (box, size)
  assert len(calls) == 60
  # four channels (PIL premultiplies alpha) and bicubic stay with PIL; so do boxes outside
  # the image, which PIL refuses
  image_ops.resize_box(np.dstack([image, image[..., :1]]), 10, 10)
  image_ops.resize_box(image, 10, 10, method="bicubic")
  with pytest.raises(ValueError, match="negative"):
    image_ops.resize_box(image, 10, 10, (-2.0, 0.0, 40.0, 30.0))
  assert len(calls) == 60


def test_resize_small_keeps_the_aspect_ratio(image):
  out = image_ops.resize_small(image, 20)
  assert out.shape == (20, round(53 * 20 / 37), 3)
  tall = image_ops.resize_small(image.transpose(1, 0, 2), 20)
  assert tall.shape == (round(53 * 20 / 37), 20, 3)


def test_inception_boxes_keep_scale_and_ratio_and_crops_resize_the_sliced_box(image):
  rng = np.random.default_rng(1)
  areas, ratios = [], []
  for _ in range(400):
    left, top, right, bottom = image_ops.inception_box(rng, 300, 400)
    assert 0 <= left < right <= 400 and 0 <= top < bottom <= 300
    areas.append((right - left) * (bottom - top) / (300 * 400))
    ratios.append((right - left) / (bottom - top))
  assert 0.08 * 0.97 <= min(areas) and max(areas) <= 1.0
  assert 0.75 * 0.97 <= min(ratios) and max(ratios) <= 4 / 3 * 1.03
  assert np.std(areas) > 0.15  # spread over the range, not one size
  # The crop is the box resampled by the float64 reference above (the filter reaches pixels
  # just outside the box, as PIL's resize of a box does).
  crop = image_ops.random_resized_crop(image, np.random.default_rng(7), 24)
  box = image_ops.inception_box(np.random.default_rng(7), 37, 53)
  ref = _reference_resize(image, 24, 24, box)
  assert np.abs(crop.astype(np.float64) - ref).max() <= 1.0 + 1e-9
  # Fallback for impossible ratios: the central box of the nearest allowed ratio.
  assert image_ops.inception_box(np.random.default_rng(0), 10, 100, (0.9, 1.0)) == \
      (50 - 7, 0, 50 - 7 + 13, 10)


def test_central_crop_and_flip_match_pil_and_normalize_matches_float64(image):
  pil = Image.fromarray(image)
  np.testing.assert_array_equal(image_ops.central_crop(image, 30),
                                np.asarray(pil.crop((11, 3, 41, 33))))
  flips = [image_ops.flip(image, np.random.default_rng(s)) for s in range(200)]
  flipped = [np.array_equal(f, np.asarray(pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
             for f in flips]
  kept = [np.array_equal(f, image) for f in flips]
  assert all(a or b for a, b in zip(flipped, kept)) and 70 < sum(flipped) < 130
  out = image_ops.normalize(image, image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD)
  ref = (image.astype(np.float64) - np.array(image_ops.IMAGENET_MEAN)) / np.array(
      image_ops.IMAGENET_STD)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)
  frac = image_ops.central_crop_fraction(image, 16, 0.875)
  side = int(0.875 * 37)
  top, left = (37 - side + 1) // 2, (53 - side + 1) // 2
  ref = _reference_resize(image, 16, 16, (left, top, left + side, top + side))
  assert np.abs(frac.astype(np.float64) - ref).max() <= 1.0 + 1e-9


def test_decode_through_the_tfds_feature_and_the_declared_chain(image):
  import tensorflow_datasets as tfds

  feature = tfds.features.Image(shape=(None, None, 3))
  png, jpeg = io.BytesIO(), io.BytesIO()
  Image.fromarray(image).save(png, format="PNG")
  Image.fromarray(image).save(jpeg, format="JPEG", quality=90)
  c = config_lib.base().data.image
  c.size = 24
  decode_only = Preprocess(("decode",), c, feature)
  np.testing.assert_array_equal(decode_only(png.getvalue(), None), image)  # lossless
  np.testing.assert_array_equal(decode_only(jpeg.getvalue(), None),
                                np.asarray(Image.open(io.BytesIO(jpeg.getvalue()))))
  np.testing.assert_array_equal(decode_only(image, None), image)  # decoded already: unchanged
  train = Preprocess(("decode", "random_resized_crop", "flip", "normalize"), c, feature)
  a = train(png.getvalue(), np.random.default_rng([3, 10]))
  b = train(png.getvalue(), np.random.default_rng([3, 10]))
  other = train(png.getvalue(), np.random.default_rng([3, 11]))
  assert a.shape == (24, 24, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, other)
  # The chain equals the ops called one by one with the same generator.
  rng = np.random.default_rng([3, 10])
  x = image_ops.random_resized_crop(image, rng, 24)
  x = image_ops.normalize(image_ops.flip(x, rng), image_ops.IMAGENET_MEAN, image_ops.IMAGENET_STD)
  np.testing.assert_array_equal(a, x)


def test_bad_image_ops_name_the_field():
  c = config_lib.base()
  c.data.image.eval = ("decode", "flip")
  with pytest.raises(config_lib.ConfigError, match=r"data.image.eval=.* has a random op 'flip'"):
    config_lib.validate(c)
  c.data.image.eval = ("resize",)
  with pytest.raises(config_lib.ConfigError, match="data.image.size=0; expected the output"):
    config_lib.validate(c)
  c.data.image.eval = ("decode",)
  c.data.image.randaug_layers = -1
  with pytest.raises(config_lib.ConfigError, match="data.image.randaug_layers=-1; expected an "
                     "integer >= 0"):
    config_lib.validate(c)
  c.data.image.randaug_layers = 2
  c.data.image.randaug_magnitude = 11.0
  with pytest.raises(config_lib.ConfigError, match=r"data.image.randaug_magnitude=11.0; "
                     r"expected a value in \[0, 10\]"):
    config_lib.validate(c)


def test_randaugment_in_the_chain_draws_after_the_crop_and_flip(image):
  from data import randaugment

  c = config_lib.base().data.image
  c.size = 24
  chain = Preprocess(("random_resized_crop", "flip", "randaugment"), c)
  rng = np.random.default_rng([4, 2])
  x = image_ops.flip(image_ops.random_resized_crop(image, rng, 24), rng)
  np.testing.assert_array_equal(chain(image, np.random.default_rng([4, 2])),
                                randaugment.randaugment(x, rng, 2, 10.0))


def test_jpegs_decode_through_libjpeg_turbo_to_the_pixels_of_tfds_decoding(image):
  import tensorflow_datasets as tfds

  from data import shapes

  rgb, gray = tfds.features.Image(shape=(None, None, 3)), tfds.features.Image(shape=(None, None, 1))
  for i in range(5):  # the benchmark's kind of image, at two sizes
    data, _ = shapes.jpeg("train", i, 10, 64 + 64 * (i % 2))
    np.testing.assert_array_equal(image_ops.decode(data, rgb), rgb.decode_example_np(data))
  for mode, feature in (("RGB", rgb), ("L", gray)):
    jpeg = io.BytesIO()
    Image.fromarray(image).convert(mode).save(jpeg, format="JPEG", quality=85)
    got = image_ops.decode(jpeg.getvalue(), feature)
    assert got.shape == (37, 53, feature.shape[-1]) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, feature.decode_example_np(jpeg.getvalue()))
  # a CMYK JPEG, which libjpeg-turbo does not convert to RGB, and a PNG: TFDS's decoding
  cmyk, png = io.BytesIO(), io.BytesIO()
  Image.fromarray(image).convert("CMYK").save(cmyk, format="JPEG")
  Image.fromarray(image).save(png, format="PNG")
  for data in (cmyk.getvalue(), png.getvalue()):
    np.testing.assert_array_equal(image_ops.decode(data, rgb), rgb.decode_example_np(data))
