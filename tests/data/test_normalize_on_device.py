"""data.image.normalize_on_device: uint8 training batches, normalised by the supervised step to
what the pipeline's "normalize" op gives; evaluation batches stay float."""

import jax
import numpy as np
import pytest

import data as data_lib
from data import preprocess
from tests.conftest import data_config
from train import config as config_lib
from train import loop
from train.errors import ConfigError

IMAGE = {"train": ("decode", "random_resized_crop", "flip", "normalize"),
         "eval": ("decode", "central_crop_fraction", "normalize"), "size": 24}


def _data(tmp_path, on_device, **image):
  return data_config("shapes", str(tmp_path), batch_size=8, eval_batch_size=20,
                     in_memory="false", builder_config={"num_examples": 40, "num_classes": 4,
                                                        "image_size": 32},
                     image={**IMAGE, "normalize_on_device": on_device, **image})


@pytest.mark.parametrize("mean, std", [((), ()), ((127.5,) * 3, (127.5,) * 3)])
def test_the_uint8_batch_normalised_on_the_device_is_the_float_batch(tmp_path, mean, std):
  host = data_lib.build_pipeline(_data(tmp_path, False, mean=mean, std=std), "train",
                                 train=True, seed=0).dataset[2]
  c = _data(tmp_path, True, mean=mean, std=std)
  pixels = data_lib.build_pipeline(c, "train", train=True, seed=0).dataset[2]
  assert pixels["inputs"].dtype == np.uint8 and host["inputs"].dtype == np.float32
  np.testing.assert_array_equal(pixels["label"], host["label"])
  normalize = jax.jit(preprocess.device_normalizer(c.image))
  np.testing.assert_allclose(np.asarray(normalize(pixels["inputs"])), host["inputs"],
                             rtol=0, atol=2e-6)
  # evaluation batches are float either way, and pass through unchanged
  ev = next(iter(data_lib.build_pipeline(c, "test", train=False, seed=0)))
  assert ev["inputs"].dtype == np.float32
  assert normalize(ev["inputs"]) is not None
  np.testing.assert_array_equal(np.asarray(normalize(ev["inputs"])), ev["inputs"])


def test_a_supervised_run_trains_on_uint8_batches_as_on_float_ones(tmp_path):
  metrics = {}
  for on_device in (False, True):
    c = config_lib.base()
    with c.unlocked():
      c.data = _data(tmp_path, on_device)
    c.model = dict(name="cnn.CNN", num_classes=4, features=(4,), kernel_sizes=3, ndim=2,
                   head="mean")
    run = loop.build(c)
    assert run.example["inputs"].dtype == (np.uint8 if on_device else np.float32)
    state = run.init_state()
    for _ in range(2):
      state, m = run.train_step(state, run.example, run.step_rng)
    metrics[on_device] = np.asarray(m)
  np.testing.assert_allclose(metrics[True], metrics[False], rtol=1e-5, atol=1e-6)


def test_bad_settings_are_one_line_naming_the_field(tmp_path):
  with pytest.raises(ValueError, match=r"data.image.normalize_on_device=True with "
                                       r"data.image.train=\('decode', 'flip'\); expected "
                                       "'normalize' as the last op"):
    preprocess.check(_data(tmp_path, True, train=("decode", "flip")).image)
  c = config_lib.base("reconstruction")
  c.data.image.train, c.data.image.size = IMAGE["train"], 24
  c.data.image.normalize_on_device = True
  with pytest.raises(ConfigError, match="normalize_on_device=True with paradigm "
                                        "'reconstruction'"):
    config_lib.validate(c)
  c = config_lib.base()
  c.data.image.train, c.data.image.size = IMAGE["train"], 24
  c.data.image.normalize_on_device = True
  c.data.augment.noise_std = 0.1
  with pytest.raises(ConfigError, match=r"normalize_on_device=True with data.augment.noise_std"
                                        r"=0.1 / data.binarize=False: .* expected noise_std=0"):
    config_lib.validate(c)
