import numpy as np
import pytest

import data as data_lib
from data import sources, transforms
from tests.conftest import data_config

_cfg = data_config


def test_train_epochs_are_seeded_permutations(data_dir):
  c = _cfg("digits", data_dir, batch_size=100)
  p = data_lib.build_pipeline(c, "train", train=True, seed=3)
  n, spe = 1437, p.steps_per_epoch
  assert spe == n // 100
  raw = sources.load_split(c, "train")
  # Recover example indices through the raw pixels (normalize="none" keeps them).
  flat = raw.inputs.reshape(n, -1)
  lookup = {flat[i].tobytes(): i for i in range(n)}
  seen = [lookup[x.astype(np.uint8).tobytes()]
          for b in (p.dataset[i] for i in range(spe)) for x in b["inputs"].reshape(100, -1)]
  assert len(set(seen)) == len(seen) == spe * 100  # no repeats within an epoch
  again = data_lib.build_pipeline(c, "train", train=True, seed=3)
  other = data_lib.build_pipeline(c, "train", train=True, seed=4)
  np.testing.assert_array_equal(p.dataset[5]["label"], again.dataset[5]["label"])
  assert not np.array_equal(p.dataset[0]["label"], other.dataset[0]["label"])
  assert not np.array_equal(p.dataset[0]["label"], p.dataset[spe]["label"])  # new epoch order


def test_eval_visits_every_example_once_with_padding_masked(data_dir):
  c = _cfg("breast_cancer", data_dir, eval_batch_size=50)
  p = data_lib.build_pipeline(c, "test", train=False, seed=0)
  batches = list(p)
  assert len(batches) == 3  # 114 examples -> 50 + 50 + 14 (+36 padding)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 114 and mask[:114].all() and not mask[114:].any()
  labels = np.concatenate([b["label"] for b in batches])[:114]
  np.testing.assert_array_equal(labels, sources.load_split(c, "test").labels)


def test_process_shards_union_to_the_global_batch(data_dir):
  c = _cfg("digits", data_dir, batch_size=64, eval_batch_size=64)
  for train in (True, False):
    split = "train" if train else "test"
    whole = data_lib.build_pipeline(c, split, train=train, seed=1).dataset[2]
    parts = [data_lib.build_pipeline(c, split, i, 4, train=train, seed=1).dataset[2]
             for i in range(4)]
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
  with pytest.raises(sources.DataError, match="data.batch_size=64 is not divisible by the 3"):
    data_lib.build_pipeline(c, "train", 0, 3, train=True, seed=0)


def test_iterator_state_resumes_the_same_batches(data_dir):
  c = _cfg("mnist1d", data_dir, batch_size=100, augment={"shift": 3, "noise_std": 0.1})
  p = data_lib.build_pipeline(c, "train", train=True, seed=0)
  it = p.iterator()
  for _ in range(57):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = data_lib.build_pipeline(c, "train", train=True, seed=0).iterator()
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_normalisation_uses_train_statistics(data_dir):
  c = _cfg("breast_cancer", data_dir, normalize="per_feature", eval_batch_size=455)
  raw = sources.load_split(c, "train").inputs
  p = data_lib.build_pipeline(c, "train", train=False, seed=0)
  np.testing.assert_allclose(p.stats.mean, raw.mean(0), rtol=1e-5)
  x = next(iter(data_lib.build_pipeline(c, "train", train=False, seed=0)))["inputs"]
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(0), 1, atol=1e-3)
  test = data_lib.build_pipeline(c, "test", train=False, seed=0)
  np.testing.assert_array_equal(test.stats.mean, p.stats.mean)  # test uses train statistics


