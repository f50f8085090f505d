import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _numpy_cell(kind, p, x, h, c):
  """One step of Flax's cells in float64 NumPy, written from their equations."""
  k = lambda n: np.asarray(p[n]["kernel"], np.float64)
  b = lambda n: np.asarray(p[n]["bias"], np.float64) if "bias" in p[n] else 0.0
  lin = lambda i, hh: x @ k(i) + b(i) + h @ k(hh) + b(hh)
  if kind == "rnn":
    return np.tanh(x @ k("i") + b("i") + h @ k("h")), c
  if kind == "lstm":
    i, f = _sigmoid(lin("ii", "hi")), _sigmoid(lin("if", "hf"))
    g, o = np.tanh(lin("ig", "hg")), _sigmoid(lin("io", "ho"))
    c = f * c + i * g
    return o * np.tanh(c), c
  r, z = _sigmoid(lin("ir", "hr")), _sigmoid(lin("iz", "hz"))
  n = np.tanh(x @ k("in") + b("in") + r * (h @ k("hn") + b("hn")))
  return (1 - z) * n + z * h, c


def _numpy_scan(kind, p, xs, reverse=False):
  steps = range(xs.shape[1] - 1, -1, -1) if reverse else range(xs.shape[1])
  width = np.asarray(p["hn" if kind == "gru" else ("h" if kind == "rnn" else "hi")]["kernel"]).shape[0]
  h = np.zeros((xs.shape[0], width))
  c = np.zeros_like(h)
  out = np.zeros((xs.shape[0], xs.shape[1], width))
  for t in steps:
    h, c = _numpy_cell(kind, p, xs[:, t], h, c)
    out[:, t] = h
  return out


@pytest.mark.parametrize("kind,init", [("rnn", "lecun_normal"), ("lstm", "lecun_normal"),
                                       ("gru", "lecun_normal"), ("gru", "torch")])
def test_cells_equal_a_float64_numpy_reference(kind, init):
  model = arch.build({"name": "recurrent.RecurrentNet", "num_classes": 3, "hidden": (4,),
                      "cell": kind, "bidirectional": True, "head": "sequence",
                      "weight_init": init})
  xs = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
  v = model.init(jax.random.key(0), xs)
  p = v["params"]
  if init == "torch":  # PyTorch's GRU: a bias on every input- and hidden-side gate transform
    assert all("bias" in p["layer0_fwd"]["cell"][g] for g in ("ir", "iz", "in", "hr", "hz", "hn"))
  ref = np.concatenate([_numpy_scan(kind, p["layer0_fwd"]["cell"], xs.astype(np.float64)),
                        _numpy_scan(kind, p["layer0_bwd"]["cell"], xs.astype(np.float64),
                                    reverse=True)], axis=-1)
  ref = ref @ np.asarray(p["head"]["kernel"], np.float64) + np.asarray(p["head"]["bias"])
  np.testing.assert_allclose(model.apply(v, xs), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["last", "mean", "flatten"])
def test_steps_past_the_length_do_not_change_the_result(head):
  model = arch.build({"name": "recurrent.RecurrentNet", "num_classes": 5, "hidden": (8, 8),
                      "cell": "gru", "bidirectional": True, "head": head})
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 10)).astype(np.float32)
  lengths = jnp.array([10, 4, 7])
  v = jax.jit(model.init)(jax.random.key(0), x)
  apply = jax.jit(model.apply)  # op-by-op dispatch compiles each op of each shape: slower
  y = x.copy()
  for row, n in enumerate([10, 4, 7]):
    y[row, n:] = rng.normal(size=10 - n) * 100
  a = apply(v, x, lengths=lengths)
  np.testing.assert_allclose(apply(v, y, lengths=lengths), a, rtol=1e-6, atol=1e-6)
  # ...and the valid prefix alone, at its own length, gives the same "last"/"mean" result.
  if head != "flatten":
    short = apply(v, x[1:2, :4])
    np.testing.assert_allclose(short[0], a[1], rtol=1e-5, atol=1e-6)


def test_token_inputs_are_embedded_and_errors_name_the_field():
  model = arch.build({"name": "recurrent.RecurrentNet", "num_classes": 7, "vocab_size": 7,
                      "embed_dim": 4, "hidden": (8,), "head": "sequence"})
  tokens = jnp.array([[1, 2, 3], [4, 5, 6]])
  v = model.init(jax.random.key(0), tokens)
  assert model.apply(v, tokens).shape == (2, 3, 7)
  with pytest.raises(ValueError, match=r"model.vocab_size=7 expects int token ids"):
    model.apply(v, tokens.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"model.cell='lstn'.*'gru'"):
    arch.build({"name": "recurrent.RecurrentNet", "num_classes": 2, "cell": "lstn"}).init(
        jax.random.key(0), jnp.ones((1, 3)))
  with pytest.raises(ValueError, match=r"model.head='final'"):
    arch.build({"name": "recurrent.RecurrentNet", "num_classes": 2, "head": "final"}).init(
        jax.random.key(0), jnp.ones((1, 3)))
