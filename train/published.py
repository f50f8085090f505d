"""Published checkpoints as strata models, for `python -m train.convert` and `init_from.format`:
`convert` reads a state dict in a published layout (`arch.published`) into the strata model its
structure describes and checks it against that model's own variables; `check` compares the
result with the reference library's model on random inputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import arch
from arch.published import (
  big_vision_layout,
  hf_layout,
  hf_llama,
  timm_layout,
  torchvision_layout,
)
from arch.published import links as links_lib
from arch.published.converted import Converted
from train import reference

FORMATS = ("torchvision", "timm", "big_vision", "hf")


def convert(fmt: str, state: dict[str, np.ndarray], num_heads: int = 0, image_size: int = 0,
            what: str = "--checkpoint", config: dict[str, Any] | None = None) -> Converted:
  """`state` in `fmt`'s layout as strata's model, checked against the model's own variables;
  its `input_shape` (H, W, C): `image_size` square (a ViT's position embeddings resampled to
  it), else the checkpoint's own (a ViT's) or 224. `config`: a Hugging Face folder's
  config.json (its `model_type` picks GPT-2 or Llama; without one, the tensors' names do), or
  a timm ViT's `global_pool` and `gelu` (`timm_layout.structure`).

  Raises:
    ConversionError: the checkpoint does not fit the layout or strata's model (one line).
  """
  if fmt == "torchvision":
    converted = torchvision_layout.resnet(state)
  elif fmt == "timm":
    converted = timm_layout.vit(state, num_heads, image_size, config)
  elif fmt == "big_vision":
    converted = big_vision_layout.vit(state, image_size)
  elif (config or {}).get("model_type") in ("llama", "qwen2") or (
      not (config or {}).get("model_type") and "model.embed_tokens.weight" in state):
    converted = hf_llama.llama(state, config or {}, num_heads)
  else:
    converted = hf_layout.gpt2(state, num_heads)
  model = arch.build(converted.model)
  if fmt == "hf":
    shape, example = (8,), jnp.zeros((1, 8), jnp.int32)
  else:
    shape = converted.input_shape or (image_size or 224, image_size or 224,
                                      int(state["conv1.weight"].shape[1]))
    example = jnp.zeros((1, *shape))
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=False))
  links_lib.check_shapes(converted.variables, expected, what)
  converted.input_shape = tuple(shape)
  return converted


def check(fmt: str, name: str, converted: Converted, state: dict[str, np.ndarray],
          seed: int = 0) -> dict[str, float]:
  """Both models' logits on the same 2 random images (or sequences of 8 random tokens):
  {"max_abs_difference", "max_abs_logit"}."""
  rng = np.random.default_rng(seed)
  if fmt == "hf":
    inputs = rng.integers(0, converted.model["vocab_size"], (2, *converted.input_shape))
    inputs = inputs.astype(np.int32)
  else:
    inputs = rng.normal(size=(2, *converted.input_shape)).astype(np.float32)
  tied = bool(converted.model.get("tie_embeddings", True))
  ref = reference.logits(reference.build(fmt, name, converted.model, converted.input_shape, tied),
                         state, inputs)
  ours = np.asarray(arch.build(converted.model).apply(converted.variables, jnp.asarray(inputs),
                                                      train=False))
  return {"max_abs_difference": float(np.max(np.abs(ours - ref))),
          "max_abs_logit": float(np.max(np.abs(ref)))}
