import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from train import config as config_lib
from train.paradigms import reduce_eval, supervised


def _np_cross_entropy(logits, labels, smoothing):
  z = logits.astype(np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  k = z.shape[-1]
  target = np.full_like(z, smoothing / k)
  target[np.arange(len(labels)), labels] += 1 - smoothing
  return -(target * logp).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=7)
  got = supervised.per_example_loss(jnp.asarray(logits), jnp.asarray(labels), "cross_entropy",
                                    smoothing)
  np.testing.assert_allclose(got, _np_cross_entropy(logits, labels, smoothing), rtol=1e-5)


def _config(loss="cross_entropy"):
  c = config_lib.base()
  c.supervised.loss = loss
  c.optim.learning_rate = 0.05
  c.train.steps = 100
  return c


def test_weighted_train_loss_and_masked_eval_sums():
  model = arch.build({"name": "mlp.MLP", "num_classes": 3, "widths": ()})
  p = supervised.make(model, _config(), total_steps=100)
  rng = np.random.default_rng(1)
  batch = {"inputs": rng.normal(size=(6, 4)).astype(np.float32),
           "label": rng.integers(0, 3, size=6), "mask": np.array([2, 1, 0.5, 1, 1, 0], np.float32)}
  state = p.init(jax.random.key(0), batch)
  logits = np.asarray(p.predict(state, batch["inputs"]))
  per = _np_cross_entropy(logits, batch["label"], 0.0)
  _, m = jax.jit(p.train_step)(state, batch, jax.random.key(1))
  assert float(m["loss"]) == pytest.approx((per * batch["mask"]).sum() / 6, rel=1e-5)
  eval_batch = dict(batch, mask=np.array([1, 1, 1, 1, 0, 0], np.float32))
  sums = jax.device_get(jax.jit(p.eval_step)(state, eval_batch, None))
  got = reduce_eval(sums)
  assert got["count"] == 4
  assert got["loss"] == pytest.approx(per[:4].mean(), rel=1e-5)
  assert got["accuracy"] == pytest.approx(np.mean(logits[:4].argmax(-1) == batch["label"][:4]))


def test_training_fits_a_separable_problem_and_regression():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(64, 2)).astype(np.float32)
  for loss, y, num in (("cross_entropy", (x[:, 0] > 0).astype(np.int64), 2),
                       ("mse", (x @ np.array([2.0, -1.0])).astype(np.float32), 1)):
    model = arch.build({"name": "mlp.MLP", "num_classes": num, "widths": ()})
    p = supervised.make(model, _config(loss), total_steps=100)
    batch = {"inputs": x, "label": y, "mask": np.ones(64, np.float32)}
    state = p.init(jax.random.key(0), batch)
    step = jax.jit(p.train_step)
    first = None
    for i in range(100):
      state, m = step(state, batch, jax.random.key(0))
      first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < 0.2 * first
    assert int(state.step) == 100


def heavy_op_dtypes(hlo: str) -> set[str]:
  """Element types of the results of every convolution and dot product of a lowered program."""
  return set(re.findall(r"stablehlo\.(?:convolution|dot_general)\b.*?-> "
                        r"tensor<(?:[\d?]+x)*([a-z]+\d*)>", hlo))


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_parameters():
  model = arch.build({"name": "cnn.ResNet", "num_classes": 10, "ndim": 1, "stage_sizes": (1, 1),
                      "widths": (8, 24)})   # with batch norm, whose statistics stay float32
  rng = np.random.default_rng(3)
  batch = {"inputs": rng.normal(size=(16, 40, 1)).astype(np.float32),
           "label": rng.integers(0, 10, size=16), "mask": np.ones(16, np.float32)}
  steps = {}
  for precision in ("float32", "bfloat16"):
    c = _config()
    c.train.precision = precision
    p = supervised.make(model, c, total_steps=100)
    state = p.init(jax.random.key(0), batch)
    step = jax.jit(p.train_step)
    # the convolutions and the dense layer run in the compute dtype, not only cast to it
    hlo = step.lower(state, batch, jax.random.key(1)).as_text()
    assert heavy_op_dtypes(hlo) == {"bf16" if precision == "bfloat16" else "f32"}
    # batch norm's scales and biases (8 and 24 channels) reach the model in float32
    # (train.state.cast_params), as flax's own models keep them: XLA on TPU ran the sums that
    # give their gradients as separate bfloat16 passes when they were cast
    assert not re.findall(r"stablehlo\.convert\b.*?tensor<(?:8|24)xf32>\) -> "
                          r"tensor<(?:8|24)xbf16>", hlo)
    new, m = step(state, batch, jax.random.key(1))
    dtypes = {x.dtype for x in jax.tree.leaves((new.params, new.opt_state, new.model_state))
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}, dtypes   # master weights, moments and stats
    steps[precision] = (float(m["loss"]), new)
  # one step from the same start: bf16's loss and update agree with float32's to bf16 precision
  assert steps["bfloat16"][0] == pytest.approx(steps["float32"][0], rel=2e-2)
  with pytest.raises(config_lib.ConfigError, match="train.precision='float16'"):
    c = _config()
    c.train.precision = "float16"
    config_lib.validate(c)


def test_cast_params_keeps_vectors_in_float32():
  from train import state as state_lib
  params = {"conv": {"kernel": jnp.ones((3, 3, 4, 8)), "bias": jnp.ones(8)},
            "bn": {"scale": jnp.ones(8)}, "step": jnp.ones((), jnp.int32)}
  cast = state_lib.cast_params(params, jnp.bfloat16)
  assert cast["conv"]["kernel"].dtype == jnp.bfloat16
  assert {cast["conv"]["bias"].dtype, cast["bn"]["scale"].dtype} == {jnp.dtype(jnp.float32)}
  assert cast["step"].dtype == jnp.int32
