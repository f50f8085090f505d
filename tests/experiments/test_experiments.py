"""Every experiment file builds, validates and trains in its tiny mode, so none rots."""

import math
import os

import pytest

from tests.conftest import EXPERIMENTS, load_experiment
from train import config as config_lib
from train import loop

NAMES = sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py") and f[0] != "_")


def test_the_issue_experiments_exist():
  assert {"mnist1d_logreg", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_resnet", "digits_cnn",
          "breast_cancer_mlp"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_full_config_validates_and_unknown_argument_fails(name):
  config_lib.validate(load_experiment(name))
  with pytest.raises(ValueError, match="unknown argument"):
    load_experiment(name, "huge")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_mode_trains(name, data_dir, tmp_path):
  final = loop.train_and_evaluate(load_experiment(name, "tiny", data_dir), str(tmp_path))
  assert final["count"] > 0 and math.isfinite(final["loss"])
