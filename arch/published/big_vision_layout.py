"""big_vision's ViTs (`big_vision/models/vit.py`: its `.npz` checkpoints, flat "/"-joined
parameter names, optionally under `params/` or `opt/target/`) to and from strata's
`arch.transformer.TransformerClassifier`.

Both are flax, so kernels keep their layouts; what differs is where things are. big_vision adds its
position embeddings to the patches *before* it prepends the class token, so the class token has
none: strata's learned table (a row per token, the class token's first) gets a zero row there. Its
pool types "tok" (class token), "gap" (the mean of the tokens after the final LayerNorm, strata's
"mean") and "map" (attention pooling, its `MAPHead`: strata's "map") map. Without a `pos_embedding`
the positions are the fixed 2-D sin-cos ones (`posemb="sincos2d"`). The heads, which the weights do
not hold, are in the attention kernels' shapes (D, heads, head width). The blocks may be unrolled
(`Transformer/encoderblock_<i>`) or scanned (`Transformer/encoderblock`, depth first, as
`scan=True` saves them). `rep_size` is strata's `pre_logits`; big_vision's MLP uses the tanh GELU,
as strata's default.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from arch.published import links as L
from arch.published import posemb
from arch.published.converted import Converted

WHAT = "big_vision ViT"
PREFIXES = ("params/", "opt/target/")


def _plain(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Names without a `params/` or `opt/target/` prefix, and scanned blocks unstacked."""
  out: dict[str, np.ndarray] = {}
  for k, v in state.items():
    for prefix in PREFIXES:
      if k.startswith(prefix):
        k = k[len(prefix):]
    if k.startswith("Transformer/encoderblock/"):
      rest = k[len("Transformer/encoderblock/"):]
      for i in range(v.shape[0]):
        out[f"Transformer/encoderblock_{i}/{rest}"] = v[i]
    else:
      out[k] = v
  return out


