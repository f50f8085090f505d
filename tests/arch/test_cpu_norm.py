"""`arch.cpu_norm` (`model.norm_kernel="cpu"`): the compiled GroupNorm and LayerNorm against a
float64 NumPy computation and against flax's `nn.GroupNorm` and `nn.LayerNorm` (parameters,
outputs, gradients), the UNet and the LM with either kernel, the calls left to XLA, a mesh, vmap,
and the one-line refusal."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import common, cpu_norm
from tests.arch.test_cpu_attention import on_four_devices
from tests.arch.test_cpu_dense import no_compiler_lines


def _reference64(x, scale, bias, groups, eps, dy):
  """float64 (y, dx, dscale, dbias) of GroupNorm with output cotangent dy (closed form)."""
  x, scale, bias, dy = (np.asarray(a, np.float64) for a in (x, scale, bias, dy))
  b, c = x.shape[0], x.shape[-1]
  xg = x.reshape(b, -1, groups, c // groups)
  mean = xg.mean((1, 3), keepdims=True)
  rstd = 1 / np.sqrt(((xg - mean) ** 2).mean((1, 3), keepdims=True) + eps)
  xhat = ((xg - mean) * rstd).reshape(x.shape)
  dxhat = (dy * scale).reshape(xg.shape)
  xh = xhat.reshape(xg.shape)
  dx = rstd * (dxhat - dxhat.mean((1, 3), keepdims=True)
               - xh * (dxhat * xh).mean((1, 3), keepdims=True))
  axes = tuple(range(x.ndim - 1))
  return (xhat * scale + bias, dx.reshape(x.shape), (dy * xhat).sum(axes), dy.sum(axes))


@pytest.mark.parametrize("shape,groups", [((3, 8, 8, 32), 8), ((2, 5, 12), 3),
                                          ((4, 4, 4, 96), 32), ((2, 7, 7, 20), 4),
                                          ((1, 3, 3, 17), 1)])
def test_kernel_matches_float64_and_flax(shape, groups):
  """Channels on and off the vector width, one group and one channel a group; an offset input
  (the two-pass statistics)."""
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=shape) * 2 + 3, jnp.float32)
  dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ours, flax_norm = cpu_norm.CpuGroupNorm(groups), nn.GroupNorm(groups)
  params = flax_norm.init(jax.random.key(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(ours.init(jax.random.key(0), x))
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                        params)
  p = params["params"]
  _check(ours, flax_norm, params, x, dy, _reference64(x, p["scale"], p["bias"], groups, 1e-6, dy),
         "strata_group_norm")


def _check(ours, flax_norm, params, x, dy, want, target):
  """`ours` and flax's norm give `want` (y, dx, dscale, dbias), and `ours` calls `target` twice."""
  def run(layer):
    y, vjp = jax.vjp(layer.apply, params, x)
    grads, dx = vjp(dy)
    return y, dx, grads["params"]["scale"], grads["params"]["bias"]
  got, flax_got = jax.jit(lambda: run(ours))(), jax.jit(lambda: run(flax_norm))()
  for a, b, f in zip(got, want, flax_got):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(a, f, atol=2e-5, rtol=1e-5)
  assert jax.jit(lambda: run(ours)).lower().as_text().count(target) == 2


@pytest.mark.parametrize("shape", [(4, 16, 96), (3, 7), (2, 5, 17), (300, 40)])
def test_layer_norm_matches_float64_and_flax(shape):
  """Rows in one block of 128 and across blocks; widths on and off the vector width. A
  LayerNorm is a GroupNorm of each row in one group: the same float64 reference."""
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.normal(size=shape) * 2 + 3, jnp.float32)
  dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ours, flax_norm = cpu_norm.CpuLayerNorm(), nn.LayerNorm()
  params = flax_norm.init(jax.random.key(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(ours.init(jax.random.key(0), x))
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                        params)
  p = params["params"]
  rows = x.reshape(-1, 1, shape[-1])
  y, dx, dscale, dbias = _reference64(rows, p["scale"], p["bias"], 1, 1e-6,
                                      dy.reshape(rows.shape))
  _check(ours, flax_norm, params, x, dy, (y.reshape(shape), dx.reshape(shape), dscale, dbias),
         "strata_layer_norm")


def test_lm_same_with_either_kernel():
  """A one-block LM's 3 LayerNorms (2 a block, the final one) by the kernel: flax's loss and
  gradients; RMSNorm has no kernel (flax's)."""
  from arch.transformer import TransformerLM
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 50)
  got = {}
  for kernel in ("xla", "cpu"):
    lm = TransformerLM(vocab_size=50, width=32, depth=1, num_heads=4, mlp_dim=64, max_len=16,
                       norm_kernel=kernel)
    params = lm.init(jax.random.key(0), tokens)
    loss = jax.jit(jax.value_and_grad(lambda p, lm=lm: jnp.mean(lm.apply(p, tokens) ** 2)))
    got[kernel] = (params, *loss(params), loss.lower(params).as_text().count("strata_layer_norm"))
  jax.tree.map(np.testing.assert_array_equal, got["xla"][0], got["cpu"][0])
  np.testing.assert_allclose(got["cpu"][1], got["xla"][1], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               got["cpu"][2], got["xla"][2])
  assert got["xla"][3] == 0 and got["cpu"][3] == 2 * 3
  rms = TransformerLM(vocab_size=50, width=32, depth=1, num_heads=4, mlp_dim=64, max_len=16,
                      norm="rms", norm_kernel="cpu")
  params = rms.init(jax.random.key(0), tokens)
  assert "strata_layer_norm" not in jax.jit(rms.apply).lower(params, tokens).as_text()


