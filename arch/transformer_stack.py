"""The pre-LayerNorm Transformer block and the stack of them that the encoder classifier and the
decoder LM share (`arch.transformer`):

    block(x) = x + Dropout(Attention(LN(x)));  x + Dropout(MLP(LN(x)))     (Xiong et al. 2020)

with the stack's positions ("learned", "sinusoidal", "rotary", "none"), optionally scanned
(`scan_layers`) and rematerialised, and a final LayerNorm. The block's parts have the modern
variants as fields: RMSNorm for LayerNorm (`norm`), SwiGLU for the GELU MLP (`mlp`),
grouped-query attention (`num_kv_heads`), no biases (`use_bias`), the rotary base.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from arch.attention import MultiHeadAttention, sinusoidal
from arch.common import constrain_sequence, maybe_remat
from arch.cpu_dense import dense_layer
from arch.cpu_norm import layer_norm_class

INITS = ("lecun_normal", "xavier_uniform")
GELUS = ("tanh", "exact")
NORMS = ("layer", "rms")    # LayerNorm, or RMSNorm (Zhang & Sennrich 2019: no mean, no bias)
MLPS = ("gelu", "swiglu")   # Dense-GELU-Dense, or SwiGLU's gated three kernels


def dense_inits(init: str) -> dict[str, Any]:
  """Initialisers of the attention and MLP kernels: flax's default (LeCun normal, zero biases)
  or big_vision's ViT (`models/vit.py`: Xavier uniform, MLP biases N(0, 1e-6))."""
  if init == "xavier_uniform":
    return dict(kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(1e-6))
  return {}


class Block(nn.Module):
  """One pre-LN Transformer block on (B, T, D)."""

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  rotary: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dense_init: str = "lecun_normal"
  attention_logits: str = "float32"
  gelu: str = "tanh"
  norm_epsilon: float = 1e-6
  norm: str = "layer"
  mlp: str = "gelu"
  num_kv_heads: int = 0
  use_bias: bool = True
  rope_base: float = 10000.0
  rope_scaling: tuple[float, ...] = ()
  qkv_bias: bool = False
  attention_kernel: str = "xla"
  dense_kernel: str = "xla"
  norm_kernel: str = "xla"

  @nn.compact
  def __call__(self, x, mask=None, causal=False, decode=False, train=False, positions=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    inits = dense_inits(self.dense_init)
    norm = functools.partial(norm_layer(self.norm, self.norm_kernel), **kw,
                             epsilon=self.norm_epsilon)
    dense = functools.partial(dense_layer(self.dense_kernel), **kw, **inits,
                              use_bias=self.use_bias)
    x = constrain_sequence(x, split=True)
    h = constrain_sequence(norm(name="ln_attn")(x), split=False)
    h = MultiHeadAttention(self.num_heads, rotary=self.rotary, rope_base=self.rope_base,
                           rope_scaling=tuple(self.rope_scaling),
                           dropout=self.dropout, **kw,
                           kernel_init=inits.get("kernel_init"),
                           attention_logits=self.attention_logits,
                           num_kv_heads=self.num_kv_heads, use_bias=self.use_bias,
                           qkv_bias=self.qkv_bias, attention_kernel=self.attention_kernel,
                           dense_kernel=self.dense_kernel, name="attn")(
                               h, mask, causal=causal, positions=positions, decode=decode,
                               train=train)
    # whole along T here, so that in the backward pass the cotangent is gathered before the
    # tensor-parallel layers (Megatron's all-gather) rather than their work split by T
    x = constrain_sequence(x + constrain_sequence(h, split=False), split=True)
    h = constrain_sequence(norm(name="ln_mlp")(x), split=False)
    if self.mlp == "swiglu":  # Shazeer 2020: SiLU(x W_gate) * (x W_in), then W_out
      h = nn.silu(dense(self.mlp_dim, name="mlp_gate")(h)) * dense(self.mlp_dim, name="mlp_in")(h)
    else:
      h = nn.gelu(dense(self.mlp_dim, name="mlp_in")(h), approximate=self.gelu == "tanh")
    h = dense(x.shape[-1], name="mlp_out")(h)
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return constrain_sequence(x + constrain_sequence(h, split=False), split=True)


class _ScanStep(nn.Module):
  """One `Block` as a step of `nn.scan` (`scan_layers`): the activations are the carry, the mask
  and positions are the same for every layer, and the Python flags are attributes (a scanned
  function's arguments are traced)."""

  block: Any               # the Block class, maybe rematerialised
  fields: dict[str, Any]   # Block's fields
  causal: bool
  decode: bool
  train: bool

  @nn.compact
  def __call__(self, x, mask, positions):
    x = self.block(**self.fields, name="block")(x, mask, self.causal, self.decode, self.train,
                                                positions)
    return x, None


BLOCK_FIELDS = tuple(f.name for f in dataclasses.fields(Block)
                     if f.init and f.name not in ("parent", "name", "rotary"))
_BLOCK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Block)
                   if f.name in BLOCK_FIELDS and f.default is not dataclasses.MISSING}