def structure(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The `arch.transformer.TransformerClassifier` fields of a big_vision ViT (`_plain` names).

  Raises:
    ConversionError: not a ViT.
  """
  if "embedding/kernel" not in state or "Transformer/encoder_norm/scale" not in state:
    raise L.ConversionError(f"{WHAT}: expected embedding/kernel and Transformer/encoder_norm "
                            "in the checkpoint (a big_vision ViT)")
  p, q, _, width = state["embedding/kernel"].shape
  if p != q:
    raise L.ConversionError(f"{WHAT}: patches of {p}x{q}; strata's ViT cuts square patches")
  depth = 1 + max(int(m.group(1)) for k in state
                  if (m := re.match(r"Transformer/encoderblock_(\d+)/", k)))
  attn = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0"
  heads = int(state[f"{attn}/query/kernel"].shape[1])
  fields = {"name": "transformer.TransformerClassifier", "width": int(width), "depth": depth,
            "num_heads": heads,
            "mlp_dim": int(state["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1]),
            "patch_size": int(p), "pool": "cls" if "cls" in state else
            "map" if "MAPHead_0/probe" in state else "mean",
            "pre_logits": int(state["pre_logits/kernel"].shape[1]) if "pre_logits/kernel" in state
            else 0, "num_classes": int(state["head/kernel"].shape[1])}
  if "pos_embedding" in state:
    fields.update(positions="learned", max_len=int(state["pos_embedding"].shape[1]))
  else:
    fields.update(positions="sincos2d", max_len=0)
  return fields


def vit_links(model: Mapping[str, Any]) -> list[L.Link]:
  """The links of a big_vision ViT with `model`'s fields (the position table apart: `vit`)."""
  links = [L.Link("params", "embed/kernel", "embedding/kernel", "flat_patch"),
           L.Link("params", "embed/bias", "embedding/bias")]
  if model["pool"] == "cls":
    links.append(L.Link("params", "cls", "cls"))
  for i in range(model["depth"]):
    b, k = f"encoder/block{i}", f"Transformer/encoderblock_{i}"
    for ours, theirs in (("ln_attn", "LayerNorm_0"), ("ln_mlp", "LayerNorm_1")):
      links += [L.Link("params", f"{b}/{ours}/{n}", f"{k}/{theirs}/{n}") for n in ("scale", "bias")]
    for name in ("query", "key", "value", "out"):
      links += [L.Link("params", f"{b}/attn/{name}/{n}",
                       f"{k}/MultiHeadDotProductAttention_0/{name}/{n}")
                for n in ("kernel", "bias")]
    for ours, theirs in (("mlp_in", "Dense_0"), ("mlp_out", "Dense_1")):
      links += [L.Link("params", f"{b}/{ours}/{n}", f"{k}/MlpBlock_0/{theirs}/{n}")
                for n in ("kernel", "bias")]
  links += [L.Link("params", f"encoder/ln_final/{n}", f"Transformer/encoder_norm/{n}")
            for n in ("scale", "bias")]
  if model["pool"] == "map":
    links += [L.Link("params", "map/probe", "MAPHead_0/probe")]
    links += [L.Link("params", f"map/attn/{name}/{n}",
                     f"MAPHead_0/MultiHeadDotProductAttention_0/{name}/{n}")
              for name in ("query", "key", "value", "out") for n in ("kernel", "bias")]
    links += [L.Link("params", f"map/ln/{n}", f"MAPHead_0/LayerNorm_0/{n}")
              for n in ("scale", "bias")]
    links += [L.Link("params", f"map/{ours}/{n}", f"MAPHead_0/MlpBlock_0/{theirs}/{n}")
              for ours, theirs in (("mlp_in", "Dense_0"), ("mlp_out", "Dense_1"))
              for n in ("kernel", "bias")]
  if model.get("pre_logits"):
    links += [L.Link("params", f"pre_logits/{n}", f"pre_logits/{n}") for n in ("kernel", "bias")]
  return links + [L.Link("params", f"head/{n}", f"head/{n}") for n in ("kernel", "bias")]


def vit(state: Mapping[str, np.ndarray], image_size: int = 0) -> Converted:
  """A big_vision ViT's named arrays as strata's ViT: fields, variables and input shape, for
  images of `image_size` where given (learned positions resampled, `posemb.resample`, as
  big_vision's `resample_posemb`), else the checkpoint's (a sin-cos ViT's is not in its
  weights: 224, its recipes').

  Raises:
    ConversionError: the checkpoint does not fit (`structure`), or `image_size` is not a
      multiple of the patch size.
  """
  plain = _plain(state)
  model = structure(plain)
  table = plain.pop("pos_embedding", None)
  links = vit_links(model)
  variables = L.to_strata(links, plain, WHAT)
  p, channels = model["patch_size"], int(plain["embedding/kernel"].shape[2])
  if image_size and image_size % p:
    raise L.ConversionError(f"{WHAT}: image_size={image_size} is not a multiple of the patch "
                            f"size {p}")
  if table is not None:
    grid = table[0]
    if image_size:
      grid = posemb.resample(grid, image_size // p)
      model["max_len"] = grid.shape[0]
    zero = np.zeros_like(grid[:1])
    # strata's table has a row per token, the class token's first; big_vision's class token has
    # no position; a mean-pooled model's table has one row more than it uses
    rows = [zero, grid] if model["pool"] == "cls" else [grid, zero]
    variables["params"]["encoder"]["position_embedding"] = np.concatenate(rows)
    side = int(round(grid.shape[0] ** 0.5)) * p
  else:
    side = image_size or 224
    model["max_len"] = (side // p) ** 2
  return Converted(model, variables, links, (side, side, channels))


def to_big_vision(model: Mapping[str, Any], variables: Mapping[str, Any],
                  channels: int = 3) -> dict[str, np.ndarray]:
  """strata ViT variables as big_vision's flat named arrays (unrolled blocks, no prefix), as
  `np.savez` writes its checkpoints.

  Raises:
    ConversionError: a ViT big_vision's layout cannot hold (other positions, a class token's
      own position, 1-D inputs).
  """
  positions = model.get("positions", "learned")
  if positions not in ("learned", "sincos2d") or model.get("vocab_size", 0) or model.get(
      "pool", "cls") not in ("cls", "mean", "map") or model.get("gelu", "tanh") != "tanh" or \
      model.get("class_token") or model.get("norm_after_pool"):
    raise L.ConversionError(f"model {dict(model)} has no big_vision ViT equivalent")
  state = L.from_strata(vit_links(model), variables, channels)
  if positions == "learned":
    table = np.asarray(variables["params"]["encoder"]["position_embedding"])
    extra = table[0] if model.get("pool", "cls") == "cls" else table[-1]
    if np.any(extra != 0):
      raise L.ConversionError("the class token's learned position is not zero: big_vision's "
                              "class token has none")
    state["pos_embedding"] = (table[1:] if model.get("pool", "cls") == "cls" else table[:-1])[None]
  return state
