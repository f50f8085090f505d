"""timm's Vision Transformers (`timm.models.vision_transformer.VisionTransformer`) to and from
strata's `arch.transformer.TransformerClassifier`.

The structure is read from the state dict: `patch_embed.proj` gives the patch size and width,
`blocks.<i>` the depth, `mlp.fc1` the MLP width, `pos_embed` the number of patches, `head` the
classes, `cls_token` the class token, `fc_norm` a LayerNorm after pooling (strata's
`norm_after_pool`), `attn_pool` attention pooling (strata's `pool="map"`). The pooling is
timm's `global_pool`: "map" with an `attn_pool`; otherwise, where the caller gives it (`config`,
the timm model's own: `global_pool`, its GELU), "token" is strata's "cls" and "avg" its "mean"
(a class token, if any, attended to but not pooled, as timm's); without it, "token" where there
is a class token and no `fc_norm`, else "avg". A model without a class token has no position for
one: strata's learned table (a row per token, a class token's first) gets a zero row at its end,
which it never uses. For another image size the position embeddings are resampled (`posemb`).
The number of heads is not in the weights: it is given (`num_heads`), or taken as width / 64,
every ViT size's head width from Ti to L. timm's MLPs use the exact (erf) GELU unless the
model says otherwise (SigLIP's "gelu_tanh"); its LayerNorms' epsilon, 1e-6, is flax's. Variants
with no strata equivalent are refused in one line: layer scale (`ls1`, `ls2`), register tokens,
no `qkv` bias, positions without the class token's (`no_embed_class`), max or "prr" pooling.
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


POOLS = {"token": "cls", "avg": "mean", "map": "map"}  # timm's global_pool -> strata's pool


def structure(state: Mapping[str, np.ndarray], num_heads: int = 0,
              config: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The `arch.transformer.TransformerClassifier` fields of a timm ViT state dict; `config`:
  the timm model's `global_pool` and `gelu` ("exact" or "tanh") where known.

  Raises:
    ConversionError: not a ViT, or a variant strata cannot build (module docstring).
  """
  config = config or {}
  for key, why in (("blocks.0.ls1.gamma", "layer scale (ls1, ls2)"),
                   ("reg_token", "register tokens"),
                   ("attn_pool.q_norm.weight", "a normalised attention pool")):
    if key in state:
      raise L.ConversionError(f"{WHAT}: the checkpoint has {why}, which strata's ViT lacks")
  if "patch_embed.proj.weight" not in state or "blocks.0.attn.qkv.weight" not in state:
    raise L.ConversionError(f"{WHAT}: expected patch_embed.proj and blocks.0.attn.qkv in the "
                            "checkpoint (a timm VisionTransformer)")
  if "blocks.0.attn.qkv.bias" not in state:
    raise L.ConversionError(f"{WHAT}: the checkpoint's attention has no qkv bias; strata's has one")
  class_token = "cls_token" in state
  given = config.get("global_pool") or ("map" if "attn_pool.latent" in state else
                                        "token" if class_token and "fc_norm.weight" not in state
                                        else "avg")
  if given not in POOLS:
    raise L.ConversionError(f"{WHAT}: global_pool={given!r}; strata pools as timm's "
                            f"{sorted(POOLS)}")
  if (given == "map") != ("attn_pool.latent" in state) or (given == "token" and not class_token):
    raise L.ConversionError(f"{WHAT}: global_pool={given!r} with a checkpoint that has "
                            f"{'an' if 'attn_pool.latent' in state else 'no'} attn_pool and "
                            f"{'a' if class_token else 'no'} cls_token")
  width, _, p, q = state["patch_embed.proj.weight"].shape
  if p != q:
    raise L.ConversionError(f"{WHAT}: patches of {p}x{q}; strata's ViT cuts square patches")
  depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
  tokens = state["pos_embed"].shape[1] - class_token
  side = int(round(tokens ** 0.5))
  if side * side != tokens:
    raise L.ConversionError(f"{WHAT}: pos_embed has {state['pos_embed'].shape[1]} positions, "
                            f"which is not {'a class token and ' if class_token else ''}a "
                            "square grid of patches (no_embed_class checkpoints are not "
                            "supported)")
  heads = num_heads or width // HEAD_WIDTH
  if heads <= 0 or width % heads:
    raise L.ConversionError(f"{WHAT}: num_heads={heads} does not divide the width {width}")
  mlp_dim = int(state["blocks.0.mlp.fc1.weight"].shape[0])
  if given == "map" and state["attn_pool.mlp.fc1.weight"].shape[0] != mlp_dim:
    raise L.ConversionError(f"{WHAT}: the attention pool's MLP is "
                            f"{state['attn_pool.mlp.fc1.weight'].shape[0]} wide, the blocks' "
                            f"{mlp_dim}; strata's pool has the blocks' width")
  return {"name": "transformer.TransformerClassifier", "num_classes":
          int(state["head.weight"].shape[0]), "width": int(width), "depth": depth,
          "num_heads": heads, "mlp_dim": mlp_dim, "patch_size": int(p), "max_len": tokens,
          "positions": "learned", "pool": POOLS[given],
          "class_token": class_token and given != "token",
          "norm_after_pool": "fc_norm.weight" in state, "gelu": config.get("gelu", "exact")}


