import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import attention
from arch.scan import stack_blocks, unstack_blocks
from arch.transformer import TransformerClassifier, TransformerLM


def _np_softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def x64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_explicit_softmax_in_float64(x64, causal):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 8))
  lengths = np.array([5, 3])
  valid = np.arange(5)[None, :] < lengths[:, None]                    # (B, S)
  mha = attention.MultiHeadAttention(2, dtype=jnp.float64, param_dtype=jnp.float64)
  v = mha.init(jax.random.key(0), x)
  out, inter = mha.apply(v, x, jnp.asarray(valid)[:, None, None, :], causal=causal,
                         mutable=["intermediates"])
  p = jax.tree.map(np.asarray, v["params"])
  q, k, val = (np.einsum("btd,dnh->btnh", x, p[n]["kernel"]) + p[n]["bias"]
               for n in ("query", "key", "value"))
  logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(4)
  allowed = np.broadcast_to(valid[:, None, None, :], logits.shape).copy()
  if causal:
    allowed &= np.tril(np.ones((5, 5), bool))
  w = _np_softmax(np.where(allowed, logits, -np.inf))
  heads = np.einsum("bnts,bsnh->btnh", w, val)
  ref = np.einsum("btnh,nhd->btd", heads, p["out"]["kernel"]) + p["out"]["bias"]
  assert out.dtype == jnp.float64
  # jax.nn.dot_product_attention always takes its softmax in float32 (by design, for the fused
  # kernels); everything else here is float64, so agreement is to float32 rounding.
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(inter["intermediates"]["attention_weights"][0], w, atol=1e-12)


def test_sinusoidal_and_rotary_follow_their_formulas():
  pos = np.arange(7)
  pe = np.asarray(attention.sinusoidal(jnp.asarray(pos), 6))
  i = np.arange(3)
  np.testing.assert_allclose(pe[:, 0::2], np.sin(pos[:, None] / 10000 ** (2 * i / 6)), atol=1e-6)
  np.testing.assert_allclose(pe[:, 1::2], np.cos(pos[:, None] / 10000 ** (2 * i / 6)), atol=1e-6)
  # Rotary: q.k depends only on the difference of the two positions.
  rng = np.random.default_rng(1)
  q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32) for _ in range(2))
  dot = lambda a, b: float(jnp.sum(attention.rotary(q, jnp.array([a])) *
                                   attention.rotary(k, jnp.array([b]))))
  assert dot(3, 1) == pytest.approx(dot(10, 8), rel=1e-5)
  assert dot(3, 1) != pytest.approx(dot(3, 2), rel=1e-3)
  assert float(jnp.linalg.norm(attention.rotary(q, jnp.array([5])))) == pytest.approx(
      float(jnp.linalg.norm(q)), rel=1e-6)


def _lm(positions, **kw):
  return TransformerLM(vocab_size=17, width=16, depth=2, num_heads=2, mlp_dim=32, max_len=12,
                       positions=positions, **kw)


def test_causal_mask_gradient_of_an_early_output_wrt_later_inputs_is_zero():
  model = _lm("learned")
  tokens = jnp.arange(10)[None] + 3        # distinct tokens: an embedding row is one position
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  t = 4

  def early_output(p):
    return jnp.sum(model.apply({"params": p}, tokens)[0, t] ** 2)

  g = np.asarray(jax.jit(jax.grad(early_output))(params)["embed"]["embedding"])
  later, earlier = np.asarray(tokens[0, t + 1:]), np.asarray(tokens[0, :t + 1])
  assert np.all(g[later] == 0.0)            # exactly zero, not merely small
  assert np.all(np.abs(g[earlier]).sum(-1) > 0)


def _decode_in_pieces(model, params, tokens, pieces):
  cache = arch.init_cache(model, tokens.shape[0], 12)
  variables, outs, start = {"params": params, "cache": cache}, [], 0
  step = jax.jit(lambda v, t: model.apply(v, t, decode=True, mutable=["cache"]))
  for end in pieces:
    logits, state = step(variables, tokens[:, start:end])
    variables = {"params": params, **state}
    outs.append(logits)
    start = end
  return jnp.concatenate(outs, axis=1)


# "none" takes the rotary path without the rotation; "sinusoidal" the learned one's offset.
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_decoding_equals_a_full_forward_pass(positions):
  model = _lm(positions)
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 17)
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  full = jax.jit(model.apply)({"params": params}, tokens)
  stepped = _decode_in_pieces(model, params, tokens, [4, 5, 6, 7, 8, 9, 10])   # prefill 4, then 1s
  np.testing.assert_allclose(stepped, full, atol=2e-5)


