"""timm's Vision Transformers (`timm.models.vision_transformer.VisionTransformer`) to and from
strata's `arch.transformer.TransformerClassifier`.

The structure is read from the state dict: `patch_embed.proj` gives the patch size and width,
`blocks.<i>` the depth, `mlp.fc1` the MLP width, `pos_embed` the number of patches, `head` the
classes; the class token is pooled (timm's `global_pool="token"`). For another image size the
position embeddings are resampled (`posemb`). The number of heads is not in the
weights: it is given (`num_heads`), or taken as width / 64, every ViT size's head width from Ti
to L. timm's MLP uses the exact (erf) GELU, so the model gets `gelu="exact"`; its LayerNorms'
epsilon, 1e-6, is flax's. Variants with no strata equivalent are refused in one line: a
LayerNorm after pooling (`fc_norm`), layer scale (`ls1`, `ls2`), no `qkv` bias, or positions
without the class token's (`no_embed_class`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from arch.published import links as L
from arch.published import posemb
from arch.published.converted import Converted

WHAT = "timm ViT"
HEAD_WIDTH = 64


def structure(state: Mapping[str, np.ndarray], num_heads: int = 0) -> dict[str, Any]:
  """The `arch.transformer.TransformerClassifier` fields of a timm ViT state dict.

  Raises:
    ConversionError: not a ViT, or a variant strata cannot build (module docstring).
  """
  for key, why in (("fc_norm.weight", "a LayerNorm after pooling (fc_norm)"),
                   ("blocks.0.ls1.gamma", "layer scale (ls1, ls2)"),
                   ("reg_token", "register tokens")):
    # strata's learned table has a row for a class token even when it pools the mean
    # (arch.transformer_stack.Stack), so a mean-pooled timm ViT is not mapped yet
    if key in state:
      raise L.ConversionError(f"{WHAT}: the checkpoint has {why}, which strata's ViT lacks")
  if "patch_embed.proj.weight" not in state or "blocks.0.attn.qkv.weight" not in state:
    raise L.ConversionError(f"{WHAT}: expected patch_embed.proj and blocks.0.attn.qkv in the "
                            "checkpoint (a timm VisionTransformer)")
  if "cls_token" not in state:
    raise L.ConversionError(f"{WHAT}: the checkpoint has no class token (global_pool='avg'); "
                            "strata converts class-token ViTs only")
  if "blocks.0.attn.qkv.bias" not in state:
    raise L.ConversionError(f"{WHAT}: the checkpoint's attention has no qkv bias; strata's has one")
  width, _, p, q = state["patch_embed.proj.weight"].shape
  if p != q:
    raise L.ConversionError(f"{WHAT}: patches of {p}x{q}; strata's ViT cuts square patches")
  depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
  tokens = state["pos_embed"].shape[1] - 1
  side = int(round(tokens ** 0.5))
  if side * side != tokens:
    raise L.ConversionError(f"{WHAT}: pos_embed has {state['pos_embed'].shape[1]} positions, "
                            "which is no class token and a square grid of patches "
                            "(no_embed_class checkpoints are not supported)")
  heads = num_heads or width // HEAD_WIDTH
  if heads <= 0 or width % heads:
    raise L.ConversionError(f"{WHAT}: num_heads={heads} does not divide the width {width}")
  return {"name": "transformer.TransformerClassifier", "num_classes":
          int(state["head.weight"].shape[0]), "width": int(width), "depth": depth,
          "num_heads": heads, "mlp_dim": int(state["blocks.0.mlp.fc1.weight"].shape[0]),
          "patch_size": int(p), "max_len": tokens, "positions": "learned",
          "pool": "cls", "gelu": "exact"}


def vit_links(model: Mapping[str, Any]) -> list[L.Link]:
  """The links of a ViT with `model`'s fields."""
  heads = model["num_heads"]
  links = [L.Link("params", "embed/kernel", "patch_embed.proj.weight", "patch"),
           L.Link("params", "embed/bias", "patch_embed.proj.bias"),
           L.Link("params", "encoder/position_embedding", "pos_embed", "lead")]
  links.append(L.Link("params", "cls", "cls_token"))
  for i in range(model["depth"]):
    b, k = f"encoder/block{i}", f"blocks.{i}"
    links += L.norm(f"{b}/ln_attn", f"{k}.norm1") + L.norm(f"{b}/ln_mlp", f"{k}.norm2")
    for part, name in enumerate(("query", "key", "value")):
      links += [L.Link("params", f"{b}/attn/{name}/kernel", f"{k}.attn.qkv.weight", "heads_in",
                       heads, part, 3),
                L.Link("params", f"{b}/attn/{name}/bias", f"{k}.attn.qkv.bias", "heads_bias",
                       heads, part, 3)]
    links += [L.Link("params", f"{b}/attn/out/kernel", f"{k}.attn.proj.weight", "heads_out",
                     heads),
              L.Link("params", f"{b}/attn/out/bias", f"{k}.attn.proj.bias")]
    links += L.dense(f"{b}/mlp_in", f"{k}.mlp.fc1") + L.dense(f"{b}/mlp_out", f"{k}.mlp.fc2")
  return links + L.norm("encoder/ln_final", "norm") + L.dense("head", "head")


def vit(state: Mapping[str, np.ndarray], num_heads: int = 0, image_size: int = 0) -> Converted:
  """A timm ViT state dict (NumPy arrays) as strata's ViT: fields, variables and input shape.
  `image_size` > 0: for images of that side, the position embeddings of the patch grid
  resampled (`posemb.resample`, big_vision's); its patches must tile it.

  Raises:
    ConversionError: the checkpoint does not fit (`structure`), or `image_size` is not a
      multiple of the patch size.
  """
  model = structure(state, num_heads)
  links = vit_links(model)
  variables = L.to_strata(links, state, WHAT)
  p = model["patch_size"]
  side = int(round(model["max_len"] ** 0.5)) * p
  if image_size and image_size != side:
    if image_size % p:
      raise L.ConversionError(f"{WHAT}: image_size={image_size} is not a multiple of the patch "
                              f"size {p}")
    table = variables["params"]["encoder"]["position_embedding"]
    grid = posemb.resample(table[1:], image_size // p)
    variables["params"]["encoder"]["position_embedding"] = np.concatenate([table[:1], grid])
    model["max_len"], side = grid.shape[0], image_size
  channels = int(state["patch_embed.proj.weight"].shape[1])
  return Converted(model, variables, links, (side, side, channels))


def to_timm(model: Mapping[str, Any], variables: Mapping[str, Any],
            channels: int = 3) -> dict[str, np.ndarray]:
  """strata ViT variables as a timm state dict (`VisionTransformer.load_state_dict` takes it).

  Raises:
    ConversionError: a ViT timm's layout cannot hold (other positions, pre-logits, 1-D).
  """
  if model.get("positions") != "learned" or model.get("pre_logits", 0) or model.get(
      "vocab_size", 0) or model.get("pool") != "cls":
    raise L.ConversionError(
        f"model {dict(model)} has no timm ViT equivalent: timm's takes images with learned "
        "positions, class-token pooling and no pre-logits layer")
  return L.from_strata(vit_links(model), variables, channels)
