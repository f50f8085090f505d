"""Transformers: an encoder classifier and a decoder-only language model over the pre-LayerNorm
blocks of `arch.transformer_stack`:

    block(x) = x + Dropout(Attention(LN(x)));  x + Dropout(MLP(LN(x)))     (Xiong et al. 2020)

Positions (`positions`): "learned" (a trained (max_len, D) table), "sinusoidal" (Vaswani et al.),
"rotary" (applied to queries and keys inside attention) or "none".

`TransformerLM` decodes with a key/value cache:

    cache = arch.init_cache(model, batch, length)             # zeros, room for `length` steps
    logits, vars = model.apply({"params": p, "cache": cache}, prompt, decode=True,
                               mutable=["cache"])           # prefill: (B, P) -> (B, P, V)
    logits, vars = model.apply({"params": p, **vars}, next_token, decode=True, mutable=["cache"])

and gives the same logits as one full forward pass over the whole sequence.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.attention import MultiHeadAttention, sincos2d
from arch.common import check_choice, constrain_batch, constrain_sequence
from arch.cpu_dense import dense_layer
from arch.transformer_stack import GELUS, INITS, MLPS, NORMS, Stack, block_fields
from arch.transformer_stack import dense_inits as _dense_inits

POSITIONS = ("learned", "sinusoidal", "rotary", "none")
CLASSIFIER_POSITIONS = POSITIONS + ("sincos2d",)
POOLS = ("cls", "mean", "last", "map")


def segment_positions(segments: jnp.ndarray) -> jnp.ndarray:
  """(B, T) int positions that restart at 0 wherever `segments` (B, T) changes along T."""
  steps = jnp.arange(segments.shape[1], dtype=jnp.int32)
  starts = jnp.concatenate([jnp.ones_like(segments[:, :1], bool),
                            segments[:, 1:] != segments[:, :-1]], axis=1)
  return steps - jax.lax.cummax(jnp.where(starts, steps, 0), axis=1)


def _check_length(steps: int, max_len: int, what: str) -> None:
  if steps > max_len:
    raise ValueError(f"{what} of length {steps} is longer than the model's max_len={max_len}")


class MAPHead(nn.Module):
  """Multihead attention pooling (Lee et al. 2019; big_vision's `MAPHead`, timm's
  `AttentionPoolLatent`): a learned probe (1, 1, D) attends to the tokens (B, T, D), then a
  residual MLP on its LayerNorm; returns (B, D)."""

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dense_init: str = "lecun_normal"
  gelu: str = "tanh"
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    inits = _dense_inits(self.dense_init)
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]),
                       self.param_dtype)
    probe = jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
    h = MultiHeadAttention(self.num_heads, **kw, kernel_init=inits.get("kernel_init"),
                           name="attn")(probe, mask, kv=x)
    y = nn.LayerNorm(**kw, epsilon=self.norm_epsilon, name="ln")(h)
    y = nn.gelu(nn.Dense(self.mlp_dim, **kw, **inits, name="mlp_in")(y),
                approximate=self.gelu == "tanh")
    return (h + nn.Dense(x.shape[-1], **kw, **inits, name="mlp_out")(y))[:, 0]


class TransformerClassifier(nn.Module):
  """Transformer encoder over a sequence, pooled to class logits.

  Inputs: (B, T) real signal (one feature per step, as MNIST-1D), (B, T, F) features, (B, T)
  int token ids when `vocab_size > 0`, or images (B, H, W, C). `patch_size` > 1 groups
  consecutive steps into one token (a 1-D ViT patch), so T must be divisible by it; an image is
  cut into patch_size x patch_size patches (ViT), one token each. Each token is linearly
  embedded to `width`.
  `lengths` (B,) marks each sequence's valid prefix (in steps): padding is masked out of
  attention and of the mean pool (a patch counts as valid when its first step is).

  Attributes:
    num_classes, width (D), depth, num_heads, mlp_dim: the usual.
    max_len: the most tokens (after patching, before the CLS token) a sequence may have.
    positions: "learned", "sinusoidal", "rotary", "none", or for images "sincos2d" (fixed 2-D
      sin-cos embeddings of each patch's row and column, big_vision's `posemb_sincos_2d`).
    pool: "cls" (a learned token prepended, its final state classified), "mean" (over valid
      tokens, a class token's apart), "last" (the last valid token's state: with `causal`, the
      one token that has seen the whole sequence) or "map" (a learned probe attends to every
      token but a class token, `MAPHead`: big_vision's `pool_type="map"`, timm's
      `global_pool="map"`).
    class_token: prepend the learned class token with another `pool` too (the blocks attend to
      it; "mean" and "map" pool the other tokens: timm's `class_token=True` beside
      `global_pool="avg"`); "cls" always has one.
    norm_after_pool: the final LayerNorm normalises the pooled features instead of the tokens
      (timm's `fc_norm`, the default of its mean-pooled ViTs).
    causal: each token attends to itself and earlier tokens only (a forecaster reading its
      context in time order); needs pool "last" or "mean".
    pre_logits: > 0 puts a Dense(pre_logits) + tanh between the pooled features and the head
      (big_vision's `rep_size`).
    head_zero_init: the head's kernel starts at zero (big_vision's `head_zeroinit`).
    dense_init: "lecun_normal" (flax's default) or "xavier_uniform" (big_vision's ViT: Xavier
      uniform attention and MLP kernels, MLP biases N(0, 1e-6)).
    remat: recompute each block's activations in the backward pass (`nn.remat`) instead of
      storing them; same parameters, less memory.
    remat_policy: what the backward pass keeps of each block (`arch.common.REMAT_POLICIES`:
      "" everything, "nothing_saveable" the same as `remat=True`, "dots_saveable",
      "dots_with_no_batch_dims_saveable").
    scan_layers: the blocks as one `nn.scan` over stacked parameters (`blocks/block`, depth
      first): compiled once instead of once per block; `arch.scan.stack_blocks` / `unstack_blocks`
      convert checkpoints between the two.
    attention_logits: the precision of the attention logits and their softmax: "float32" (as
      `jax.nn.dot_product_attention` computes them) or "compute", the model's compute dtype
      (bfloat16 under `train.precision=bfloat16`, as flax's attention and big_vision's ViT
      compute them; `arch.attention.ATTENTION_LOGITS`).
    gelu: the MLP's GELU, "tanh" (the tanh approximation: flax's `nn.gelu` default, GPT-2's) or
      "exact" (the erf form: PyTorch's `nn.GELU()`, timm's ViTs).
    attention_kernel: on the CPU, the blocks' attention by XLA's ops ("xla") or by a compiled kernel
      ("cpu": `arch.cpu_attention`, built on first use; float32 and unmasked or causal calls);
      GPU and TPU ignore it.
    dense_kernel: on the CPU, the dense layers' backward pass (attention projections, MLP, the
      LM's head) by XLA's ops ("xla") or as `arch.cpu_dense` computes it ("cpu": the weight
      gradient over flattened rows, the bias gradient by a compiled kernel; float32 layers with
      a bias); the same parameters; GPU and TPU ignore it.
    norm_kernel: on the CPU, the blocks' and the final LayerNorms by XLA's ops ("xla") or by a
      compiled kernel ("cpu": `arch.cpu_norm`, float32; RMSNorm stays XLA's); the same
      parameters; GPU and TPU ignore it.
    norm_epsilon: the LayerNorms' epsilon (flax's and timm's 1e-6; GPT-2's and PyTorch's 1e-5).
  Returns (B, num_classes). Pooled features are sown as `intermediates/features`, attention
  weights as `intermediates/.../attention_weights` (B, N, T', T') with T' including the CLS token.
  """

  num_classes: int
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  max_len: int = 512
  patch_size: int = 1
  positions: str = "learned"
  pool: str = "cls"
  class_token: bool = False
  norm_after_pool: bool = False
  vocab_size: int = 0
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = ""
  scan_layers: bool = False
  pre_logits: int = 0
  head_zero_init: bool = False
  causal: bool = False
  dense_init: str = "lecun_normal"
  attention_logits: str = "float32"
  gelu: str = "tanh"
  norm_epsilon: float = 1e-6
  attention_kernel: str = "xla"
  dense_kernel: str = "xla"
  norm_kernel: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False,
               lengths: jnp.ndarray | None = None) -> jnp.ndarray:
    check_choice(self.positions, CLASSIFIER_POSITIONS, "positions")
    if self.causal and self.pool == "cls":
      raise ValueError("model.causal=True with model.pool='cls': a CLS token in front would "
                       "attend only to itself; expected pool 'last' or 'mean'")
    if self.positions == "sincos2d" and (self.vocab_size > 0 or x.ndim != 4):
      raise ValueError(f"positions='sincos2d' takes images (B, H, W, C); got {x.shape}")
    grid = None
    check_choice(self.pool, POOLS, "pool")
    check_choice(self.dense_init, INITS, "dense_init")
    check_choice(self.gelu, GELUS, "gelu")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.vocab_size > 0:
      if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"model.vocab_size={self.vocab_size} expects int token ids (B, T); got "
                         f"{x.dtype} {x.shape}")
      x = nn.Embed(self.vocab_size, self.width, **kw, name="embed")(x)
    else:
      if x.ndim == 2:
        x = x[..., None]
      if x.ndim == 4:  # images (B, H, W, C): non-overlapping p x p patches in row-major order
        b, h, w, ch = x.shape
        p = self.patch_size
        if h % p or w % p:
          raise ValueError(f"image {h}x{w} is not divisible into model.patch_size={p} patches")
        x = x.reshape(b, h // p, p, w // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, (h // p) * (w // p), p * p * ch)
        grid = (h // p, w // p)
        steps_per_token = 1
      elif x.ndim != 3:
        raise ValueError(f"TransformerClassifier inputs are (B, T), (B, T, F) or images "
                         f"(B, H, W, C); got {x.shape}")
      else:
        steps_per_token = self.patch_size
      batch, steps, feats = x.shape
      if steps % steps_per_token:
        raise ValueError(f"sequence length {steps} is not divisible by model.patch_size="
                         f"{self.patch_size}")
      x = x.reshape(batch, steps // steps_per_token, steps_per_token * feats)
      x = nn.Dense(self.width, **kw, name="embed")(x.astype(self.dtype))
    if self.positions == "sincos2d":
      x = x + sincos2d(*grid, self.width).astype(x.dtype)[None]
    x = constrain_batch(x)
    batch, tokens = x.shape[:2]
    _check_length(tokens, self.max_len, "input sequence (in tokens)")
    if lengths is None:
      valid = jnp.ones((batch, tokens), bool)
    else:
      valid = jnp.arange(tokens)[None] * self.patch_size < lengths[:, None]
    prefix = int(self.pool == "cls" or self.class_token)  # tokens before the sequence's own
    if prefix:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, self.width)).astype(x.dtype), x], 1)
      valid = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
    mask = valid[:, None, None, :]                                   # keys that may be attended
    stack_positions = "none" if self.positions == "sincos2d" else self.positions
    x = Stack(self.depth, self.max_len + 1, stack_positions, block_fields(self), self.remat,
              self.remat_policy, self.scan_layers, final_norm=not self.norm_after_pool,
              name="encoder")(x, mask, causal=self.causal, train=train)
    if self.pool == "cls":
      feats = x[:, 0]
    elif self.pool == "last":
      feats = x[jnp.arange(batch), jnp.sum(valid, axis=1) - 1]
    elif self.pool == "map":
      feats = MAPHead(self.num_heads, self.mlp_dim, **kw, dense_init=self.dense_init,
                      gelu=self.gelu, norm_epsilon=self.norm_epsilon, name="map")(
                          x[:, prefix:], mask[..., prefix:])
    else:
      w = valid[:, prefix:].astype(x.dtype)[..., None]
      feats = (x[:, prefix:] * w).sum(1) / jnp.maximum(w.sum(1), 1)
    if self.norm_after_pool:
      feats = nn.LayerNorm(**kw, epsilon=self.norm_epsilon, name="ln_pool")(feats)
    if self.pre_logits > 0:
      feats = jnp.tanh(nn.Dense(self.pre_logits, **kw, name="pre_logits")(feats))
    self.sow("intermediates", "features", feats)
    head_init = nn.initializers.zeros if self.head_zero_init else nn.linear.default_kernel_init
    return nn.Dense(self.num_classes, kernel_init=head_init, **kw, name="head")(feats)


# ViT-S/16 (Dosovitskiy et al. 2021; the S size of Touvron et al. 2021) on 224 x 224 images:
# 196 tokens, as big_vision's `vit_s16_i1k` builds it: fixed 2-D sin-cos positions, mean
# pooling, a tanh pre-logits layer of the model's width, a zero-initialised head, and Xavier
# uniform attention and MLP kernels.
ViTS16 = functools.partial(TransformerClassifier, width=384, depth=12, num_heads=6,
                           mlp_dim=1536, patch_size=16, pool="mean", max_len=196,
                           positions="sincos2d", pre_logits=384, head_zero_init=True,
                           dense_init="xavier_uniform")


# ViT-B/16, the same build at the B size (width 768, 12 blocks of 12 heads, MLP 3072).
ViTB16 = functools.partial(ViTS16, width=768, num_heads=12, mlp_dim=3072, pre_logits=768)


class TransformerLM(nn.Module):
  """Decoder-only (causal) language model: int tokens (B, T) -> next-token logits (B, T, V).

  Attributes:
    vocab_size: V; token ids must lie in [0, V).
    width, depth, num_heads, mlp_dim, dropout: the usual.
    max_len: the longest sequence (and cache) the model accepts.
    positions: "learned", "sinusoidal", "rotary" or "none".
    remat, remat_policy, scan_layers, attention_logits, gelu, norm_epsilon, attention_kernel,
      dense_kernel, norm_kernel: as `TransformerClassifier`'s (dense_kernel reaches the head too).
    norm: "layer" (LayerNorm) or "rms" (RMSNorm: no mean, no bias).
    mlp: "gelu" (Dense, GELU, Dense) or "swiglu" (SiLU(x W_gate) * x W_in, then W_out).
    num_kv_heads: key/value heads of grouped-query attention (0: num_heads).
    use_bias: biases on the attention, MLP and output kernels.
    qkv_bias: biases on the query, key and value kernels alone (Qwen2's), without `use_bias`.
    rope_base: the rotary positions' base (theta: 10,000 in RoFormer and Llama 2, 500,000 in
      Llama 3); rope_scaling: Llama 3.1's rescaling of their frequencies, (factor,
      low_freq_factor, high_freq_factor, original context) (`arch.attention.rotary_frequencies`).
    tie_embeddings: the logits are the token embedding's transpose times the final state (no
      head of its own: GPT-2, Gemma, small Llamas).
  `Llama` is the modern build: rotary positions, RMSNorm, SwiGLU, no biases.
  """

  vocab_size: int
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 256
  positions: str = "learned"
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = ""
  scan_layers: bool = False
  attention_logits: str = "float32"
  gelu: str = "tanh"
  norm_epsilon: float = 1e-6
  attention_kernel: str = "xla"
  dense_kernel: str = "xla"
  norm_kernel: str = "xla"
  norm: str = "layer"
  mlp: str = "gelu"
  num_kv_heads: int = 0
  use_bias: bool = True
  qkv_bias: bool = False
  rope_base: float = 10000.0
  rope_scaling: tuple[float, ...] = ()
  tie_embeddings: bool = False

  @property
  def num_classes(self) -> int:  # what the loop checks labels against
    return self.vocab_size

  # Takes `segments`: packed windows of several documents (data/packing.py).
  takes_segments: ClassVar[bool] = True

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False,
               decode: bool = False, segments: jnp.ndarray | None = None) -> jnp.ndarray:
    """`segments` (B, T) int: the document of each token in a packed window; a token attends
    only to earlier tokens of its own document, and positions restart at 0 at each document's
    first token in the window, so a packed document is computed as it would be alone."""
    check_choice(self.positions, POSITIONS, "positions")
    check_choice(self.gelu, GELUS, "gelu")
    check_choice(self.norm, NORMS, "norm")
    check_choice(self.mlp, MLPS, "mlp")
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"TransformerLM expects int token ids (B, T); got {tokens.dtype} "
                       f"{tokens.shape}")
    _check_length(tokens.shape[1], self.max_len, "token sequence")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    embed = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                     **kw, name="embed")
    x = constrain_sequence(embed(tokens), split=True)
    mask = positions = None
    if segments is not None:
      mask = segments[:, None, :, None] == segments[:, None, None, :]   # (B, 1, T, T)
      positions = segment_positions(segments)
    x = Stack(self.depth, self.max_len, self.positions, block_fields(self), self.remat,
              self.remat_policy, self.scan_layers, name="decoder")(
                  x, mask, causal=True, decode=decode, train=train, positions=positions)
    # vocabulary-parallel under tensor parallelism (train.parallel.VOCAB_RULE splits the head's
    # columns): each device of a tensor group computes its share of the logits, not all of them
    x = constrain_sequence(x, split=False)
    if self.tie_embeddings:
      return constrain_batch(embed.attend(x), split_last=True)
    head = dense_layer(self.dense_kernel)(self.vocab_size, **kw, use_bias=self.use_bias,
                                          name="head")
    return constrain_batch(head(x), split_last=True)


# The Llama build (Touvron et al. 2023) of the decoder: rotary positions, RMSNorm (epsilon 1e-5),
# SwiGLU MLP and no biases; `num_kv_heads` < `num_heads` gives grouped-query attention.
Llama = functools.partial(TransformerLM, positions="rotary", norm="rms", mlp="swiglu",
                          use_bias=False, norm_epsilon=1e-5)

