"""The reference libraries' own models, to check a conversion against (`train.convert --check`
and the converter tests): torchvision's ResNets, timm's ViTs, Hugging Face's GPT-2 and Llama, in
PyTorch on the CPU.

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


def import_transformers() -> Any:
  import_torchvision()  # transformers imports it where it is installed
  return need("transformers", "a Hugging Face model")


def build(fmt: str, name: str, model: Mapping[str, Any], input_shape: tuple[int, ...],
          tied: bool = True) -> Any:
  """The reference library's model `name` for a checkpoint converted to strata's `model`
  fields (its class count; a ViT's image size from `input_shape` (H, W, C); a GPT-2 or Llama of
  the converted shape, a GPT-2's output layer the embedding where `tied`), random weights."""
  if fmt == "torchvision":
    return import_torchvision().models.get_model(name, weights=None,
                                                 num_classes=model["num_classes"])
  if fmt == "timm":
    kwargs = {"num_classes": model["num_classes"]}
    if model.get("patch_size"):
      kwargs["img_size"] = input_shape[0]
    return import_timm().create_model(name, pretrained=False, **kwargs)
  if fmt == "hf":
    transformers = import_transformers()
    from arch.published import hf_layout, hf_llama
    llama = model.get("name") == "transformer.Llama"
    config = dict(hf_llama.hf_config(model) if llama else hf_layout.hf_config(model, tied))
    config.pop("architectures")
    config.pop("model_type")
    if llama:
      return transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
  if fmt == "big_vision":
    raise ValueError("--check --format=big_vision: big_vision is not on the package index, so "
                     "there is no reference library to load; tests/arch/"
                     "test_published_big_vision.py checks the layout against its vendored model")
  raise ValueError(f"--format={fmt!r} has no reference library")


def logits(reference: Any, state: Mapping[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
  """The reference model's logits for `inputs` with `state` loaded (strictly: every tensor, no
  more; a tied output layer may be left out), in evaluation mode: images (N, H, W, C) float32
  give (N, K), token ids (N, T) give (N, T, V).

  Raises:
    ValueError: the state does not fit the reference model (its names and shapes, one line).
  """
  import torch

  from train.published_files import to_torch
  tensors = {k: to_torch(v) for k, v in state.items()}
  try:
    missing, unexpected = reference.load_state_dict(tensors, strict=False)
    tied = set(getattr(reference, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied - {"lm_head.weight"}:
      raise RuntimeError(f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    if hasattr(reference, "tie_weights"):
      reference.tie_weights()
  except RuntimeError as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    raise ValueError(f"the checkpoint does not fit the reference model: {' '.join(lines)[:400]}"
                     ) from e
  reference.eval()
  with torch.no_grad():
    if inputs.ndim == 2:
      return reference(torch.from_numpy(inputs.astype(np.int64))).logits.numpy()
    return reference(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
