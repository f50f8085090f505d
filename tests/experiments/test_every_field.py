"""Every field an experiment sets takes effect: each experiment file and each of its arguments
(`ARGS`) is built as `python -m train` builds it (`train.run.prepare`: the data pipelines, the
model, the paradigm's steps traced abstractly, the loop's settings), and a field set to a value
other than its default that nothing reads fails the build, naming the field."""

from __future__ import annotations

import glob
import importlib
import os

import pytest

from tests.conftest import EXPERIMENTS, load_experiment, mock_catalog
from train import config as config_lib
from train import field_use, loop
from train.errors import ConfigError

CATALOG = ("cifar10_resnet20", "imagenet_resnet50", "imagenet_vit_s16")
# Tracing a full UNet's steps takes 4-8 s: these experiments' variants are checked with the slow
# set, beside their tiny-mode trainings.
UNET = ("digits_ddpm", "digits_ddpm_cfg", "mnist1d_ddpm")


def experiment_names() -> list[str]:
  names = []
  for path in sorted(glob.glob(os.path.join(EXPERIMENTS, "*.py"))):
    name = os.path.basename(path)[:-3]
    if "def get_config" in open(path).read():
      names.append(name)
  return names


def variants(catalog: bool) -> list:
  """pytest params of (experiment, argument) for every experiment file and argument. The default
  suite builds each file's own config (no argument) but the UNet experiments'; every argument and
  the UNet experiments are built with the slow set (the default suite trains each tiny mode
  through `train_and_evaluate`, which makes the same check)."""
  out = []
  for name in experiment_names():
    if (name in CATALOG) != catalog:
      continue
    module = importlib.import_module(f"experiments.{name}")
    for arg in (None, *module.ARGS):
      slow = name in UNET or arg is not None
      out.append(pytest.param(name, arg, marks=[pytest.mark.slow] if slow else []))
  return out


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_exports_its_arguments_and_refuses_others(name):
  module = importlib.import_module(f"experiments.{name}")
  assert isinstance(module.ARGS, tuple) and module.ARGS
  config_lib.validate(config_lib.load(f"experiments.{name}"))
  for arg in module.ARGS:
    config_lib.validate(config_lib.load(f"experiments.{name}:{arg}"))
  with pytest.raises(ConfigError, match="unknown argument 'nope'; expected one of"):
    config_lib.load(f"experiments.{name}:nope")


@pytest.mark.parametrize("name,arg", variants(catalog=False))
def test_every_set_field_of_every_experiment_is_read(name, arg, data_dir):
  config = load_experiment(name, arg, data_dir)
  if config.data.source == "shapes":  # 10,000 images drawn: 400 are enough to build on
    with config.unlocked():
      config.data.builder_config.num_examples = 400
  loop.prepare(config)  # raises ConfigError naming a set field nothing reads


@pytest.mark.parametrize("name,arg", variants(catalog=True))
def test_every_set_field_of_the_catalog_recipes_is_read(name, arg, tmp_path):
  config = load_experiment(name, arg, str(tmp_path / "tfds"))
  with config.unlocked():
    config.data.download = True  # TFDS's mock stands in for the prepared dataset
    # The full recipes' batches (1,024 images) shrunk to the mock's size: the first batch is
    # made to trace the steps; the fields are read either way.
    config.data.batch_size = config.data.eval_batch_size = 4
  with mock_catalog(num_examples=8):
    loop.prepare(config)


def test_warmup_with_a_schedule_that_has_none_is_refused_before_anything_is_written(
    data_dir, tmp_path):
  config = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with config.unlocked():
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 100
  with pytest.raises(ConfigError) as e:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(e.value).startswith("optim.warmup_steps=100: set but never read by this run")
  assert "optim.schedule='warmup_cosine'" in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "run")
  with config.unlocked():
    config.optim.schedule = "warmup_cosine"
  loop.prepare(config)


def test_momentum_of_adam_and_a_model_field_of_the_default_are_refused(data_dir):
  config = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with config.unlocked():
    config.optim.momentum = 0.5  # adam reads b1, not momentum
    config.train.eval_every = 0  # a default value: never "set", whatever reads it
  with pytest.raises(ConfigError, match=r"^optim.momentum=0.5: set but never read .*"
                                        r"optim.name='momentum' or 'nesterov' reads it"):
    loop.prepare(config)


def test_the_record_counts_reads_through_sections_copies_and_threads_but_not_validation():
  import threading

  config = config_lib.base()
  with config.unlocked():
    config.optim.b1 = 0.5
    config.optim.eps = 1e-6
    config.data.augment.shift = 3
    config.data.image.size = 8
  with field_use.Record(config) as record:
    config_lib.validate(config)  # reads every field, none recorded
    assert record.read == set()
    config.optim.get("b1")
    copy = config.data.copy_and_resolve_references()
    thread = threading.Thread(target=lambda: copy.augment.to_dict())
    thread.start()
    thread.join()
    config["optim"]["eps"]  # noqa: B018
  assert {"optim.b1", "optim.eps", "data.augment.shift"} <= record.read
  assert field_use.unread(config, config_lib.base(), record) == ["data.image.size"]
  assert config.optim.b1 == 0.5  # the record is closed: ConfigDict reads as before
  assert type(config).__getitem__ is field_use._ORIGINAL_GETITEM