def vit_links(model: Mapping[str, Any]) -> list[L.Link]:
  """The links of a ViT with `model`'s fields (a table without a class token's row apart:
  `vit`)."""
  heads = model["num_heads"]
  links = [L.Link("params", "embed/kernel", "patch_embed.proj.weight", "patch"),
           L.Link("params", "embed/bias", "patch_embed.proj.bias")]
  if _has_class_token(model):
    links += [L.Link("params", "encoder/position_embedding", "pos_embed", "lead"),
              L.Link("params", "cls", "cls_token")]
  for i in range(model["depth"]):
    b, k = f"encoder/block{i}", f"blocks.{i}"
    links += L.norm(f"{b}/ln_attn", f"{k}.norm1") + L.norm(f"{b}/ln_mlp", f"{k}.norm2")
    links += L.fused_attention(f"{b}/attn", f"{k}.attn.qkv", f"{k}.attn.proj", heads)
    links += L.dense(f"{b}/mlp_in", f"{k}.mlp.fc1") + L.dense(f"{b}/mlp_out", f"{k}.mlp.fc2")
  if model.get("pool") == "map":
    links += [L.Link("params", "map/probe", "attn_pool.latent")]
    for part, name in enumerate(("key", "value")):
      links += [L.Link("params", f"map/attn/{name}/kernel", "attn_pool.kv.weight", "heads_in",
                       heads, part, 2),
                L.Link("params", f"map/attn/{name}/bias", "attn_pool.kv.bias", "heads_bias",
                       heads, part, 2)]
    links += [L.Link("params", "map/attn/query/kernel", "attn_pool.q.weight", "heads_in", heads),
              L.Link("params", "map/attn/query/bias", "attn_pool.q.bias", "heads_bias", heads),
              L.Link("params", "map/attn/out/kernel", "attn_pool.proj.weight", "heads_out",
                     heads),
              L.Link("params", "map/attn/out/bias", "attn_pool.proj.bias")]
    links += (L.norm("map/ln", "attn_pool.norm") + L.dense("map/mlp_in", "attn_pool.mlp.fc1")
              + L.dense("map/mlp_out", "attn_pool.mlp.fc2"))
  norm = L.norm("ln_pool", "fc_norm") if model.get("norm_after_pool") else L.norm(
      "encoder/ln_final", "norm")
  return links + norm + L.dense("head", "head")


def _has_class_token(model: Mapping[str, Any]) -> bool:
  return model.get("pool", "cls") == "cls" or bool(model.get("class_token"))


def vit(state: Mapping[str, np.ndarray], num_heads: int = 0, image_size: int = 0,
        config: Mapping[str, Any] | None = None) -> Converted:
  """A timm ViT state dict (NumPy arrays) as strata's ViT: fields, variables and input shape.
  `image_size` > 0: for images of that side, the position embeddings of the patch grid
  resampled (`posemb.resample`, big_vision's); its patches must tile it. `config`: the timm
  model's `global_pool` and `gelu` where known (`structure`).

  Raises:
    ConversionError: the checkpoint does not fit (`structure`), or `image_size` is not a
      multiple of the patch size.
  """
  model = structure(state, num_heads, config)
  links = vit_links(model)
  prefix = int(_has_class_token(model))
  rest = {k: v for k, v in state.items() if prefix or k != "pos_embed"}
  variables = L.to_strata(links, rest, WHAT)
  if not prefix:  # no class token's row: one unused zero row at the end (module docstring)
    grid = np.asarray(state["pos_embed"])[0]
    variables["params"].setdefault("encoder", {})["position_embedding"] = np.concatenate(
        [grid, np.zeros_like(grid[:1])])
  p = model["patch_size"]
  side = int(round(model["max_len"] ** 0.5)) * p
  if image_size and image_size != side:
    if image_size % p:
      raise L.ConversionError(f"{WHAT}: image_size={image_size} is not a multiple of the patch "
                              f"size {p}")
    table = variables["params"]["encoder"]["position_embedding"]
    grid = posemb.resample(table[prefix:prefix + model["max_len"]], image_size // p)
    rows = [table[:1], grid] if prefix else [grid, np.zeros_like(grid[:1])]
    variables["params"]["encoder"]["position_embedding"] = np.concatenate(rows)
    model["max_len"], side = grid.shape[0], image_size
  channels = int(state["patch_embed.proj.weight"].shape[1])
  return Converted(model, variables, links, (side, side, channels))


def to_timm(model: Mapping[str, Any], variables: Mapping[str, Any],
            channels: int = 3) -> dict[str, np.ndarray]:
  """strata ViT variables as a timm state dict (`VisionTransformer.load_state_dict` takes it,
  built with the matching `global_pool`, `class_token` and `fc_norm`).

  Raises:
    ConversionError: a ViT timm's layout cannot hold (other positions or pooling, pre-logits,
      1-D).
  """
  if model.get("positions") != "learned" or model.get("pre_logits", 0) or model.get(
      "vocab_size", 0) or model.get("pool", "cls") not in ("cls", "mean", "map"):
    raise L.ConversionError(
        f"model {dict(model)} has no timm ViT equivalent: timm's takes images with learned "
        "positions, class-token, mean or attention pooling and no pre-logits layer")
  state = L.from_strata(vit_links(model), variables, channels)
  if not _has_class_token(model):  # the table's unused last row stays behind
    state["pos_embed"] = np.asarray(variables["params"]["encoder"]["position_embedding"])[None,
                                                                                          :-1]
  return state
