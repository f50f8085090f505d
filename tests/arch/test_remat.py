"""`remat=True` (`nn.remat` around each block) in the Transformers, the ResNet and the UNet:
the same parameters and gradients as without it, a rematerialised backward pass, and less
memory for the activations of a deeper model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch

CASES = {
    "transformer_lm": (dict(name="transformer.TransformerLM", vocab_size=11, width=16, depth=2,
                            num_heads=2, mlp_dim=32, max_len=12, dropout=0.1),
                       lambda: (jnp.arange(24).reshape(2, 12) % 11,)),
    "transformer_classifier": (dict(name="transformer.TransformerClassifier", num_classes=3,
                                    width=16, depth=2, num_heads=2, mlp_dim=32, max_len=8,
                                    patch_size=2, positions="rotary"),
                               lambda: (jnp.linspace(-1, 1, 32).reshape(2, 16),)),
    "resnet": (dict(name="cnn.ResNet", num_classes=3, stage_sizes=(1, 1), widths=(4, 8), ndim=1),
               lambda: (jnp.linspace(-1, 1, 32).reshape(2, 16),)),
    "unet": (dict(name="unet.UNet", data_shape=(8,), ndim=1, channels=8, channel_mults=(1, 2),
                  num_res_blocks=1, attention_levels=(1,), groups=4, dropout=0.1),
             lambda: (jnp.linspace(-1, 1, 16).reshape(2, 8), jnp.array([3, 700]))),
}


def _loss(model, variables, inputs):
  """A scalar of the training-mode outputs (dropout on, batch statistics updated) as a function
  of the parameters."""
  def loss(params):
    out, _ = model.apply({**variables, "params": params}, *inputs, train=True,
                         rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(out.astype(jnp.float32)))
  return loss


def _residual_bytes(model, variables, inputs) -> int:
  """Bytes the backward pass keeps from the forward pass: the leaves of the vjp closure,
  computed abstractly (nothing is compiled or run)."""
  res = jax.eval_shape(lambda v: jax.vjp(_loss(model, v, inputs), v["params"])[1], variables)
  return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(res))


@pytest.mark.parametrize("name", sorted(CASES))
def test_remat_keeps_the_parameters_and_stores_fewer_activations(name):
  fields, make_inputs = CASES[name]
  inputs = make_inputs()
  plain, remat = arch.build(dict(fields)), arch.build(dict(fields, remat=True))
  shapes = jax.eval_shape(plain.init, jax.random.key(0), *inputs)
  assert jax.tree.structure(shapes) == jax.tree.structure(
      jax.eval_shape(remat.init, jax.random.key(0), *inputs))  # checkpoints interchange
  kept = {m is remat: _residual_bytes(m, shapes, inputs) for m in (plain, remat)}
  assert kept[True] < 0.7 * kept[False], kept


@pytest.mark.parametrize("name", [pytest.param("transformer_lm", marks=pytest.mark.slow),
                                  "resnet"])
def test_remat_gives_the_same_gradients(name):
  fields, make_inputs = CASES[name]
  inputs = make_inputs()
  plain, remat = arch.build(dict(fields)), arch.build(dict(fields, remat=True))
  variables = plain.init(jax.random.key(0), *inputs)
  fast = {"xla_backend_optimization_level": 0}  # compile time, not speed, matters here
  out = {}
  for model in (plain, remat):
    f = jax.value_and_grad(_loss(model, variables, inputs))
    assert ("remat" in str(jax.make_jaxpr(f)(variables["params"]))) == (model is remat)
    out[model is remat] = jax.jit(f).lower(variables["params"]).compile(fast)(variables["params"])
  (v0, g0), (v1, g1) = out[False], out[True]
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  # float32 sums in another order: each gradient within 1e-5 of the largest gradient (as in
  # tests/train/test_tensor_parallel.py; an element near zero differed by 4.3e-6 under the
  # suite's XLA flags, and the key biases' gradients are zero but for rounding)
  largest = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(g0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * largest),
               g0, g1)


def test_remat_cuts_the_stored_activations_of_a_deeper_model_fifteenfold():
  fields = dict(name="transformer.TransformerLM", vocab_size=32, width=64, depth=6, num_heads=4,
                mlp_dim=256, max_len=128)
  tokens = jnp.zeros((8, 128), jnp.int32)
  kept = {}
  for remat in (False, True):
    model = arch.build(dict(fields, remat=remat))
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)
    kept[remat] = _residual_bytes(model, shapes, (tokens,))
  # 73.4 MB (every block's attention weights, causal blocks only, and MLP activations) against
  # 4.0 MB (parameters and each block's input)
  assert kept[True] < kept[False] / 15, kept


def test_policies_keep_less_the_less_they_save():
  # what the backward pass keeps, abstractly: everything > the matmuls > nothing
  fields, make_inputs = CASES["transformer_lm"]
  inputs = make_inputs()
  shapes = jax.eval_shape(arch.build(dict(fields)).init, jax.random.key(0), *inputs)
  kept = {p: _residual_bytes(arch.build(dict(fields, remat_policy=p)), shapes, inputs)
          for p in ("", "dots_saveable", "nothing_saveable")}
  assert kept["nothing_saveable"] < kept["dots_saveable"] < kept[""], kept
  assert _residual_bytes(arch.build(dict(fields, remat=True)), shapes, inputs) == \
      kept["nothing_saveable"]  # model.remat=True is that policy


@pytest.mark.parametrize("fields,match", [
    (dict(remat_policy="everything"), r"model.remat_policy='everything'; expected one of"),
    (dict(remat=True, remat_policy="dots_saveable"),
     r"model.remat=True with model.remat_policy='dots_saveable'"),
])
def test_a_bad_or_conflicting_policy_is_one_line(fields, match):
  name_fields, make_inputs = CASES["resnet"]
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(arch.build(dict(name_fields, **fields)).init, jax.random.key(0),
                   *make_inputs())
