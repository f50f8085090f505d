"""Hugging Face GPT-2 (`transformers`' `GPT2LMHeadModel` / `GPT2Model` state dicts) to and from
strata's `arch.transformer.TransformerLM`.

The structure is read from the state dict: `wte` the vocabulary and width, `wpe` the longest
sequence, `h.<i>` the depth, `mlp.c_fc` the MLP width; the heads, which the weights do not hold,
are given or width / 64 (every GPT-2 size). GPT-2's `Conv1D` stores (in, out) kernels, PyTorch
`Linear`'s transpose, and its fused `c_attn` holds the query, key and value columns in turn.
GPT-2's LayerNorm epsilon is 1e-5 (`norm_epsilon`) and its `gelu_new` the tanh GELU. Its output
layer is the token embedding (`tie_word_embeddings`), and so is strata's (`tie_embeddings`);
a file whose `lm_head.weight` differs from the embedding gets a head of its own (with a zero
bias), and exports back untied.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from arch.published import links as L
from arch.published.converted import Converted

WHAT = "Hugging Face GPT-2"
HEAD_WIDTH = 64
CONV1D = r"\.(c_attn|c_proj|c_fc)\.weight$"
IGNORE = r"attn\.(masked_)?bias$"  # the causal-mask buffers older GPT-2 files carry


def _plain(state: Mapping[str, np.ndarray]) -> L.Lazy:
  """Keys without the `transformer.` prefix, Conv1D kernels as Linear (out, in), read when
  used (`links.view`)."""
  return L.view(state, lambda k: k[len("transformer."):] if k.startswith("transformer.") else k,
                lambda k, v: v.T if re.search(CONV1D, k) else v)


def structure(state: Mapping[str, np.ndarray], num_heads: int = 0) -> dict[str, Any]:
  """The `arch.transformer.TransformerLM` fields of a GPT-2 state dict (`_plain` keys).

  Raises:
    ConversionError: not a GPT-2 (no `wte`, `wpe`, `h.0.attn.c_attn`).
  """
  for key in ("wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "ln_f.weight"):
    if key not in state:
      raise L.ConversionError(f"{WHAT}: expected {key} (or transformer.{key}) in the checkpoint")
  vocab, width = state["wte.weight"].shape
  heads = num_heads or width // HEAD_WIDTH
  if heads <= 0 or width % heads:
    raise L.ConversionError(f"{WHAT}: num_heads={heads} does not divide the width {width}")
  depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"h\.(\d+)\.", k)))
  return {"name": "transformer.TransformerLM", "vocab_size": int(vocab), "width": int(width),
          "depth": depth, "num_heads": heads,
          "mlp_dim": int(state["h.0.mlp.c_fc.weight"].shape[0]),
          "max_len": int(state["wpe.weight"].shape[0]), "positions": "learned", "gelu": "tanh",
          "norm_epsilon": 1e-5}


def gpt2_links(model: Mapping[str, Any]) -> list[L.Link]:
  """The links of a GPT-2 shaped LM with `model`'s fields (the head apart: `gpt2`)."""
  heads = model["num_heads"]
  links = [L.Link("params", "embed/embedding", "wte.weight"),
           L.Link("params", "decoder/position_embedding", "wpe.weight")]
  for i in range(model["depth"]):
    b, k = f"decoder/block{i}", f"h.{i}"
    links += L.norm(f"{b}/ln_attn", f"{k}.ln_1") + L.norm(f"{b}/ln_mlp", f"{k}.ln_2")
    links += L.fused_attention(f"{b}/attn", f"{k}.attn.c_attn", f"{k}.attn.c_proj", heads)
    links += L.dense(f"{b}/mlp_in", f"{k}.mlp.c_fc") + L.dense(f"{b}/mlp_out", f"{k}.mlp.c_proj")
  return links + L.norm("decoder/ln_final", "ln_f")


def gpt2(state: Mapping[str, np.ndarray], num_heads: int = 0) -> Converted:
  """A GPT-2 state dict (NumPy arrays) as strata's TransformerLM: fields and variables."""
  plain = _plain(state)
  head = plain.pop("lm_head.weight", None)
  model = structure(plain, num_heads)
  model["tie_embeddings"] = head is None or bool(np.array_equal(head, plain["wte.weight"]))
  links = gpt2_links(model)
  variables = L.to_strata(links, plain, WHAT, IGNORE)
  if not model["tie_embeddings"]:
    variables["params"]["head"] = {"kernel": np.ascontiguousarray(head.T),
                                   "bias": np.zeros(head.shape[0], head.dtype)}
  return Converted(model, variables, links)


def to_hf(model: Mapping[str, Any], variables: Mapping[str, Any]
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """strata TransformerLM variables as (a `GPT2LMHeadModel` state dict, its `config.json`);
  `lm_head.weight` only where the model has a head of its own.

  Raises:
    ConversionError: an LM GPT-2 cannot hold (positions other than learned, a head bias).
  """
  params = variables["params"]
  tied = bool(model.get("tie_embeddings"))
  bias = np.zeros(()) if tied else np.asarray(params["head"]["bias"])
  if (model.get("positions", "learned") != "learned" or np.any(bias != 0) or
      model.get("scan_layers") or model.get("norm", "layer") != "layer" or
      model.get("mlp", "gelu") != "gelu" or model.get("num_kv_heads", 0) not in (
          0, model["num_heads"])):
    raise L.ConversionError(
        "this TransformerLM has no GPT-2 equivalent: GPT-2 has learned positions, LayerNorm, a "
        "GELU MLP, one key/value head a head, unrolled blocks and an output layer without bias "
        f"(this one: positions={model.get('positions')!r}, head bias max |b| "
        f"{float(np.max(np.abs(bias))):.3g})")
  plain = L.from_strata(gpt2_links(model), variables)
  state = {f"transformer.{k}": (v.T if re.search(CONV1D, k) else v) for k, v in plain.items()}
  if not tied:  # tied: transformers makes lm_head the embedding when it loads the file
    state["lm_head.weight"] = np.ascontiguousarray(np.asarray(params["head"]["kernel"]).T)
  return state, hf_config(model, tied)


def hf_config(model: Mapping[str, Any], tied: bool = True) -> dict[str, Any]:
  """The `config.json` of a `GPT2LMHeadModel` with strata's LM `model` fields."""
  return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
          "vocab_size": model["vocab_size"], "n_positions": model["max_len"],
          "n_embd": model["width"], "n_layer": model["depth"], "n_head": model["num_heads"],
          "n_inner": model["mlp_dim"], "layer_norm_epsilon": model.get("norm_epsilon", 1e-6),
          "activation_function": "gelu_new" if model.get("gelu", "tanh") == "tanh" else "gelu",
          "tie_word_embeddings": tied, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
          "attn_pdrop": 0.0, "bos_token_id": None, "eos_token_id": None}