def test_scanned_layers_compute_what_unrolled_ones_do_and_checkpoints_convert():
  # the same parameters stacked (arch.scan.stack_blocks): the same logits, also decoded
  # with a cache; a scanned model's own init has that structure; unstacking gives them back
  plain, scanned = _lm("rotary"), _lm("rotary", scan_layers=True)
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 17)
  params = jax.jit(plain.init)(jax.random.key(0), tokens)["params"]
  stacked = stack_blocks(params, 2)
  assert stacked["decoder"]["blocks"]["block"]["attn"]["query"]["kernel"].shape == (2, 16, 2, 8)
  assert jax.tree.structure(stacked) == jax.tree.structure(
      jax.eval_shape(scanned.init, jax.random.key(0), tokens)["params"])
  full = jax.jit(plain.apply)({"params": params}, tokens)
  np.testing.assert_allclose(jax.jit(scanned.apply)({"params": stacked}, tokens), full,
                             atol=2e-5)
  np.testing.assert_allclose(_decode_in_pieces(scanned, stacked, tokens, [5, 10]), full,
                             atol=2e-5)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()),
                                   unstack_blocks(stacked), params))


def test_recurrent_lm_decoding_equals_a_full_forward_pass():
  model = arch.build({"name": "recurrent.RecurrentNet", "num_classes": 17, "vocab_size": 17,
                      "hidden": (8, 8), "cell": "lstm", "head": "sequence"})
  tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 17)
  params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
  full = jax.jit(model.apply)({"params": params}, tokens)
  np.testing.assert_allclose(_decode_in_pieces(model, params, tokens, [3, 4, 10]), full,
                             atol=1e-6)
  with pytest.raises(ValueError, match="unidirectional"):
    arch.init_cache(arch.build({"name": "recurrent.RecurrentNet", "num_classes": 3,
                                "vocab_size": 3, "bidirectional": True}), 1, 4)


def test_sequence_longer_than_max_len_is_an_error():
  model = _lm("learned")
  with pytest.raises(ValueError, match="length 13 is longer than the model's max_len=12"):
    model.init(jax.random.key(0), jnp.zeros((1, 13), jnp.int32))
  clf = TransformerClassifier(num_classes=3, max_len=8, patch_size=4)
  with pytest.raises(ValueError, match="length 10 is longer than the model's max_len=8"):
    clf.init(jax.random.key(0), jnp.zeros((1, 40)))
  with pytest.raises(ValueError, match="not divisible by model.patch_size=4"):
    clf.init(jax.random.key(0), jnp.zeros((1, 30)))
  with pytest.raises(ValueError, match="model.positions='alibi'"):
    _lm("alibi").init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="expects int token ids"):
    _lm("learned").init(jax.random.key(0), jnp.zeros((1, 4)))


def test_classifier_ignores_padding_beyond_the_lengths(pool="cls"):
  model = TransformerClassifier(num_classes=4, width=16, depth=2, num_heads=2, mlp_dim=32,
                                max_len=16, patch_size=2, pool=pool)
  x = jax.random.normal(jax.random.key(0), (2, 12))
  v = jax.jit(model.init)(jax.random.key(1), x)
  apply = jax.jit(model.apply)
  padded = apply(v, x.at[1, 6:].set(100.0), lengths=jnp.array([12, 6]))
  short = apply(v, x[1:, :6])
  np.testing.assert_allclose(padded[1], short[0], atol=1e-5)
  np.testing.assert_allclose(padded[0], apply(v, x)[0], atol=1e-5)


def test_classifier_sows_attention_weights_that_are_distributions():
  model = TransformerClassifier(num_classes=10, width=16, depth=2, num_heads=4, mlp_dim=32,
                                max_len=40, patch_size=4, positions="sinusoidal")
  x = jax.random.normal(jax.random.key(0), (3, 40))
  v = jax.jit(model.init)(jax.random.key(1), x)
  _, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(v, x)
  inter = state["intermediates"]["encoder"]
  w = np.asarray(inter["block1"]["attn"]["attention_weights"][0])
  assert w.shape == (3, 4, 11, 11)           # 10 patches + the CLS token
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert state["intermediates"]["features"][0].shape == (3, 16)


def test_a_causal_classifier_attends_backwards_and_pools_the_last_valid_token():
  model = TransformerClassifier(num_classes=3, width=16, depth=2, num_heads=2, mlp_dim=32,
                                max_len=11, patch_size=4, pool="last", causal=True)
  x = jax.random.normal(jax.random.key(0), (2, 44))
  v = jax.jit(model.init)(jax.random.key(1), x)
  out, state = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(v, x)
  w = np.asarray(state["intermediates"]["encoder"]["block0"]["attn"]["attention_weights"][0])
  assert w.shape == (2, 2, 11, 11)
  assert np.all(np.triu(w, k=1) == 0) and np.allclose(w.sum(-1), 1.0, atol=1e-5)
  apply = jax.jit(model.apply)  # op-by-op dispatch compiles every op of every shape: 3x slower
  # the last token has seen every patch: changing the first patch changes the output
  assert np.abs(apply(v, x.at[:, :4].add(1.0)) - out).max() > 1e-4
  # with lengths, the pooled token is the last valid one: padding changes nothing
  padded = apply(v, x.at[1, 20:].set(50.0), lengths=jnp.array([44, 20]))
  np.testing.assert_allclose(padded[1], apply(v, x[1:, :20])[0], atol=1e-5)
  with pytest.raises(ValueError, match="model.causal=True with model.pool='cls'"):
    TransformerClassifier(num_classes=3, causal=True).init(jax.random.key(0), x)
