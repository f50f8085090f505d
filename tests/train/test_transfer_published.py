"""init_from with a published checkpoint (`init_from.format`, `path`, `skip`, `rename`;
train/transfer.py): a torchvision ResNet file starts a strata ResNet with another class count,
its backbone copied exactly (against the file's tensors, transposed), the head at its
initialisation, and every source array left unused named in one line."""

import importlib.util

import jax
import ml_collections as mlc
import numpy as np
import pytest

import arch
from train import config as config_lib
from train import config_validate, transfer
from train.errors import ConfigError
from train.paradigms import supervised

if not all(importlib.util.find_spec(p) for p in ("torch", "torchvision")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)
import torch  # noqa: E402

from train import reference  # noqa: E402

MODEL = {"name": "cnn.ResNet", "num_classes": 10, "stage_sizes": (1, 1, 1, 1),
         "widths": (64, 128, 256, 512), "stem": "imagenet", "padding": "symmetric"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
  tv = reference.import_torchvision()
  module = tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=4)
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      if t.dtype.is_floating_point:
        t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                else torch.randn(t.shape, generator=g))
  path = str(tmp_path_factory.mktemp("tv") / "resnet.pth")
  torch.save(module.state_dict(), path)
  c = config_lib.base()
  c.model = MODEL
  paradigm = supervised.make(arch.build(MODEL), c, total_steps=1)
  batch = {"inputs": np.zeros((2, 32, 32, 3), np.float32), "label": np.zeros(2, np.int32),
           "mask": np.ones(2, np.float32)}
  state = paradigm.init(jax.random.key(0), batch)
  return {k: v.numpy() for k, v in module.state_dict().items()}, path, state


def init(path, **fields):
  return mlc.ConfigDict({"workdir": "", "format": "torchvision", "path": path, "include": (),
                         "skip": (), "rename": (), "prune": 0.0, **fields})


def test_a_torchvision_file_starts_a_resnet_with_a_new_head(published):
  tensors, path, state = published
  new, record = transfer.initialize_from(state, init(path), None, MODEL)
  np.testing.assert_array_equal(new.params["stage3_block0"]["conv2"]["kernel"],
                                tensors["layer4.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(new.model_state["batch_stats"]["stem_bn"]["var"],
                                tensors["bn1.running_var"])
  np.testing.assert_array_equal(new.params["head"]["kernel"], state.params["head"]["kernel"])
  assert record["kept_initialisation"] == ["head/bias", "head/kernel"]
  assert record["unused"] == ["parameter head/bias: shape (4,) there, (10,) here",
                              "parameter head/kernel: shape (512, 4) there, (512, 10) here"]
  assert record["source"] == f"{path} (torchvision)"


def test_skip_and_rename(published):
  tensors, path, state = published
  new, record = transfer.initialize_from(
      state, init(path, skip=("^stem",), rename=(("^stage0_", "first_"),)), None, MODEL)
  np.testing.assert_array_equal(new.params["stem"]["kernel"], state.params["stem"]["kernel"])
  assert "stem/kernel" in record["kept_initialisation"]
  assert "parameter first_block0/conv1/kernel: this model has no such path" in record["unused"]
  assert "stage0_block0/conv1/kernel" in record["kept_initialisation"]
  assert "stage1_block0/conv1/kernel" in record["parameters"]


@pytest.mark.parametrize("fields,message", [
    (dict(format="timm", path=""), "init_from.format='timm' reads a published checkpoint from "
                                   "init_from.path"),
    (dict(format="strata", path="x.pth"), "init_from.path='x.pth' names a published"),
    (dict(format="onnx", path="x"), "init_from.format='onnx'; expected one of"),
    (dict(format="timm", path="x", rename=(("a",),)), "init_from.rename item ('a',)"),
])
def test_init_from_fields_are_checked_in_one_line(fields, message):
  c = config_lib.base()
  for k, v in fields.items():
    c.init_from[k] = v
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_validate._check_init_from(c.init_from)
