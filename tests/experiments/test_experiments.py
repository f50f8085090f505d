"""Every experiment file builds, validates and trains in its tiny mode, so none rots."""

import json
import math
import os

import pytest

from tests.conftest import EXPERIMENTS, load_experiment
from train import config as config_lib
from train import files


def _is_experiment(name: str) -> bool:
  """An experiment file defines get_config; the tools beside them (sweep, ...) do not."""
  with open(os.path.join(EXPERIMENTS, name)) as f:
    return "\ndef get_config(" in f.read()


NAMES = sorted(f[:-3] for f in os.listdir(EXPERIMENTS)
               if f.endswith(".py") and f[0] != "_" and _is_experiment(f))


def test_the_issue_experiments_exist():
  assert {"mnist1d_logreg", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_resnet", "digits_cnn",
          "breast_cancer_mlp", "mnist1d_gru", "mnist1d_transformer", "charlm_lstm",
          "charlm_transformer", "digits_ae", "digits_dae", "digits_vae", "mnist1d_vae",
          "digits_anomaly", "digits_impute", "digits_dcgan", "digits_cgan",
          "mnist1d_gan", "digits_ddpm", "digits_ddpm_cfg", "mnist1d_ddpm",
          "cifar10_resnet20", "imagenet_resnet50", "imagenet_vit_s16"} <= set(NAMES)


# The diffusion experiments' tiny modes compile a UNet three times (init, step, sampler), about
# 40 s each here: they run with the slow checks (`-m slow`, and in CI).
SLOW_TINY = {"digits_ddpm", "digits_ddpm_cfg", "mnist1d_ddpm"}
# shapes_resnet's tiny mode (9 s: it builds and streams JPEGs) too, for the default suite's budget.
SLOW_SUPERVISED = {"shapes_resnet"}
# The generative experiments' tiny modes are in test_generative_experiments.py, so that the two
# pytest-xdist workers (which take whole files) share the work.
GENERATIVE = ("digits_ae", "digits_dae", "digits_vae", "mnist1d_vae", "digits_anomaly",
              "digits_impute", "digits_dcgan", "digits_cgan", "mnist1d_gan", *sorted(SLOW_TINY))


# Tiny modes that other default tests train through the session's `trained` fixture (the eval
# tools', transfer's, distillation's, ...): trained in the default suite there, and once more here
# only when the two test files land on different workers; so here with the slow set.
TRAINED_ELSEWHERE = {"digits_cgan", "digits_dcgan", "charlm_transformer", "mnist1d_transformer",
                     "digits_vae", "digits_dae", "digits_ae", "series_mlp", "mnist1d_cnn",
                     "digits_cnn", "breast_cancer_mlp"}


# Variants of a family whose tiny mode the default suite trains (the GAN and VAE on MNIST-1D
# beside the digits ones, the LSTM LM beside the Transformer LM, the Transformer forecaster
# beside the MLP and GRU ones): they train with the slow set (31 s of the default suite's CPU,
# 2026-12-03), while the default suite still builds and traces every one of them
# (test_every_field.py).
FAMILY_VARIANTS = {"mnist1d_gan", "mnist1d_vae", "charlm_lstm", "series_transformer"}


def tiny_params(names):
  slow = SLOW_TINY | SLOW_SUPERVISED | TRAINED_ELSEWHERE | FAMILY_VARIANTS
  return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


# The public-catalog experiments train on TFDS's mock data in test_catalog_experiments.py.
CATALOG = ("cifar10_resnet20", "imagenet_resnet50", "imagenet_vit_s16")


@pytest.mark.parametrize("name", tiny_params(n for n in NAMES
                                             if n not in GENERATIVE and n not in CATALOG))
def test_tiny_mode_trains(name, trained):
  with open(os.path.join(trained(name), "summary.json")) as f:  # shared with other tests
    final = json.load(f)["final_eval"]
  assert final["count"] > 0 and math.isfinite(final["loss"])


@pytest.mark.parametrize("name", ["mnist1d_cnn", "mnist1d_mlp", "mnist1d_gru"])
def test_augmented_recipe_changes_only_the_schedule_and_the_shift(name):
  paper, augmented = load_experiment(name), load_experiment(name, "augmented")
  config_lib.validate(augmented)
  a, b = files.flatten(paper.to_dict()), files.flatten(augmented.to_dict())
  changed = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
  assert changed == {"optim.schedule": ("constant", "cosine"), "data.augment.shift": (0, 3)}
  with pytest.raises(ValueError, match=r"unknown argument 'huge'.*'augmented'"):
    load_experiment(name, "huge")
