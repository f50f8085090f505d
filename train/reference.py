"""The reference libraries' own models, to check a conversion against (`train.convert --check`
and the converter tests): torchvision's ResNets, timm's ViTs, in PyTorch on the CPU.

torchvision's wheel on this project's package index is built against PyTorch with CUDA; with the
CPU PyTorch of the `bench` extra its compiled detection operators (`torchvision::nms`, ...)
cannot load, and torchvision 0.28's import then fails registering their meta kernels ("operator
torchvision::nms does not exist"). `import_torchvision` declares the two operators' schemas
first (no kernels: calling them is an error), so that the pure-PyTorch models import; timm
imports torchvision too. The models themselves use no torchvision operator.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import numpy as np

from train.published_files import need

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY: list[Any] = []  # the torch.library.Library that holds the schemas, kept alive


def import_torchvision() -> Any:
  """torchvision, imported with the workaround of the module docstring where its compiled
  operators cannot load."""
  torch = need("torch", "a torchvision model")
  try:
    return need("torchvision", "a torchvision model")
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
  for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
    del sys.modules[name]
  library = torch.library.Library("torchvision", "DEF")
  for schema in _SCHEMAS:
    library.define(schema)
  _LIBRARY.append(library)
  return need("torchvision", "a torchvision model")


def import_timm() -> Any:
  import_torchvision()
  return need("timm", "a timm model")


def build(fmt: str, name: str, model: Mapping[str, Any], input_shape: tuple[int, ...]) -> Any:
  """The reference library's model `name` for a checkpoint converted to strata's `model`
  fields (its class count; a ViT's image size from `input_shape` (H, W, C)), random weights."""
  if fmt == "torchvision":
    return import_torchvision().models.get_model(name, weights=None,
                                                 num_classes=model["num_classes"])
  if fmt == "timm":
    kwargs = {"num_classes": model["num_classes"]}
    if model.get("patch_size"):
      kwargs["img_size"] = input_shape[0]
    return import_timm().create_model(name, pretrained=False, **kwargs)
  raise ValueError(f"--format={fmt!r} has no reference library")


def logits(reference: Any, state: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
  """The reference model's logits (N, K) for `images` (N, H, W, C) float32 with `state` loaded
  (strictly: every tensor, no more), in evaluation mode.

  Raises:
    ValueError: the state does not fit the reference model (its names and shapes, one line).
  """
  import torch
  try:
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                              strict=True)
  except RuntimeError as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    raise ValueError(f"the checkpoint does not fit the reference model: {' '.join(lines)[:400]}"
                     ) from e
  reference.eval()
  with torch.no_grad():
    return reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