def test_uncovered_calls_take_xla():
  x = jnp.ones((2, 4, 4, 8))
  params = cpu_norm.CpuGroupNorm(4).init(jax.random.key(0), x)

  def calls(layer):
    return jax.jit(jax.grad(lambda p: layer.apply(p, x).sum())).lower(params).as_text().count(
        "strata_")
  for layer in (cpu_norm.CpuGroupNorm, cpu_norm.CpuLayerNorm):
    args = (4,) if layer is cpu_norm.CpuGroupNorm else ()
    assert calls(layer(*args)) == 2
    assert calls(layer(*args, dtype=jnp.bfloat16)) == 0
    with common.compiling_for("tpu"):  # traced for a TPU: flax's computation
      assert calls(layer(*args)) == 0


def assert_unet_same(xla: dict, kernels: dict, **unet) -> None:
  """A small UNet's loss and parameter gradients with the fields `kernels` (the compiled CPU
  kernels) equal those with `xla`, the other fields `unet` on both."""
  from arch.unet import UNet
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  t = jnp.array([3, 700])
  nets = [UNet(data_shape=(8, 8, 1), channels=8, groups=4, num_res_blocks=1,
               attention_levels=(), **unet, **fields) for fields in (xla, kernels)]
  params = nets[0].init(jax.random.key(1), x, t)
  params = jax.tree.map(lambda p: p + 0.05, params)  # zero-initialised layers made to count

  def loss(net):
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(net.apply(p, x, t) ** 2)))(params)
  (l0, g0), (l1, g1) = loss(nets[0]), loss(nets[1])
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), g1, g0)


@pytest.mark.slow  # 7 s; no experiment's UNet sets the fields (docs/cpu_layers.md)
def test_unet_same_with_either_kernel():
  assert_unet_same(dict(norm_kernel="xla", dense_kernel="xla"),
                   dict(norm_kernel="cpu", dense_kernel="cpu"), channel_mults=(1,))


def test_per_example_gradients_under_vmap():
  """vmap of the gradient: the parameter gradients stay per example (one call per index); both
  norms have parameters of the same (C,) shape."""
  x = jax.random.normal(jax.random.key(2), (3, 2, 4, 4, 8))
  params = nn.GroupNorm(4).init(jax.random.key(0), x[0])

  def per_example(layer):
    return jax.vmap(jax.grad(lambda p, xi: jnp.sum(jnp.sin(layer.apply(p, xi)))), (None, 0))(
        params, x)
  for ours, flax_norm in ((cpu_norm.CpuGroupNorm(4), nn.GroupNorm(4)),
                          (cpu_norm.CpuLayerNorm(), nn.LayerNorm())):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
                 per_example(ours), per_example(flax_norm))


SHARDED = '''
import json
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from arch import cpu_norm
mesh = Mesh(np.array(jax.devices()).reshape(4), ("data",))
x = jax.random.normal(jax.random.key(0), (8, 4, 4, 16))
params = nn.GroupNorm(4).init(jax.random.key(1), x)
def grads(layer):
  return jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x))), argnums=(0, 1)),
                 in_shardings=(None, NamedSharding(mesh, P("data"))))
out = {}
for name, ours, theirs in (("group", cpu_norm.CpuGroupNorm(4), nn.GroupNorm(4)),
                           ("layer", cpu_norm.CpuLayerNorm(), nn.LayerNorm())):
  step = grads(ours)
  got, want = step(params, x), grads(theirs)(params, x)
  hlo = step.lower(params, x).compile().as_text()
  out[name] = {
      "err": max(float((np.abs(a - b) / (1 + np.abs(b))).max())
                 for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
      "gathers": hlo.count("all-gather("),
      "calls": [ln.split(" = ")[1].split(" custom-call")[0] for ln in hlo.splitlines()
                if "custom-call(" in ln and "strata_" in ln]}
print(json.dumps(out))
'''


def test_sharded_by_batch_without_gathering():
  """Batch over 4 devices: each normalises its own 2 examples (a LayerNorm its 2 x 16 rows), the
  scale and bias gradients are added over the devices, no all-gather; flax's gradients (to 1e-5
  relative)."""
  got = on_four_devices(SHARDED)
  for name, shape in (("group", "(f32[2,16,16]"), ("layer", "(f32[32,16]")):
    assert got[name]["err"] < 1e-5
    assert got[name]["gathers"] == 0
    calls = got[name]["calls"]
    assert len(calls) == 2 and all(c.startswith(shape) for c in calls), calls


def test_bad_field_value_is_one_line():
  with pytest.raises(ValueError, match=r"^model\.norm_kernel='fast'; expected one of "
                                       r"\['xla', 'cpu'\]$"):
    cpu_norm.group_norm_layer("fast")


def test_no_compiler_refuses_in_one_line(tmp_path):
  assert no_compiler_lines("cpu_norm.CpuGroupNorm(2)", tmp_path) == [
      f"model.norm_kernel='cpu': no C++ compiler '{tmp_path / 'no-compiler'}' (set $CXX) to "
      "build the CPU kernels in arch/kernels; expected a machine that builds it, or "
      "model.norm_kernel='xla'"]
