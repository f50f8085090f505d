"""data.label_noise: exact counts, the kinds' transitions, determinism, and where it applies."""

import numpy as np
import pytest

import data as data_lib
from data import label_noise, sources
from tests.conftest import data_config


def _noise(rate, kind="symmetric", seed=0):
  c = label_noise.defaults()
  c.rate, c.kind, c.seed = rate, kind, seed
  return c


X = np.random.default_rng(0).normal(size=(20000, 3)).astype(np.float32)


def test_symmetric_flips_a_share_to_other_classes_uniformly():
  labels = np.repeat(np.arange(10), 2000)
  noisy = label_noise.apply(X, labels, 10, _noise(0.05))
  flipped = noisy != labels
  assert abs(flipped.sum() - 1000) < 4 * np.sqrt(20000 * 0.05 * 0.95)  # binomial(20000, 0.05)
  # uniform over the 9 other classes: offsets 1..9 each about 1/9 of the flips
  offsets = (noisy[flipped] - labels[flipped]) % 10
  counts = np.bincount(offsets, minlength=10)[1:]
  assert counts.min() > 1000 / 9 * 0.7 and counts.max() < 1000 / 9 * 1.3
  np.testing.assert_array_equal(noisy, label_noise.apply(X, labels, 10, _noise(0.05)))
  assert (label_noise.apply(X, labels, 10, _noise(0.05, seed=1)) != noisy).any()
  assert label_noise.apply(X, labels, 10, _noise(0.0)) is labels
  # an example's fate follows it: the same examples in another order, or a slice
  order = np.random.default_rng(1).permutation(20000)
  np.testing.assert_array_equal(label_noise.apply(X[order], labels[order], 10, _noise(0.05)),
                                noisy[order])


def test_pairs_move_each_class_to_the_next():
  labels = np.arange(300) % 3
  noisy = label_noise.apply(X[:300], labels, 3, _noise(0.5, "pairs"))
  flipped = noisy != labels
  assert 100 < flipped.sum() < 200
  np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 3)


def test_bad_fields_are_named():
  with pytest.raises(ValueError, match=r"data.label_noise.rate=1.0; expected a share in \[0, 1\)"):
    label_noise.check(_noise(1.0))
  with pytest.raises(ValueError, match="data.label_noise.kind='rows'"):
    label_noise.check(_noise(0.1, "rows"))


def test_only_the_training_split_is_noisy(data_dir):
  c = data_config("digits", data_dir, label_noise={"rate": 0.05})
  clean = sources.load_split(c, "train").labels
  _, train_labels, _ = data_lib.split_arrays(c, "train")
  flips = (train_labels != clean).sum()
  assert abs(flips - 0.05 * len(clean)) < 4 * np.sqrt(len(clean) * 0.05 * 0.95) and flips > 0
  # a slice of the training split (a cross-validation fold) carries the same examples' labels
  _, fold_labels, _ = data_lib.split_arrays(c, "train[100:300]")
  np.testing.assert_array_equal(fold_labels, train_labels[100:300])
  _, test_labels, _ = data_lib.split_arrays(c, "test")
  np.testing.assert_array_equal(test_labels, sources.load_split(c, "test").labels)
  # the training pipeline serves the noisy labels (sequential order: batch 0 is rows 0..B-1)
  seq = data_config("digits", data_dir, label_noise={"rate": 0.05}, sampler="sequential")
  p = data_lib.build_pipeline(seq, "train", train=True, seed=0)
  first = p.dataset[0]["label"]
  np.testing.assert_array_equal(first, train_labels[:len(first)])


def test_streaming_refuses_label_noise(data_dir):
  c = data_config("digits", data_dir, label_noise={"rate": 0.05}, in_memory="false")
  with pytest.raises(sources.DataError, match=r"data.label_noise.rate=0.05 needs every label"):
    data_lib.build_pipeline(c, "train", train=True, seed=0)


def test_excluded_examples_leave_the_training_split_only(data_dir, tmp_path):
  path = tmp_path / "drop.json"
  path.write_text("[0, 5, 7]")
  c = data_config("digits", data_dir, exclude_examples=str(path))
  x_all, y_all, _ = data_lib.split_arrays(data_config("digits", data_dir), "train")
  x, y, _ = data_lib.split_arrays(c, "train")
  keep = np.setdiff1d(np.arange(len(y_all)), [0, 5, 7])
  np.testing.assert_array_equal(x, x_all[keep])
  assert len(data_lib.split_arrays(c, "test")[1]) == len(
      data_lib.split_arrays(data_config("digits", data_dir), "test")[1])
  path.write_text("[0, 99999]")
  with pytest.raises(sources.DataError, match="lists index 99999"):
    data_lib.split_arrays(data_config("digits", data_dir, exclude_examples=str(path)), "train")
  path.write_text('{"rows": 3}')
  with pytest.raises(sources.DataError, match="expected a JSON list of example indices"):
    data_lib.split_arrays(data_config("digits", data_dir, exclude_examples=str(path)), "train")
