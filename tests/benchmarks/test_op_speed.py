import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import op_speed


def test_each_op_computes_what_its_pytorch_twin_computes():
  pytest.importorskip("torch")
  for name, (f, how, arrays) in op_speed.cases().items():
    got = jax.tree.leaves(jax.jit(f)(*[jnp.asarray(a) for a in arrays]))
    want = op_speed.torch_op(how, arrays)()
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    assert len(got) == len(want), name
    for g, w in zip(got, want):
      scale = max(1.0, float(np.abs(w).max()))
      np.testing.assert_allclose(np.asarray(g), w, atol=2e-4 * scale, err_msg=name)


def test_measure_times_every_op(monkeypatch):
  small = {name: (f, how, [a[:2] for a in arrays])
           for name, (f, how, arrays) in list(op_speed.cases().items())[:1]}
  monkeypatch.setattr(op_speed, "cases", lambda: small)
  rows = op_speed.measure(repeats=2)
  assert [r["op"] for r in rows] == list(small)
  assert all(r["xla_us"] > 0 for r in rows)
