"""`arch.cpu_dense` (`model.dense_kernel="cpu"`): the compiled column sum against float64 NumPy,
`CpuDense` against flax's Dense and DenseGeneral (parameters, outputs, gradients), the LM with
either kernel, the calls left to XLA, a mesh, vmap, and the one-line refusals."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import common, cpu_dense, cpu_kernels
from arch.transformer import TransformerLM
from tests.arch.test_cpu_attention import on_four_devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 5), (256, 64), (257, 100), (4096, 384),
                                       (1000, 17)])
def test_column_sum_matches_float64(rows, cols):
  """Rows inside one block and across blocks (256 rows each, a ragged last one); columns off the
  vector width."""
  cpu_kernels.ensure()
  x = np.random.default_rng(rows + cols).normal(size=(rows, cols)).astype(np.float32)
  got = np.asarray(jax.jit(cpu_dense.column_sum)(x))
  np.testing.assert_allclose(got, x.astype(np.float64).sum(0), atol=2e-5 * np.sqrt(rows),
                             rtol=1e-5)


def _flax_and_ours(flax_layer, ours, x):
  """(params, output, gradients) of each layer, both initialised from the same key."""
  out = []
  for layer in (flax_layer, ours):
    params = layer.init(jax.random.key(0), x)

    def loss(p, x, layer=layer):
      return jnp.sum(jnp.sin(layer.apply(p, x)))
    out.append((params, layer.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)))
  return out


@pytest.mark.parametrize("flax_cls,kwargs,shape", [
    (nn.Dense, dict(features=24), (3, 10, 16)),                      # an MLP layer
    (nn.DenseGeneral, dict(features=(4, 6)), (3, 10, 16)),           # a query projection
    (nn.DenseGeneral, dict(features=16, axis=(-2, -1)), (3, 10, 4, 6)),  # the output one
    (nn.Dense, dict(features=5), (7, 9)),                            # 2-D rows
])
def test_same_parameters_outputs_and_gradients_as_flax(flax_cls, kwargs, shape):
  x = jax.random.normal(jax.random.key(1), shape)
  init = dict(bias_init=nn.initializers.normal(0.5))  # a bias that is not zero
  (p0, y0, g0), (p1, y1, g1) = _flax_and_ours(flax_cls(**kwargs, **init),
                                              cpu_dense.CpuDense(**kwargs, **init), x)
  assert jax.tree.structure(p0) == jax.tree.structure(p1)
  jax.tree.map(np.testing.assert_array_equal, p0, p1)  # a checkpoint moves between the two
  assert _calls(cpu_dense.CpuDense(**kwargs, **init).apply, p1, x) == 0  # forward: a matmul
  np.testing.assert_allclose(y1, y0, atol=1e-5, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), g1, g0)


def _calls(fn, *args) -> int:
  return jax.jit(fn).lower(*args).as_text().count("strata_column_sum")


def _grad_calls(layer, params, x) -> int:
  return _calls(jax.grad(lambda p: layer.apply(p, x).sum()), params)


def test_bias_gradient_is_the_kernel_and_uncovered_calls_take_xla():
  x = jnp.ones((4, 8))
  layer = cpu_dense.CpuDense(3)
  params = layer.init(jax.random.key(0), x)
  assert _grad_calls(layer, params, x) == 1
  no_bias = cpu_dense.CpuDense(3, use_bias=False)
  assert _grad_calls(no_bias, no_bias.init(jax.random.key(0), x), x) == 0
  half = cpu_dense.CpuDense(3, dtype=jnp.bfloat16)
  assert _grad_calls(half, params, x) == 0
  precise = cpu_dense.CpuDense(3, precision=jax.lax.Precision.HIGHEST)
  assert _grad_calls(precise, params, x) == 0
  with common.compiling_for("tpu"):  # traced for a TPU: flax's computation
    assert _grad_calls(layer, params, x) == 0


def test_lm_same_with_either_kernel():
  """A one-block LM: the same parameters, loss and gradients (to 1e-5) with the dense layers'
  backward by XLA or by arch.cpu_dense, whose bias sums are the block's 6 and the head's."""
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 50)
  got = {}
  for kernel in ("xla", "cpu"):
    lm = TransformerLM(vocab_size=50, width=32, depth=1, num_heads=4, mlp_dim=64, max_len=16,
                       dense_kernel=kernel)
    params = lm.init(jax.random.key(0), tokens)
    loss = jax.jit(jax.value_and_grad(lambda p, lm=lm: jnp.mean(lm.apply(p, tokens) ** 2)))
    got[kernel] = (params, *loss(params),
                   loss.lower(params).as_text().count("strata_column_sum"))
  jax.tree.map(np.testing.assert_array_equal, got["xla"][0], got["cpu"][0])
  np.testing.assert_allclose(got["cpu"][1], got["xla"][1], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               got["cpu"][2], got["xla"][2])
  assert got["xla"][3] == 0 and got["cpu"][3] == 6 + 1


def test_per_example_gradients_under_vmap():
  """vmap of the gradient (per-example gradients): each example's bias gradient its own sum."""
  layer = cpu_dense.CpuDense(6)
  x = jax.random.normal(jax.random.key(2), (5, 3, 4))
  params = layer.init(jax.random.key(0), x[0])

  def per_example(layer):
    return jax.vmap(jax.grad(lambda p, xi: jnp.sum(layer.apply(p, xi) ** 2)), (None, 0))(
        params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               per_example(layer), per_example(nn.Dense(6)))


