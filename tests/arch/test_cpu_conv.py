"""`arch.cpu_conv` (`model.conv_kernel="onednn"`): oneDNN's convolutions against a float64
computation (outputs and both gradients, strides, padding, 1x1, a batch cut into pieces and one
that is not), flax's `nn.Conv` (parameters and outputs), the UNet with either kernel, the cases
left to `arch.conv`, vmap, a mesh, and the one-line refusals."""

import importlib.metadata

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from arch import cpu_conv, cpu_kernels
from tests.arch.test_cpu_attention import on_four_devices
from tests.arch.test_cpu_norm import assert_unet_same

SPEC = ("NHWC", "HWIO", "NHWC")


def _reference64(x, w, strides, pads, dy):
  """float64 (y, dx, dw) of the convolution, by XLA in double precision."""
  with jax.enable_x64(True):
    conv = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, strides, pads, dimension_numbers=SPEC)
    args = (jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64))
    y, vjp = jax.vjp(conv, *args)
    return (np.asarray(y), *map(np.asarray, vjp(jnp.asarray(dy, jnp.float64))))


@pytest.mark.parametrize("x_shape,k,out,strides,pads", [
    ((4, 8, 8, 32), 3, 32, (1, 1), ((1, 1), (1, 1))),   # the UNet's first level
    ((3, 7, 6, 5), 3, 7, (2, 1), ((1, 1), (0, 2))),     # odd batch, strides and padding
    ((2, 4, 4, 20), 1, 9, (1, 1), ((0, 0), (0, 0))),    # a 1x1 shortcut
])
def test_matches_float64(x_shape, k, out, strides, pads):
  rng = np.random.default_rng(sum(x_shape))
  x = rng.normal(size=x_shape).astype(np.float32)
  w = (rng.normal(size=(k, k, x_shape[-1], out)) / k).astype(np.float32)
  cpu_conv.ensure()
  fn = jax.jit(lambda x, w: jax.vjp(lambda x, w: cpu_conv.conv2d(x, w, strides, pads), x, w))
  y, vjp = fn(x, w)
  dy = rng.normal(size=y.shape).astype(np.float32)
  got = (y, *vjp(jnp.asarray(dy)))
  for a, b in zip(got, _reference64(x, w, strides, pads, dy)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=2e-4 * np.abs(b).max(), rtol=1e-4)


def test_same_parameters_and_outputs_as_flax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  theirs = nn.Conv(8, (3, 3), strides=2, padding="SAME")
  ours = cpu_conv.conv_layer("onednn")(8, (3, 3), strides=2, padding="SAME")
  params = theirs.init(jax.random.key(1), x)
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(params)
  np.testing.assert_allclose(jax.jit(ours.apply)(params, x), theirs.apply(params, x),
                             atol=1e-5, rtol=1e-5)
  assert cpu_conv.conv_layer("xla") is not cpu_conv.OneDnnConv


def test_cases_left_to_xla():
  """bfloat16, kernel dilation, feature groups and 1-D convolutions make no oneDNN call."""
  def calls(fn, *args):
    return str(jax.make_jaxpr(fn)(*args)).count("strata_conv")
  x, w = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 4))
  conv = lambda **kw: lambda x, w: cpu_conv.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), "SAME", dimension_numbers=SPEC, **kw)
  assert calls(conv(), x, w) == 1
  assert calls(conv(), x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) == 0
  assert calls(conv(rhs_dilation=(2, 2)), x, w) == 0
  assert calls(conv(feature_group_count=2), x, w[:, :, :2]) == 0
  assert calls(lambda x, w: cpu_conv.conv_general_dilated(
      x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")), x[:, 0], w[0]) == 0


@pytest.mark.slow  # 8 s
def test_unet_same_with_either_kernel():
  assert_unet_same(dict(conv_kernel="xla"), dict(conv_kernel="onednn"))


@pytest.mark.slow  # 5 s
def test_per_example_gradients_under_vmap():
  x = jax.random.normal(jax.random.key(2), (3, 2, 5, 5, 4))
  layer = nn.Conv(6, (3, 3), padding="SAME")
  params = layer.init(jax.random.key(0), x[0])

  def per_example(layer):
    return jax.vmap(jax.grad(lambda p, xi: jnp.sum(jnp.sin(layer.apply(p, xi)))), (None, 0))(
        params, x)
  ours = cpu_conv.OneDnnConv(6, (3, 3), padding="SAME")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               per_example(ours), per_example(layer))


SHARDED = '''
import json
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from arch import cpu_conv, cpu_kernels
mesh = Mesh(np.array(jax.devices()).reshape(4), ("data",))
x = jax.random.normal(jax.random.key(0), (8, 6, 6, 4))
params = nn.Conv(8, (3, 3)).init(jax.random.key(1), x)
def grads(layer):
  return jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x))), argnums=(0, 1)),
                 in_shardings=(None, NamedSharding(mesh, P("data"))))
step = grads(cpu_conv.OneDnnConv(8, (3, 3)))
got, want = step(params, x), grads(nn.Conv(8, (3, 3)))(params, x)
hlo = step.lower(params, x).compile().as_text()
print(json.dumps({
    "err": max(float((np.abs(a - b) / (1 + np.abs(b))).max())
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
    "gathers": hlo.count("all-gather("),
    "calls": [ln.split(" = ")[1].split(" custom-call")[0] for ln in hlo.splitlines()
              if "custom-call(" in ln and "strata_conv" in ln]}))
'''


@pytest.mark.slow  # 9 s
def test_sharded_by_batch_without_gathering():
  """Batch over 4 devices: each convolves its own 2 examples, the kernel gradient is added over
  the devices, no all-gather; flax's gradients (to 1e-5 relative)."""
  got = on_four_devices(SHARDED)
  assert got["err"] < 1e-5
  assert got["gathers"] == 0
  assert len(got["calls"]) == 3 and sum("f32[2,6,6," in c for c in got["calls"]) == 2


def test_bad_field_value_is_one_line():
  with pytest.raises(ValueError, match=r"^model\.conv_kernel='fast'; expected one of "
                                       r"\['xla', 'onednn'\]$"):
    cpu_conv.conv_layer("fast")


def test_without_onednn_refuses_in_one_line(monkeypatch):
  def missing(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(cpu_conv, "ensure", cpu_kernels.registered_once(cpu_conv._register))
  monkeypatch.setattr(cpu_conv.importlib.metadata, "distribution", missing)
  with pytest.raises(ValueError) as e:
    cpu_conv.OneDnnConv(2, (3, 3)).init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
  assert str(e.value) == (
      "model.conv_kernel='onednn': oneDNN is not installed (onednn-cpu-gomp missing; pip install "
      "onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0); expected a machine that "
      "builds it, or model.conv_kernel='xla'")
