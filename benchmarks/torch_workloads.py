"""PyTorch twins of the benchmark workloads: the same model, batch, loss and optimizer as each
strata experiment, written as a PyTorch user would (eager mode, `torch.optim`, NCHW layouts,
`F.scaled_dot_product_attention`), so `benchmarks.run` can time both in one process.

    twin = build("digits_vae", config)       # config: the experiment's ConfigDict
    batch = twin.convert(strata_batch)        # numpy/jax arrays -> torch tensors, once
    loss = twin.step(batch)                   # one training step, in place

Each twin reads its sizes from `config.model`, so an experiment's tiny mode has a tiny twin; a
config that uses a feature a twin does not implement raises ValueError naming the field. The
parameter counts must equal strata's (`benchmarks.run` checks it, a test too), and for the CNN and
the language model the forward pass equals strata's given the same weights (`load_flax`, tested).

What each step does, as strata's paradigm does it:
- mnist1d_cnn: softmax cross-entropy, Adam.
- charlm_transformer: masked next-token cross-entropy, AdamW with weight decay on matrices only,
  global-norm clipping, warm-up + cosine learning rate.
- digits_vae: Bernoulli negative ELBO with the KL weight warming up, Adam with a cosine rate.
- digits_dcgan: one discriminator update (non-saturating loss on reals and fresh fakes + R1
  penalty by double backward), one generator update, an EMA of the generator; two Adams.
- digits_unet: v-prediction with min-SNR weights at random timesteps of a cosine schedule,
  AdamW with clipping, an EMA of the weights.
Not done on the PyTorch side: the logging metrics strata's steps also return (gradient and
parameter norms), so strata does slightly more work per step.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_common import (  # noqa: F401  (re-exported)
  Twin,
  _ema,
  _lr_lambda,
  _optimizer,
  _require,
  _supervised_step,
  _tensors,
  _update,
)
from benchmarks.torch_generative import (  # noqa: F401  (re-exported)
  GAN,
  AttentionBlock,
  ConvVAE,
  Discriminator,
  Generator,
  ResBlock,
  UNet,
  dcgan,
  sinusoidal,
  unet,
  vae,
)

# ----------------------------------------------------------------------------------- CNN

class CNN1d(nn.Module):
  """The MNIST-1D paper's CNN: strided 1-D convolutions with ReLU, flatten, linear head."""

  def __init__(self, m: Any, length: int):
    super().__init__()
    n = len(m.features)
    per = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * n  # noqa: E731
    layers, c = [], 1
    for f, k, s, p in zip(m.features, per(m.kernel_sizes), per(m.strides), per(m.padding)):
      layers.append(nn.Conv1d(c, f, k, stride=s, padding=p))
      length = (length + 2 * p - k) // s + 1
      c = f
    self.convs = nn.ModuleList(layers)
    self.head = nn.Linear(c * length, m.num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x.unsqueeze(1)                               # (B, L) -> (B, 1, L)
    for conv in self.convs:
      x = F.relu(conv(x))
    return self.head(x.transpose(1, 2).flatten(1))   # strata flattens (B, L, C)


def cnn(config: Any, example: dict[str, Any]) -> Twin:
  m = config.model
  if m.get("ndim", 1) != 1:
    raise ValueError(f"model.ndim={m.ndim}: the PyTorch CNN twin is 1-D")
  _require(m, "pool", ("none",))
  _require(m, "head", ("flatten",))
  if tuple(m.get("dense", ())) or isinstance(m.padding, str):
    raise ValueError("the PyTorch CNN twin takes int padding and no dense layers")
  model = CNN1d(m, example["inputs"].shape[1])
  return Twin(model, _supervised_step(model, config,
                                      lambda logits, b: F.cross_entropy(logits, b["label"])),
              _tensors)


# --------------------------------------------------------------------------- Transformer

class Block(nn.Module):
  """Pre-LayerNorm block: x + Attention(LN(x)), x + MLP(LN(x)), GELU (tanh form, as flax's)."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.heads = heads
    self.ln_attn, self.ln_mlp = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
    self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
    self.mlp_in, self.mlp_out = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

  def attention(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
    b, t, d = x.shape
    q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)    # (B, N, T, H)
    return self.proj(out.transpose(1, 2).reshape(b, t, d))

  def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
    x = x + self.attention(self.ln_attn(x), causal)
    return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x)), approximate="tanh"))


class TransformerLM(nn.Module):
  """Decoder-only LM with learned positions: tokens (B, T) -> logits (B, T, V)."""

  def __init__(self, m: Any):
    super().__init__()
    self.embed = nn.Embedding(m.vocab_size, m.width)
    self.position = nn.Parameter(torch.randn(m.max_len, m.width) * 0.02)
    nn.init.normal_(self.embed.weight, std=0.02)
    self.blocks = nn.ModuleList(Block(m.width, m.num_heads, m.mlp_dim) for _ in range(m.depth))
    self.ln_final = nn.LayerNorm(m.width, eps=1e-6)
    self.head = nn.Linear(m.width, m.vocab_size)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens) + self.position[:tokens.shape[1]]
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln_final(x))


def transformer_lm(config: Any, example: dict[str, Any]) -> Twin:
  m = config.model
  _require(m, "positions", ("learned",))
  if m.get("dropout", 0.0):
    raise ValueError("model.dropout: the PyTorch LM twin has no dropout")
  model = TransformerLM(m)

  def loss(logits, b):
    per = F.cross_entropy(logits.flatten(0, 1), b["label"].flatten(), reduction="none")
    mask = b["mask"].flatten()
    return (per * mask).sum() / mask.sum().clamp(min=1)

  def convert(batch):
    t = _tensors(batch)
    t["inputs"] = t["inputs"].long()
    return t
  return Twin(model, _supervised_step(model, config, loss), convert)


def load_flax(twin: Twin, params: Any) -> None:
  """Copies strata's parameters (a flax tree, for the CNN or the language model) into the twin,
  so that the two forward passes can be compared."""
  t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
  model, state = twin.model, {}
  if isinstance(model, CNN1d):
    for i in range(len(model.convs)):
      state[f"convs.{i}.weight"] = t(params[f"conv{i}"]["kernel"]).permute(2, 1, 0)  # WIO->OIW
      state[f"convs.{i}.bias"] = t(params[f"conv{i}"]["bias"])
    state["head.weight"], state["head.bias"] = t(params["head"]["kernel"]).T, t(
        params["head"]["bias"])
  elif isinstance(model, TransformerLM):
    d = params["decoder"]
    state["embed.weight"], state["position"] = t(params["embed"]["embedding"]), t(
        d["position_embedding"])
    for i in range(len(model.blocks)):
      p, key = d[f"block{i}"], f"blocks.{i}."
      attn = p["attn"]
      width = attn["out"]["bias"].shape[0]
      qkv = [t(attn[n]["kernel"]).reshape(width, width) for n in ("query", "key", "value")]
      state[key + "qkv.weight"] = torch.cat(qkv, 1).T
      state[key + "qkv.bias"] = torch.cat([t(attn[n]["bias"]).reshape(-1)
                                           for n in ("query", "key", "value")])
      state[key + "proj.weight"] = t(attn["out"]["kernel"]).reshape(width, width).T
      state[key + "proj.bias"] = t(attn["out"]["bias"])
      for n in ("ln_attn", "ln_mlp"):
        state[key + n + ".weight"], state[key + n + ".bias"] = t(p[n]["scale"]), t(p[n]["bias"])
      for n in ("mlp_in", "mlp_out"):
        state[key + n + ".weight"], state[key + n + ".bias"] = t(p[n]["kernel"]).T, t(
            p[n]["bias"])
    state["ln_final.weight"], state["ln_final.bias"] = t(d["ln_final"]["scale"]), t(
        d["ln_final"]["bias"])
    state["head.weight"], state["head.bias"] = t(params["head"]["kernel"]).T, t(
        params["head"]["bias"])
  else:
    raise ValueError(f"load_flax: no parameter mapping for {type(model).__name__}")
  model.load_state_dict(state, strict=True)


BUILDERS: dict[str, Callable[[Any, dict[str, Any]], Twin]] = {
    "cnn.CNN": cnn, "transformer.TransformerLM": transformer_lm, "autoencoder.VAE": vae,
    "gan.GAN": dcgan, "unet.UNet": unet,
}


def build(config: Any, example: dict[str, Any], seed: int = 0, device: str = "cpu",
          bf16: bool = False) -> Twin:
  """The PyTorch twin of `config`'s model and step; `example` is a strata batch (for shapes).
  On `device` (e.g. "cuda"), with the forward pass under bfloat16 autocast when `bf16` (the
  usual PyTorch mixed precision: float32 parameters and optimizer state)."""
  if config.model.name not in BUILDERS:
    raise ValueError(f"model.name={config.model.name!r}: no PyTorch twin; expected one of "
                     f"{sorted(BUILDERS)}")
  torch.manual_seed(seed)
  twin = BUILDERS[config.model.name](config, example)
  twin.model.train()
  if device == "cpu" and not bf16:
    return twin
  twin.model.to(device)  # before the first step, so the optimizers' state is made there
  kind = "cuda" if device.startswith("cuda") else "cpu"

  def step(batch):
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
      return twin.step(batch)

  def convert(batch):
    return {k: v.to(device) for k, v in twin.convert(batch).items()}
  return Twin(twin.model, step, convert)
