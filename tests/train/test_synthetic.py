"""`data.synthetic`'s pool from a trained generator (`train/synthetic.py`), and a classifier
trained with it; slow: they train a conditional GAN first."""

import numpy as np
import pytest

from tests.conftest import load_experiment
from train import loop, synthetic
from train.config import ConfigError

pytestmark = pytest.mark.slow


def _classifier(data_dir, generator, fraction=0.5, per_class=3):
  config = load_experiment("digits_cnn", "tiny", data_dir)
  config.data.synthetic.update({"workdir": generator, "fraction": fraction,
                                "per_class": per_class})
  return config


def test_the_pool_holds_every_class_in_the_data_range(trained, data_dir):
  inputs, labels = synthetic.pool(_classifier(data_dir, trained("digits_cgan")))
  assert inputs.shape == (30, 8, 8, 1) and inputs.dtype == np.float32
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
  assert inputs.min() >= 0.0 and inputs.max() <= 16.0 and inputs.std() > 0.1
  again, _ = synthetic.pool(_classifier(data_dir, trained("digits_cgan")))
  np.testing.assert_array_equal(inputs, again)  # seeded by data.synthetic.seed


def test_a_classifier_trains_with_samples_and_refuses_an_unconditional_generator(
    trained, data_dir, tmp_path):
  result = loop.train_and_evaluate(_classifier(data_dir, trained("digits_cgan"), fraction=1.0),
                                   str(tmp_path / "cas"))
  assert 0.0 <= result["accuracy"] <= 1.0 and result["count"] == 360
  with pytest.raises(ConfigError, match="is unconditional"):
    synthetic.pool(_classifier(data_dir, trained("digits_dcgan")))
  with pytest.raises(ConfigError, match="which does not generate samples"):
    synthetic.pool(_classifier(data_dir, trained("digits_cnn")))
