"""Every generative experiment file (autoencoders, GANs, diffusion) trains in its tiny mode: the
other half of `test_experiments.test_tiny_mode_trains`, in a file of its own so that the two
test workers share the work."""

import json
import math
import os

import pytest

from tests.experiments.test_experiments import GENERATIVE, NAMES, tiny_params


def test_every_generative_experiment_is_an_experiment():
  assert set(GENERATIVE) <= set(NAMES)


@pytest.mark.parametrize("name", tiny_params(GENERATIVE))
def test_tiny_mode_trains(name, trained):
  with open(os.path.join(trained(name), "summary.json")) as f:
    final = json.load(f)["final_eval"]
  assert final["count"] > 0 and math.isfinite(final["loss"])
