"""bfloat16 training in the generative paradigms: the step computes in bfloat16, keeps float32
parameters, optimizer moments and statistics, and its first loss agrees with float32's."""

import jax
import jax.numpy as jnp
import pytest

from tests.train.test_loop import _tiny
from tests.train.test_supervised import heavy_op_dtypes
from train import loop


@pytest.mark.slow  # bfloat16 compiles slowly on CPU: 70 s for the three
@pytest.mark.parametrize("experiment", ["digits_vae", "digits_dcgan", "digits_ddpm"])
def test_bfloat16_step_of_each_generative_paradigm(data_dir, experiment):
  losses = {}
  for precision in ("float32", "bfloat16"):
    run = loop.build(_tiny(experiment, data_dir, **{"train.precision": precision}))
    state = run.init_state()
    hlo = run.train_step.lower(state, run.example, run.step_rng).as_text()
    # the layers compute in bfloat16 (attention's scores stay float32, arch/attention.py)
    assert ("bf16" in heavy_op_dtypes(hlo)) == (precision == "bfloat16")
    new, packed = run.train_step(state, run.example, run.step_rng)
    dtypes = {x.dtype for x in jax.tree.leaves((new.params, new.opt_state, new.model_state))
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}, dtypes
    metrics = dict(zip(run.names, packed.tolist()))
    losses[precision] = metrics.get("loss", metrics.get("g_loss"))
  assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=3e-2), losses


def test_first_moment_in_bfloat16(data_dir):
  run = loop.build(_tiny("mnist1d_mlp", data_dir, **{"optim.mu_dtype": "bfloat16"}))
  state = run.init_state()
  mus = [x.mu for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
         if hasattr(x, "mu")]
  assert mus and {m.dtype for m in jax.tree.leaves(mus)} == {jnp.dtype(jnp.bfloat16)}


def test_bfloat16_inputs_give_the_same_bfloat16_step(data_dir):
  # data.dtype="bfloat16" casts the batch on the host (numpy, round to nearest even) where the
  # step would cast it first thing: the same step, from half the bytes
  out = {}
  for dtype in ("float32", "bfloat16"):
    run = loop.build(_tiny("mnist1d_cnn", data_dir, **{"train.precision": "bfloat16",
                                                       "data.dtype": dtype}))
    assert run.example["inputs"].dtype == jnp.dtype(dtype)
    assert run.example["mask"].dtype == jnp.float32
    new, packed = run.train_step(run.init_state(), run.example, run.step_rng)
    out[dtype] = (packed.tolist(), jax.tree.leaves(new.params))
  assert out["bfloat16"][0] == out["float32"][0]
  for a, b in zip(out["bfloat16"][1], out["float32"][1]):
    assert (a == b).all()
