"""Recurrent sequence models: simple RNN, LSTM and GRU, stacked and bidirectional.

Built on Flax's own cells (`nn.SimpleCell`, `nn.LSTMCell`, `nn.GRUCell`) scanned over time by
`nn.RNN` (one `lax.scan`, no Python loop over steps). Inputs are batch-major:

  (B, T)      a real signal, one feature per step (MNIST-1D), or token ids when `vocab_size > 0`;
  (B, T, F)   F features per step.

`lengths` (B,) int, optional, marks the valid prefix of each sequence: steps at or beyond it do
not change the result of the "last" and "mean" heads (the backward direction starts at each
sequence's own last valid step).

A unidirectional model with head="sequence" is a language model (`vocab_size` = `num_classes`)
that can decode step by step: `apply(..., decode=True, mutable=["cache"])` continues from the
carries kept in the `cache` collection (see `arch.transformer.init_cache`), so feeding a sequence
in pieces gives the logits of one full pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from arch.initializers import layer_inits, uniform


class TorchGRUCell(nn.GRUCell):
  """PyTorch's parameterisation of the GRU: Flax's cell plus the hidden-side biases of the
  reset and update gates (b_hr, b_hz), which Flax leaves out as redundant with the input-side
  ones. The function class is the same; initialisation and Adam's per-parameter steps are not
  (the summed gate bias moves twice as fast), and the MNIST-1D paper's GRU is trained this way.
  """

  @nn.compact
  def __call__(self, carry, inputs):
    h = carry
    width = h.shape[-1]
    kw = {"features": width, "dtype": self.dtype, "param_dtype": self.param_dtype,
          "bias_init": self.bias_init}

    def dense_i(name):
      return nn.Dense(kernel_init=self.kernel_init, name=name, **kw)(inputs)

    def dense_h(name):
      return nn.Dense(kernel_init=self.recurrent_kernel_init, name=name, **kw)(h)
    r = self.gate_fn(dense_i("ir") + dense_h("hr"))
    z = self.gate_fn(dense_i("iz") + dense_h("hz"))
    n = self.activation_fn(dense_i("in") + r * dense_h("hn"))
    new_h = (1.0 - z) * n + z * h
    return new_h, new_h


CELLS = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
HEADS = ("last", "mean", "flatten", "sequence")


class RecurrentNet(nn.Module):
  """Embedding or features -> stacked (bi)directional recurrent layers -> head.

  Attributes:
    num_classes: outputs of the head (classes, or the vocabulary for a language model).
    hidden: state size of each stacked layer.
    cell: "rnn", "lstm" or "gru".
    bidirectional: a forward and a backward pass per layer, outputs concatenated.
    vocab_size: > 0 embeds integer token inputs (B, T) into `embed_dim` features.
    head: "last" (output at the last valid step; for the backward direction, at the first),
      "mean" (mean over valid steps), "flatten" (all steps' outputs concatenated; fixed T, as
      the MNIST-1D paper's GRU), "sequence" (per-step outputs (B, T, num_classes)).
    dropout: between layers and before the head (train only).
    weight_init: a name in `arch.initializers.INITS` for the head; the cells keep Flax's
      initialisation (LeCun normal input kernels, orthogonal recurrent kernels, zero biases)
      except under "torch", where, as in PyTorch's nn.RNN/LSTM/GRU, every cell weight and bias
      is U(+-1/sqrt(hidden)) and the GRU has PyTorch's six biases (`TorchGRUCell`).

  Returns (B, num_classes), or (B, T, num_classes) for head="sequence". The features before the
  head are sown as `intermediates/features`.
  """

  num_classes: int
  hidden: Sequence[int] = (128,)
  cell: str = "lstm"
  bidirectional: bool = False
  vocab_size: int = 0
  embed_dim: int = 64
  head: str = "last"
  dropout: float = 0.0
  weight_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False,
               lengths: jnp.ndarray | None = None, decode: bool = False) -> jnp.ndarray:
    if self.cell not in CELLS:
      raise ValueError(f"model.cell={self.cell!r}; expected one of {sorted(CELLS)}")
    if decode and (self.bidirectional or self.head != "sequence"):
      raise ValueError("decode=True (step-by-step generation) needs a unidirectional model with "
                       f"head='sequence'; got bidirectional={self.bidirectional}, "
                       f"head={self.head!r}")
    if self.head not in HEADS:
      raise ValueError(f"model.head={self.head!r}; expected one of {list(HEADS)}")
    if self.vocab_size > 0:
      if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"model.vocab_size={self.vocab_size} expects int token ids (B, T); got "
                         f"{x.dtype} {x.shape}")
      x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="embed")(x)
    elif x.ndim == 2:
      x = x[..., None]
    elif x.ndim != 3:
      raise ValueError(f"recurrent inputs are (B, T) or (B, T, F); got shape {x.shape}")
    x = x.astype(self.dtype)
    batch, steps = x.shape[:2]
    if lengths is None:
      lengths = jnp.full((batch,), steps, jnp.int32)
    make = TorchGRUCell if self.cell == "gru" and self.weight_init == "torch" else CELLS[self.cell]
    for i, width in enumerate(self.hidden):
      inits = {}
      if self.weight_init == "torch":
        u = uniform(width ** -0.5)
        inits = dict(kernel_init=u, recurrent_kernel_init=u, bias_init=u)

      def cell(width=width, inits=inits):
        return make(width, dtype=self.dtype, param_dtype=self.param_dtype, parent=None, **inits)
      rnn = nn.RNN(cell(), return_carry=True, name=f"layer{i}_fwd")
      if decode and self.has_variable("cache", f"carry{i}"):
        carry = self.variable("cache", f"carry{i}")
        carry.value, outputs = rnn(x, initial_carry=carry.value, seq_lengths=lengths)
      else:
        final, outputs = rnn(x, seq_lengths=lengths)
        if decode:  # init: the cache starts from the zero state nn.RNN starts from
          self.variable("cache", f"carry{i}", lambda f=final: jax.tree.map(jnp.zeros_like, f))
      if self.bidirectional:
        back = nn.RNN(cell(), reverse=True, keep_order=True, name=f"layer{i}_bwd")(
            x, seq_lengths=lengths)
        outputs = jnp.concatenate([outputs, back], axis=-1)
      x = outputs
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    valid = (jnp.arange(steps)[None, :] < lengths[:, None]).astype(x.dtype)  # (B, T)
    if self.head == "last":
      width = self.hidden[-1]
      last = jnp.take_along_axis(x[..., :width], (lengths - 1)[:, None, None], axis=1)[:, 0]
      feats = jnp.concatenate([last, x[:, 0, width:]], axis=-1) if self.bidirectional else last
    elif self.head == "mean":
      feats = (x * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1, keepdims=True), 1)
    elif self.head == "flatten":
      feats = (x * valid[..., None]).reshape(batch, -1)
    else:
      feats = x
    self.sow("intermediates", "features", feats)
    kernel_init, bias_init = layer_inits(self.weight_init, feats.shape[-1])
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=kernel_init, bias_init=bias_init, name="head")(feats)
