"""Multi-layer perceptrons (and logistic regression: an MLP with no hidden layer)."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from arch.initializers import layer_inits

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh, "silu": nn.silu,
               "sigmoid": nn.sigmoid, "elu": nn.elu, "leaky_relu": nn.leaky_relu}


def activation(name: str):
  """The activation function called `name`; a clear error lists the valid names."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"model.activation={name!r}; expected one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Module):
  """Flatten, then Dense -> activation -> dropout per hidden width, then a Dense head.

  Attributes:
    num_classes: outputs of the head (logits; 1 for scalar regression).
    widths: hidden layer widths; `()` is logistic/linear regression.
    activation: name in `ACTIVATIONS`.
    dropout: drop probability after each hidden activation (train only).
    residual: a hidden layer whose width equals its input's adds its input, x + act(Wx + b)
      (the MNIST-1D paper's MLP has this skip around its second layer).
    weight_init: weight initialisation, a name in `arch.initializers.INITS`.
    dtype: compute dtype; param_dtype: storage dtype of the parameters.

  Input (B, ...) of any trailing shape; output (B, num_classes). Sows the last hidden
  features as `intermediates/features`.
  """

  num_classes: int
  widths: Sequence[int] = (100, 100)
  activation: str = "relu"
  dropout: float = 0.0
  residual: bool = False
  weight_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _dense(self, width: int, x: jnp.ndarray, name: str) -> jnp.ndarray:
    kernel_init, bias_init = layer_inits(self.weight_init, x.shape[-1])
    return nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                    kernel_init=kernel_init, bias_init=bias_init)(x)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    act = activation(self.activation)
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i, width in enumerate(self.widths):
      h = act(self._dense(width, x, f"dense{i}"))
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      x = x + h if self.residual and x.shape[-1] == width else h
    self.sow("intermediates", "features", x)
    return self._dense(self.num_classes, x, "head")
