"""Synthetic examples mixed into training batches (`data/synthetic.py`): the share of each batch,
the rows they replace, normalised as real ones, the same batches on a second read, and the
config's one-line errors."""

import numpy as np
import pytest

import data as data_lib
from data import synthetic
from tests.conftest import data_config
from train import config as config_lib
from train.config import ConfigError


def _pool(n=30):
  """A pool no digit looks like: every pixel 16, every label 7 (digits are stored 0..16)."""
  return np.full((n, 8, 8, 1), 16.0, np.float32), np.full(n, 7, np.int32)


@pytest.mark.parametrize("fraction, batch, expected", [(0.25, 64, 16), (1.0, 32, 32)])
def test_the_last_rows_of_every_batch_are_synthetic(data_dir, fraction, batch, expected):
  assert synthetic.synthetic_rows(30, 0.5) == 15 and synthetic.synthetic_rows(32, 0.01) == 0
  cfg = data_config("digits", data_dir, batch_size=batch, normalize="global",
                    synthetic={"workdir": "gen", "fraction": fraction})
  assert synthetic.synthetic_rows(batch, fraction) == expected
  pipe = data_lib.build_pipeline(cfg, "train", train=True, seed=0, synthetic=_pool())
  plain = data_lib.build_pipeline(data_config("digits", data_dir, batch_size=batch,
                                              normalize="global"), "train", train=True, seed=0)
  # the pool's pixels, normalised with the real training split's statistics
  marker = (16.0 - pipe.stats.mean) / pipe.stats.std
  for i in range(3):
    b, real = pipe.dataset[i], plain.dataset[i]
    is_synthetic = np.all(np.isclose(b["inputs"], marker), axis=(1, 2, 3))
    assert is_synthetic.sum() == expected and np.all(is_synthetic[batch - expected:])
    assert np.all(b["label"][batch - expected:] == 7) and np.all(b["mask"] == 1)
    # the real rows are the plain pipeline's, in place
    np.testing.assert_array_equal(b["inputs"][:batch - expected], real["inputs"][:batch - expected])
    np.testing.assert_array_equal(b["label"][:batch - expected], real["label"][:batch - expected])
    again = pipe.dataset[i]  # seeded by the batch index: a resumed run reads the same batch
    np.testing.assert_array_equal(again["inputs"], b["inputs"])


def test_pool_rows_are_drawn_across_the_pool(data_dir):
  inputs = np.repeat(np.arange(40, dtype=np.float32)[:, None, None, None] / 40 * 16, 64,
                     axis=1).reshape(40, 8, 8, 1)
  cfg = data_config("digits", data_dir, batch_size=64,
                    synthetic={"workdir": "gen", "fraction": 0.5})
  pipe = data_lib.build_pipeline(cfg, "train", train=True, seed=0,
                                 synthetic=(inputs, np.arange(40) % 10))
  seen = np.concatenate([pipe.dataset[i]["inputs"][32:, 0, 0, 0] for i in range(20)])
  assert set(np.unique(seen)) <= set(inputs[:, 0, 0, 0]) and len(np.unique(seen)) > 12


def test_a_pool_of_another_shape_is_refused(data_dir):
  cfg = data_config("digits", data_dir, batch_size=32, synthetic={"workdir": "gen",
                                                                  "fraction": 0.5})
  with pytest.raises(data_lib.DataError, match=r"samples have shape \(4, 4, 1\); the training "
                     r"examples of data.source='digits' have \(8, 8, 1\)"):
    data_lib.build_pipeline(cfg, "train", train=True, seed=0,
                            synthetic=(np.zeros((5, 4, 4, 1)), np.zeros(5, np.int32)))


@pytest.mark.parametrize("fields, message", [
    ({"fraction": 1.5}, r"fraction=1.5; expected a share in \[0, 1\]"),
    ({"fraction": 0.5}, "workdir='' with data.synthetic.fraction=0.5; expected both set"),
    ({"workdir": "runs/g"}, "expected both set"),
    ({"workdir": "runs/g", "fraction": 0.5, "per_class": 0}, "per_class=0; expected at least 1"),
])
def test_bad_settings_name_the_field(fields, message):
  config = config_lib.base()
  config.data.synthetic.update(fields)
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(config)