def test_class_weights_match_sklearn_and_balanced_sampler_balances(data_dir):
  from sklearn.utils.class_weight import compute_class_weight

  c = _cfg("breast_cancer", data_dir, class_weights="balanced", batch_size=455)
  labels = sources.load_split(c, "train").labels
  p = data_lib.build_pipeline(c, "train", train=True, seed=0)
  np.testing.assert_allclose(p.class_weights, compute_class_weight(
      "balanced", classes=np.array([0, 1]), y=labels), rtol=1e-6)
  b = p.dataset[0]
  np.testing.assert_allclose(b["mask"], p.class_weights[b["label"]])
  c = _cfg("breast_cancer", data_dir, sampler="balanced", batch_size=455)
  p = data_lib.build_pipeline(c, "train", train=True, seed=0)
  frac = np.mean([p.dataset[i]["label"].mean() for i in range(40)])
  assert abs(np.bincount(labels)[1] / len(labels) - 0.5) > 0.1  # the data are imbalanced
  assert abs(frac - 0.5) < 0.02                                  # the sampler is not


def test_batch_larger_than_split_and_labels_out_of_range(data_dir):
  with pytest.raises(sources.DataError, match=r"data.batch_size=5000 is larger than the 'train' "
                     r"split of 'mnist1d' \(4000 examples\)"):
    data_lib.build_pipeline(_cfg("mnist1d", data_dir, batch_size=5000), "train", train=True,
                            seed=0)
  with pytest.raises(sources.DataError, match=r"label 9 is out of range for num_classes=5"):
    data_lib.check_labels(np.array([0, 9, 3]), 5, "somewhere")


def test_shift_crop_flip_noise():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 40)).astype(np.float32)
  out = transforms.RandomShift1D(3).random_map({"inputs": x}, np.random.default_rng(1))["inputs"]
  for i in range(16):  # each row is the original translated by some |s| <= 3, zero filled
    assert any(np.array_equal(out[i], np.roll(np.pad(x[i], 3), s)[3:-3]) for s in range(-3, 4))
  img = rng.integers(0, 255, size=(8, 6, 5, 2)).astype(np.uint8)
  crop = transforms.RandomCrop(2).random_map({"inputs": img}, np.random.default_rng(2))["inputs"]
  assert crop.shape == img.shape
  for i in range(8):
    padded = np.pad(img[i], [(2, 2), (2, 2), (0, 0)])
    assert any(np.array_equal(crop[i], padded[dy:dy + 6, dx:dx + 5])
               for dy in range(5) for dx in range(5))
  flip = transforms.RandomFlip().random_map({"inputs": img}, np.random.default_rng(3))["inputs"]
  for i in range(8):
    assert np.array_equal(flip[i], img[i]) or np.array_equal(flip[i], img[i][:, ::-1])
  noisy = transforms.GaussianNoise(0.5).random_map({"inputs": np.zeros((2000, 10), np.float32)},
                                                   np.random.default_rng(4))["inputs"]
  assert abs(noisy.std() - 0.5) < 0.01


def test_sequential_sampler_takes_stored_order_every_epoch(data_dir):
  # The MNIST-1D paper's `bix = step * B % N`: batch i holds rows [i*B, (i+1)*B) of its epoch.
  c = _cfg("digits", data_dir, batch_size=100, sampler="sequential")
  p = data_lib.build_pipeline(c, "train", train=True, seed=3)
  raw = sources.load_split(c, "train")
  spe = p.steps_per_epoch
  for i in (0, 5, spe - 1, spe, spe + 5):
    b = (i % spe) * 100
    np.testing.assert_array_equal(p.dataset[i]["label"], raw.labels[b:b + 100])
  # Sequential batches are read-only views of the split (labels as int32), so they cost no copy
  # and no conversion per step, and no consumer can write into the dataset through them.
  batch = p.dataset[1]
  np.testing.assert_array_equal(batch["inputs"], raw.inputs[100:200])
  assert batch["label"].dtype == np.int32 and batch["mask"].dtype == np.float32
  with pytest.raises(ValueError, match="read-only"):
    batch["label"][0] = 0