def block_fields(model: nn.Module) -> dict[str, Any]:
  """The `Block` fields a model has of its own (`BLOCK_FIELDS`), by name, for `Stack`: a model
  declares a block option once, as a field of its own, and it reaches every block."""
  return {f: getattr(model, f) for f in BLOCK_FIELDS if hasattr(model, f)}


def norm_layer(kind: str, kernel: str = "xla") -> Any:
  """The norm class of `kind` (`NORMS`); with `kernel` "cpu" a LayerNorm is
  `arch.cpu_norm.CpuLayerNorm` (RMSNorm has no kernel and stays flax's)."""
  layer = layer_norm_class(kernel)  # checks the field
  return nn.RMSNorm if kind == "rms" else layer


class Stack(nn.Module):
  """Positions + `depth` blocks + final LayerNorm, shared by the classifier and the LM.
  `block`: the blocks' `Block` fields but `rotary`, which `positions` decides (`block_fields`;
  the rest keep Block's defaults). `scan_layers`: the blocks as one `nn.scan` over stacked
  parameters (`blocks/block`, a leading axis of `depth`), compiled once instead of `depth` times
  (`arch.scan.stack_blocks` converts)."""

  depth: int
  max_len: int
  positions: str
  block: dict[str, Any]
  remat: bool = False
  remat_policy: str = ""
  scan_layers: bool = False
  final_norm: bool = True  # False: the caller normalises (a ViT's norm after pooling)

  @nn.compact
  def __call__(self, x, mask=None, *, causal=False, decode=False, train=False, positions=None):
    """`positions` (B, T) int: each token's position (packed documents restart at 0); by
    default 0..T-1, continued from the cache when decoding."""
    fields = {**_BLOCK_DEFAULTS, **self.block, "rotary": self.positions == "rotary"}
    steps, width = x.shape[1], x.shape[2]
    offset = jnp.zeros((), jnp.int32)
    if decode and self.positions in ("learned", "sinusoidal"):
      # The absolute position of this call's first step, kept beside the attention caches.
      cached = self.has_variable("cache", "position")
      pos = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
      if cached:
        offset = pos.value
        pos.value = offset + steps
    index = (offset + jnp.arange(steps))[None] if positions is None else positions  # (1|B, T)
    if self.positions == "learned":
      table = self.param("position_embedding", nn.initializers.normal(0.02),
                         (self.max_len, width), fields["param_dtype"])
      x = x + jnp.take(table, index, axis=0).astype(x.dtype)
    elif self.positions == "sinusoidal":
      x = x + sinusoidal(index, width).astype(x.dtype)
    if fields["dropout"] > 0:
      x = nn.Dropout(fields["dropout"], deterministic=not train)(x)
    block = maybe_remat(Block, self.remat, static_argnums=(3, 4, 5),  # causal, decode, train
                        policy=self.remat_policy)
    if self.scan_layers:
      scanned = nn.scan(_ScanStep, variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                        split_rngs={"params": True, "dropout": True},
                        in_axes=(nn.broadcast, nn.broadcast), length=self.depth)
      x, _ = scanned(block, fields, causal, decode, train, name="blocks")(x, mask, positions)
    else:
      for i in range(self.depth):
        x = block(**fields, name=f"block{i}")(x, mask, causal, decode, train, positions)
    if not self.final_norm:
      return x
    norm = norm_layer(fields["norm"], fields["norm_kernel"])
    return norm(dtype=fields["dtype"], param_dtype=fields["param_dtype"],
                epsilon=fields["norm_epsilon"], name="ln_final")(x)
