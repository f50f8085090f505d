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


def test_symmetric_flips_an_exact_share_to_other_classes_uniformly():
  labels = np.repeat(np.arange(10), 2000)
  noisy = label_noise.apply(labels, 10, _noise(0.05))
  flipped = noisy != labels
  assert flipped.sum() == 1000  # round(0.05 * 20000), every one to another class
  # uniform over the 9 other classes: offsets 1..9 each about 1/9 of the flips
  offsets = (noisy[flipped] - labels[flipped]) % 10
  counts = np.bincount(offsets, minlength=10)[1:]
  assert counts.min() > 1000 / 9 * 0.7 and counts.max() < 1000 / 9 * 1.3
  np.testing.assert_array_equal(noisy, label_noise.apply(labels, 10, _noise(0.05)))
  assert (label_noise.apply(labels, 10, _noise(0.05, seed=1)) != noisy).any()
  assert label_noise.apply(labels, 10, _noise(0.0)) is labels


def test_pairs_move_each_class_to_the_next():
  labels = np.arange(30) % 3
  noisy = label_noise.apply(labels, 3, _noise(0.5, "pairs"))
  flipped = noisy != labels
  assert flipped.sum() == 15
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
  assert (train_labels != clean).sum() == round(0.05 * len(clean))
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