SHARDED = '''
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from arch import cpu_dense
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "tensor"))
x = jax.random.normal(jax.random.key(0), (8, 6, 16))
layer = cpu_dense.CpuDense(12)
params = layer.init(jax.random.key(1), x)
rows = NamedSharding(mesh, P("data"))
cols = {"kernel": NamedSharding(mesh, P(None, "tensor")), "bias": NamedSharding(mesh, P("tensor"))}
grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))),
               in_shardings=({"params": cols}, rows))
got = grad(params, x)
want = jax.grad(lambda p, x: jnp.sum(jnp.sin(x @ p["params"]["kernel"] + p["params"]["bias"])))(
    params, x)
hlo = grad.lower(params, x).compile().as_text()
calls = [ln.split(" = ")[1].split(" custom-call")[0] for ln in hlo.splitlines()
         if "custom-call(" in ln and "strata_column_sum" in ln]
print(json.dumps({"err": max(float(np.abs(a - b).max())
                             for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
                  "gathers": hlo.count("all-gather("), "calls": calls,
                  "bias_sharding": str(got["params"]["bias"].sharding.spec)}))
'''


def test_sharded_rows_sum_locally_then_add():
  """On a 2 x 2 mesh (rows over one axis, the layer's columns over the other) each device sums
  its own (24, 6) block of the gradient and the partial sums are added: no all-gather, and the
  gradients of an unsharded computation."""
  got = on_four_devices(SHARDED)
  assert got["err"] < 1e-5
  assert got["gathers"] == 0
  assert got["calls"] == ["f32[6]{0}"], got["calls"]


def test_bad_field_value_is_one_line():
  with pytest.raises(ValueError, match=r"^model\.dense_kernel='fast'; expected one of "
                                       r"\['xla', 'cpu'\]$"):
    cpu_dense.dense_layer("fast")


REFUSAL = '''
import jax, jax.numpy as jnp
from arch import cpu_dense, cpu_norm
try:
  {layer}.init(jax.random.key(0), jnp.ones((2, 4)))
except ValueError as e:
  print(e)
'''


def no_compiler_lines(layer: str, tmp_path) -> list[str]:
  """What a process that initialises `layer` (an expression) prints without a C++ compiler."""
  out = subprocess.run([sys.executable, "-c", REFUSAL.format(layer=layer)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu",
                            "CXX": str(tmp_path / "no-compiler"),
                            "STRATA_KERNEL_DIR": str(tmp_path)})
  return out.stdout.strip().splitlines()


def test_no_compiler_refuses_in_one_line(tmp_path):
  assert no_compiler_lines("cpu_dense.CpuDense(3)", tmp_path) == [
      f"model.dense_kernel='cpu': no C++ compiler '{tmp_path / 'no-compiler'}' (set $CXX) to "
      "build the CPU kernels in arch/kernels; expected a machine that builds it, or "
      "model.dense_kernel='xla'"]


@pytest.mark.slow
def test_scanned_and_rematerialised_lm_with_every_kernel():
  """`scan_layers` and `remat` around all three CPU kernels (attention, dense, norms): the loss
  and gradients of XLA's ops."""
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 50)
  got = {}
  for kernel in ("xla", "cpu"):
    lm = TransformerLM(vocab_size=50, width=32, depth=2, num_heads=4, mlp_dim=64, max_len=16,
                       scan_layers=True, remat=True, attention_kernel=kernel,
                       dense_kernel=kernel, norm_kernel=kernel)
    params = lm.init(jax.random.key(0), tokens)
    step = jax.jit(jax.value_and_grad(lambda p, lm=lm: jnp.mean(lm.apply(p, tokens) ** 2)))
    got[kernel] = step(params)
    text = step.lower(params).as_text()
    calls = [text.count(f"strata_{k}") for k in ("attention", "column_sum", "layer_norm")]
    assert all(calls) if kernel == "cpu" else not any(calls), calls
  np.testing.assert_allclose(got["cpu"][0], got["xla"][0], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               got["cpu"][1], got["xla"][1])
