"""Hugging Face Llama-family decoders (`transformers`' `LlamaForCausalLM` state dicts and
config.json) to and from strata's `arch.transformer.Llama`.

The weights give the vocabulary, width, depth and MLP width; the config gives what they do not:
the attention heads and key/value heads (grouped-query attention), the RMSNorm epsilon, the
rotary base (`rope_parameters.rope_theta`, or `rope_theta` in older files) and the Llama 3 rotary
scaling (`rope_type="llama3"`: `factor`, `low_freq_factor`, `high_freq_factor`,
`original_max_position_embeddings`), and whether the output layer is the embedding
(`tie_word_embeddings`). transformers keeps the rotary "rotate half" layout, strata's, so the
query and key kernels map without a permutation. Qwen2 (`model_type="qwen2"`) is the same
decoder with biases on the query, key and value projections alone (strata's `qkv_bias`); its
sliding-window attention is refused. Biases elsewhere (`attention_bias` on the output
projection, `mlp_bias`) and other rotary scalings are refused in one line.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from arch import transformer
from arch.published import links as L
from arch.published.converted import Converted

WHAT = "Hugging Face Llama"
ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings")


def _plain(state: Mapping[str, np.ndarray]) -> L.Lazy:
  """Keys without the `model.` prefix, read when used (`links.view`)."""
  return L.view(state, lambda k: k[len("model."):] if k.startswith("model.") else k)


def _rope(config: Mapping[str, Any]) -> tuple[float, tuple[float, ...]]:
  """(theta, llama3 scaling as ROPE_SCALING_KEYS' values, or ()) of a config."""
  rope = dict(config.get("rope_parameters") or {})
  scaling = dict(config.get("rope_scaling") or {})
  kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
  if kind == "default":
    return theta, ()
  if kind != "llama3":
    raise L.ConversionError(f"{WHAT}: rope_type={kind!r}; strata has the default rotary "
                            "positions and Llama 3's scaling")
  source = {**scaling, **rope}
  return theta, tuple(float(source[k]) for k in ROPE_SCALING_KEYS)


def structure(state: Mapping[str, np.ndarray], config: Mapping[str, Any],
              num_heads: int = 0) -> dict[str, Any]:
  """The `arch.transformer.Llama` fields of a Llama state dict (`_plain` keys) and its config.

  Raises:
    ConversionError: not a Llama, biases, a head width other than width / heads, or no heads.
  """
  for key in ("embed_tokens.weight", "layers.0.self_attn.q_proj.weight", "norm.weight"):
    if key not in state:
      raise L.ConversionError(f"{WHAT}: expected {key} (or model.{key}) in the checkpoint")
  qkv = {f"layers.0.self_attn.{p}_proj.bias" for p in "qkv"}
  biases = {k for k in state if k.endswith(".bias")}
  qkv_bias = qkv <= biases and all(re.search(r"self_attn\.[qkv]_proj\.bias$", k) for k in biases)
  if config.get("attention_bias") or config.get("mlp_bias") or (biases and not qkv_bias):
    raise L.ConversionError(f"{WHAT}: the checkpoint has biases beyond the query, key and "
                            "value projections' (attention_bias or mlp_bias); strata's Llama "
                            "has those alone (qkv_bias, Qwen2's)")
  if config.get("use_sliding_window"):
    raise L.ConversionError(f"{WHAT}: use_sliding_window=True; strata's attention sees the whole "
                            "context")
  vocab, width = state["embed_tokens.weight"].shape
  heads = num_heads or int(config.get("num_attention_heads", 0))
  if heads <= 0 or width % heads:
    raise L.ConversionError(f"{WHAT}: num_heads={heads} does not divide the width {width} (the "
                            "heads are in config.json's num_attention_heads, or --num_heads)")
  kv = int(config.get("num_key_value_heads") or heads)
  if config.get("head_dim") not in (None, width // heads):
    raise L.ConversionError(f"{WHAT}: head_dim={config['head_dim']} is not width / heads = "
                            f"{width // heads}; strata's heads split the width")
  depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
  theta, scaling = _rope(config)
  return {"name": "transformer.Llama", "vocab_size": int(vocab), "width": int(width),
          "depth": depth, "num_heads": heads, "num_kv_heads": kv,
          "mlp_dim": int(state["layers.0.mlp.gate_proj.weight"].shape[0]),
          "max_len": int(config.get("max_position_embeddings", 2048)),
          "norm_epsilon": float(config.get("rms_norm_eps", 1e-6)), "rope_base": theta,
          "rope_scaling": scaling, "tie_embeddings": "lm_head.weight" not in state or bool(
              config.get("tie_word_embeddings", False)), "qkv_bias": bool(qkv_bias)}


def _with_preset(model: Mapping[str, Any]) -> dict[str, Any]:
  """`model`'s fields with those a `transformer.Llama` preset sets and the config leaves out."""
  if model.get("name") == "transformer.Llama":
    return {**transformer.Llama.keywords, **model}
  return dict(model)


def llama_links(model: Mapping[str, Any]) -> list[L.Link]:
  heads, kv = model["num_heads"], model.get("num_kv_heads") or model["num_heads"]
  links = [L.Link("params", "embed/embedding", "embed_tokens.weight")]
  for i in range(model["depth"]):
    b, k = f"decoder/block{i}", f"layers.{i}"
    links += [L.Link("params", f"{b}/ln_attn/scale", f"{k}.input_layernorm.weight"),
              L.Link("params", f"{b}/ln_mlp/scale", f"{k}.post_attention_layernorm.weight"),
              L.Link("params", f"{b}/attn/query/kernel", f"{k}.self_attn.q_proj.weight",
                     "heads_in", heads),
              L.Link("params", f"{b}/attn/key/kernel", f"{k}.self_attn.k_proj.weight",
                     "heads_in", kv),
              L.Link("params", f"{b}/attn/value/kernel", f"{k}.self_attn.v_proj.weight",
                     "heads_in", kv),
              L.Link("params", f"{b}/attn/out/kernel", f"{k}.self_attn.o_proj.weight",
                     "heads_out", heads),
              L.Link("params", f"{b}/mlp_gate/kernel", f"{k}.mlp.gate_proj.weight", "dense"),
              L.Link("params", f"{b}/mlp_in/kernel", f"{k}.mlp.up_proj.weight", "dense"),
              L.Link("params", f"{b}/mlp_out/kernel", f"{k}.mlp.down_proj.weight", "dense")]
    if model.get("qkv_bias"):
      links += [L.Link("params", f"{b}/attn/{name}/bias", f"{k}.self_attn.{p}_proj.bias",
                       "heads_bias", n) for name, p, n in (("query", "q", heads),
                                                           ("key", "k", kv), ("value", "v", kv))]
  links.append(L.Link("params", "decoder/ln_final/scale", "norm.weight"))
  if not model.get("tie_embeddings"):
    links.append(L.Link("params", "head/kernel", "lm_head.weight", "dense"))
  return links


def llama(state: Mapping[str, np.ndarray], config: Mapping[str, Any],
          num_heads: int = 0) -> Converted:
  """A Llama state dict (NumPy arrays) and its config as strata's Llama: fields and variables.
  A tied checkpoint's `lm_head.weight` (the embedding again, as `state_dict()` gives it) is
  dropped."""
  plain = _plain(state)
  model = structure(plain, config, num_heads)
  if model["tie_embeddings"]:
    plain.pop("lm_head.weight", None)
  links = llama_links(model)
  return Converted(model, L.to_strata(links, plain, WHAT, r"rotary_emb\.inv_freq$"), links)


def to_hf(model: Mapping[str, Any], variables: Mapping[str, Any]
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """strata Llama variables as (a `LlamaForCausalLM` state dict, its config.json), a
  `Qwen2ForCausalLM`'s with `qkv_bias`; `model`: the config's fields (a `transformer.Llama`'s
  preset fields need not be repeated)."""
  model = _with_preset(model)
  if (model.get("norm"), model.get("mlp"), model.get("positions"), model.get("use_bias")) != (
      "rms", "swiglu", "rotary", False) or model.get("scan_layers"):
    raise L.ConversionError(
        "this TransformerLM has no Llama equivalent: Llama has RMSNorm, SwiGLU, rotary "
        "positions, no biases and unrolled blocks")
  plain = L.from_strata(llama_links(model), variables)
  state = {k if k.startswith("lm_head") else f"model.{k}": v for k, v in plain.items()}
  return state, hf_config(model)


def hf_config(model: Mapping[str, Any]) -> dict[str, Any]:
  """The config.json of a `LlamaForCausalLM` (a `Qwen2ForCausalLM` with `qkv_bias`) with
  strata's Llama `model` fields."""
  model = _with_preset(model)
  rope: dict[str, Any] = {"rope_type": "default",
                          "rope_theta": float(model.get("rope_base", 1e4))}
  if model.get("rope_scaling"):
    rope = {**rope, "rope_type": "llama3", **dict(zip(ROPE_SCALING_KEYS, model["rope_scaling"]))}
    rope["original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
  qwen = bool(model.get("qkv_bias"))
  return {"architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
          "model_type": "qwen2" if qwen else "llama", "use_sliding_window": False,
          "vocab_size": model["vocab_size"], "hidden_size": model["width"],
          "intermediate_size": model["mlp_dim"], "num_hidden_layers": model["depth"],
          "num_attention_heads": model["num_heads"],
          "num_key_value_heads": model.get("num_kv_heads") or model["num_heads"],
          "head_dim": model["width"] // model["num_heads"],
          "max_position_embeddings": model["max_len"], "rms_norm_eps": model["norm_epsilon"],
          "rope_parameters": rope, "tie_word_embeddings": bool(model.get("tie_embeddings")),
          "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
          "bos_token_id": None, "eos_token_id": None}
