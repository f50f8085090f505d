"""`model.attention_logits`: the attention logits and softmax in float32 (jax's choice) or in the
compute dtype (flax's and big_vision's), on this host's path and on the path traced for a TPU."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import attention, common
from arch.transformer import TransformerClassifier, TransformerLM

B, T, N, H = 2, 12, 2, 8


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(B, T, N, H)) for _ in range(3)]


def _reference(q, k, v, causal):
  """float64 softmax(QK^T / sqrt(H)) V."""
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
  if causal:
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum("bnts,bsnh->btnh", w, v)


def _dot_dtypes(fn, *args) -> set[str]:
  """The element types of the attention's dot products (results of rank 4 or more: the logits
  and the weighted values) in `fn`'s lowered program."""
  hlo = jax.jit(fn).lower(*args).as_text()
  return set(re.findall(r"stablehlo\.dot_general\b.*?-> tensor<(?:\d+x){4,}([a-z]+\d*)>", hlo))


@pytest.mark.parametrize("platform", ["cpu", "tpu"])
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_logits_follow_a_float64_reference_and_are_bfloat16(platform, causal):
  q, k, v = _inputs()
  ref = _reference(q, k, v, causal)
  bf = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
  with common.compiling_for(platform):  # traced as for that platform, run on this CPU

    def attend(dtype):
      return lambda q, k, v: attention.dot_product_attention(q, k, v, is_causal=causal,
                                                             logits_dtype=dtype)
    compute = jax.jit(attend(jnp.dtype(jnp.bfloat16)))(*bf)
    wide = jax.jit(attend(None))(*bf)
    assert _dot_dtypes(attend(jnp.dtype(jnp.bfloat16)), *bf) == {"bf16"}
    assert "f32" in _dot_dtypes(attend(None), *bf)  # the logits
  assert compute.dtype == wide.dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa: inputs rounded to it already move the output by ~1e-2
  err_compute = np.abs(np.asarray(compute, np.float64) - ref).max()
  err_wide = np.abs(np.asarray(wide, np.float64) - ref).max()
  assert err_compute < 0.06 and err_wide < 0.06, (err_compute, err_wide)


def test_bfloat16_logits_gradients_follow_a_float32_reference():
  # this host's hand-written backward pass with the weights in bfloat16, against float32's
  q, k, v = _inputs(1)
  g = np.random.default_rng(2).normal(size=(B, T, N, H))

  def loss(q, k, v, dtype):
    out = attention.dot_product_attention(q, k, v, is_causal=True, logits_dtype=dtype)
    return jnp.sum(out.astype(jnp.float32) * g)

  bf = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
  grads = grad(*bf, jnp.dtype(jnp.bfloat16))
  ref = grad(*[jnp.asarray(a, jnp.float32) for a in (q, k, v)], None)
  for got, want in zip(grads, ref):
    assert got.dtype == jnp.bfloat16
    scale = np.abs(np.asarray(want)).max()
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.05 * scale)


@pytest.mark.parametrize("model", [
    lambda **kw: TransformerClassifier(num_classes=3, width=16, depth=1, num_heads=2,
                                       mlp_dim=32, max_len=T, **kw),
    lambda **kw: TransformerLM(vocab_size=11, width=16, depth=1, num_heads=2, mlp_dim=32,
                               max_len=T, **kw)], ids=["classifier", "lm"])
def test_the_model_field_takes_effect_in_bfloat16_and_not_in_float32(model):
  x = (jnp.asarray(np.random.default_rng(3).normal(size=(B, T)), jnp.float32)
       if model().__class__ is TransformerClassifier else jnp.arange(B * T).reshape(B, T) % 11)
  params = jax.jit(model().init)(jax.random.key(0), x)

  def weights(dtype, logits):
    apply = model(dtype=dtype, attention_logits=logits).apply
    _, inter = jax.jit(lambda p, x: apply(p, x, mutable=["intermediates"]))(params, x)
    return jax.tree.leaves(inter)

  for logits, want in (("float32", jnp.float32), ("compute", jnp.bfloat16)):
    sown = [w for w in weights(jnp.bfloat16, logits) if w.ndim == 4]
    assert sown and {w.dtype for w in sown} == {jnp.dtype(want)}, logits
  # in float32, "compute" is float32: the same program
  out32 = [jax.jit(model(attention_logits=a).apply)(params, x) for a in ("float32", "compute")]
  np.testing.assert_array_equal(out32[0], out32[1])


def test_an_unknown_choice_is_one_line():
  with pytest.raises(ValueError, match=r"model\.attention_logits='bf16'; expected one of "
                                       r"\['float32', 'compute'\]"):
    attention.logits_dtype("bf16", jnp.bfloat16)
