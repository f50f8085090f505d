import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train import config as config_lib
from train import optim


def _optim(**kw):
  o = config_lib.base().optim
  for k, v in kw.items():
    o[k] = v
  return o


def test_schedules():
  lr = optim.schedule(_optim(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10), 110)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(60)) == pytest.approx(0.5, abs=1e-6) and float(lr(110)) == pytest.approx(0.0)
  lr = optim.schedule(_optim(learning_rate=2.0, schedule="cosine", end_lr_factor=0.1), 100)
  assert float(lr(100)) == pytest.approx(0.2)
  lr = optim.schedule(_optim(learning_rate=1.0, schedule="step", step_boundaries=(0.5, 0.75),
                             step_factor=0.1), 100)
  assert [float(lr(s)) for s in (49, 50, 74, 75)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_weight_decay_skips_biases_and_adamw_decouples():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  tx, _ = optim.make(_optim(name="sgd", learning_rate=0.1, weight_decay=0.5), 10)
  upd, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(upd["kernel"], -0.05)  # -lr * wd * w
  np.testing.assert_allclose(upd["bias"], 0.0)
  # Adam: L2 goes through the moments, a zero gradient's decay gets normalised to a full step;
  # AdamW: decay is added after the moments, -lr * wd * w.
  tx, _ = optim.make(_optim(name="adam", learning_rate=0.1, weight_decay=0.5), 10)
  np.testing.assert_allclose(tx.update(zero, tx.init(params), params)[0]["kernel"], -0.1,
                             rtol=1e-5)
  tx, _ = optim.make(_optim(name="adamw", learning_rate=0.1, weight_decay=0.5), 10)
  np.testing.assert_allclose(tx.update(zero, tx.init(params), params)[0]["kernel"], -0.05,
                             rtol=1e-5)


def test_momentum_and_nesterov_follow_their_recurrences():
  p = {"w": jnp.zeros(())}
  g = {"w": jnp.ones(())}
  for name, want in (("momentum", [-0.1, -0.19, -0.271]), ("nesterov", [-0.19, -0.271, -0.3439])):
    tx, _ = optim.make(_optim(name=name, learning_rate=0.1, momentum=0.9), 10)
    s = tx.init(p)
    got = []
    for _ in range(3):
      u, s = tx.update(g, s, p)
      got.append(float(u["w"]))
    assert got == pytest.approx(want, rel=1e-5)


def test_clipping_bounds_the_global_norm():
  tx, _ = optim.make(_optim(name="sgd", learning_rate=1.0, clip_norm=1.0), 10)
  g = {"a": jnp.full((4,), 3.0), "b": jnp.full((2,), 4.0)}
  u, _ = tx.update(g, tx.init(g), g)
  assert float(optax.global_norm(u)) == pytest.approx(1.0, rel=1e-5)


def test_gradient_accumulation_equals_the_large_batch():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)
  loss = lambda w, xb, yb: jnp.mean((xb @ w - yb) ** 2)
  w0 = jnp.zeros(3)
  big, _ = optim.make(_optim(name="momentum", learning_rate=0.1), 4)
  acc, _ = optim.make(_optim(name="momentum", learning_rate=0.1, grad_accum_steps=4), 16)
  wb, sb = w0, big.init(w0)
  wa, sa = w0, acc.init(w0)
  for step in range(2):
    u, sb = big.update(jax.grad(loss)(wb, x, y), sb, wb)
    wb = optax.apply_updates(wb, u)
    for k in range(4):  # four micro-batches of 2 make the batch of 8
      sl = slice(2 * k, 2 * k + 2)
      u, sa = acc.update(jax.grad(loss)(wa, x[sl], y[sl]), sa, wa)
      wa = optax.apply_updates(wa, u)
  np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)


def test_norms_are_the_global_l2_norms_or_nothing(data_dir):
  tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.array([-2.0, 0.5])}}
  want = np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(tree)))
  got = optim.norms(True, "d_", grad=tree, param=jax.tree.map(lambda x: 2 * x, tree))
  assert set(got) == {"d_grad_norm", "d_param_norm"}
  assert float(got["d_grad_norm"]) == pytest.approx(want, rel=1e-6)
  assert float(got["d_param_norm"]) == pytest.approx(2 * want, rel=1e-6)
  assert optim.norms(False, grad=tree) == {}
  # train.log_norms=False takes them out of a run's records
  from tests.train.test_loop import _tiny
  from train import loop
  names = {log: loop.build(_tiny("mnist1d_cnn", data_dir, **{"train.log_norms": log})).names
           for log in (True, False)}
  norms = {"grad_norm", "update_norm", "param_norm"}
  assert norms <= set(names[True]) and not norms & set(names[False])
  assert set(names[True]) - norms == set(names[False])
