"""The public-catalog experiments (CIFAR-10, ImageNet) train in tiny mode, streaming from TFDS's
mock data with the real datasets' feature specs and decoders."""

import pytest

from tests.conftest import load_experiment, mock_catalog
from train import loop


# 6-8 s each, mostly compiling: with the slow checks (and in CI), for the default suite's budget.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10_resnet20", "imagenet_resnet50", "imagenet_vit_s16"])
def test_tiny_mode_trains_streaming_on_mock_data(name, tmp_path):
  c = load_experiment(name, "tiny", str(tmp_path / "tfds"))
  with c.unlocked():
    c.data.download = True  # TFDS's mock stands in for the prepared dataset
    c.data.in_memory = "false"
  with mock_catalog(num_examples=12):
    run = loop.build(c)
    assert run.train_pipe.streaming and run.eval_pipe.streaming
    if c.data.image.size:  # images cropped to the recipe's (tiny) size
      assert run.example["inputs"].shape == (4, 32, 32, 3)
    final = loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert final["count"] == 12  # every mock evaluation example once
  assert 0.0 <= final["accuracy"] <= 1.0 and final["loss"] > 0
