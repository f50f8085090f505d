"""`data.keep_classes` and the `unit` scaling and binarisation that Bernoulli models train on."""

import numpy as np
import pytest

import data as data_lib
from data import sources
from train import config as config_lib


def _cfg(data_dir, **kw):
  c = config_lib.base().data
  c.source, c.data_dir, c.eval_batch_size = "digits", data_dir, 100
  for k, v in kw.items():
    c[k] = v
  return c


def _all(pipe):
  batches = list(pipe)
  real = np.concatenate([b["mask"] for b in batches]) > 0
  return (np.concatenate([b["inputs"] for b in batches])[real],
          np.concatenate([b["label"] for b in batches])[real])


def test_keep_classes_filters_every_split_and_the_statistics(data_dir):
  c = _cfg(data_dir, keep_classes=(0, 1, 2, 3, 4, 5, 6, 7, 8), normalize="per_feature")
  raw = sources.load_split(c, "test")
  x, y = _all(data_lib.build_pipeline(c, "test", train=False, seed=0))
  assert set(y.tolist()) == set(range(9)) and len(y) == int((raw.labels != 9).sum())
  train = data_lib.build_pipeline(c, "train", train=True, seed=0)
  assert 9 not in np.concatenate([train.dataset[i]["label"] for i in range(5)])
  raw_train = sources.load_split(c, "train")
  normal = raw_train.inputs[raw_train.labels != 9].astype(np.float64)
  np.testing.assert_allclose(train.stats.mean, normal.mean(0), rtol=1e-5)


def test_keep_classes_errors(data_dir):
  with pytest.raises(data_lib.DataError, match=r"data.keep_classes=\(3, 12\): class 12 is not a "
                     r"label of data.source='digits' split 'test' \(expected classes in \[0, 9\]\)"):
    data_lib.build_pipeline(_cfg(data_dir, keep_classes=(3, 12)), "test", train=False, seed=0)


def test_unit_scaling_and_binarisation(data_dir):
  c = _cfg(data_dir, normalize="unit", eval_batch_size=360)
  raw = sources.load_split(c, "test").inputs
  x, _ = _all(data_lib.build_pipeline(c, "test", train=False, seed=0))
  np.testing.assert_allclose(x, raw / 16.0, rtol=1e-6)  # digits' pixels span 0..16 in train
  c.binarize = True
  b, _ = _all(data_lib.build_pipeline(c, "test", train=False, seed=0))
  np.testing.assert_array_equal(b, (raw >= 8).astype(np.float32))
