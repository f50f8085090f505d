"""`arch.cpu_attention`, the compiled CPU attention kernel (`model.attention_kernel="cpu"`): its
outputs and gradients against a float64 NumPy computation, in a model against XLA's ops, the calls
it leaves to XLA, and the one-line refusal where it cannot be built."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import attention, common, cpu_attention, cpu_kernels
from arch.transformer import TransformerLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference(q, k, v, g, causal):
  """float64 (output, dq, dk, dv) of softmax(QK^T / sqrt(H)) V with output cotangent g, from the
  closed-form gradients of the softmax."""
  q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, g))
  h = q.shape[-1]
  s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(h)
  if causal:
    s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  out = np.einsum("bnts,bsnh->btnh", p, v)
  dp = np.einsum("btnh,bsnh->bnts", g, v)
  ds = p * (dp - np.einsum("btnh,btnh->bnt", g, out)[..., None]) / np.sqrt(h)
  return (out, np.einsum("bnts,bsnh->btnh", ds, k), np.einsum("bnts,btnh->bsnh", ds, q),
          np.einsum("bnts,btnh->bsnh", p, g))


@pytest.mark.parametrize("b,t,s,n,h,causal", [
    (2, 13, 13, 3, 5, True),     # a head width and a length off the vector width and row block
    (2, 13, 16, 3, 5, False),    # more keys than queries
    (3, 7, 7, 2, 24, False),
    (4, 128, 128, 4, 24, True),  # the character LM's layer
    (1, 40, 40, 1, 64, True),
])
def test_kernel_matches_float64(b, t, s, n, h, causal):
  cpu_attention.ensure()
  rng = np.random.default_rng(t * h)
  q, g = (rng.normal(size=(b, t, n, h)).astype(np.float32) for _ in range(2))
  k, v = (rng.normal(size=(b, s, n, h)).astype(np.float32) for _ in range(2))
  out, vjp = jax.vjp(lambda q, k, v: cpu_attention.attention(q, k, v, causal), q, k, v)
  got = (out, *vjp(g))
  for name, x, want in zip(("out", "dq", "dk", "dv"), got, _reference(q, k, v, g, causal)):
    np.testing.assert_allclose(np.asarray(x), want, atol=1e-5, rtol=1e-5, err_msg=name)


def _lm(kernel: str) -> TransformerLM:
  return TransformerLM(vocab_size=40, width=32, depth=2, num_heads=4, mlp_dim=64, max_len=24,
                       attention_kernel=kernel)


def test_language_model_same_with_either_kernel():
  x = jax.random.randint(jax.random.key(0), (3, 24), 0, 40)
  params = _lm("xla").init(jax.random.key(1), x)

  def loss(p, kernel):
    return jnp.mean(jax.nn.log_softmax(_lm(kernel).apply(p, x))[..., 0])

  results = {k: jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, k)
             for k in ("xla", "cpu")}
  hlo = jax.jit(lambda p: _lm("cpu").apply(p, x)).lower(params).as_text()
  assert hlo.count("strata_attention_forward") == 2  # one custom call a block
  np.testing.assert_allclose(results["cpu"][0], results["xla"][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results["cpu"][1]), jax.tree.leaves(results["xla"][1])):
    np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-4)


def _custom_calls(fn, *args) -> int:
  return jax.jit(fn).lower(*args).as_text().count("strata_attention")


def test_calls_the_kernel_does_not_cover_take_xla():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 8, 2, 8)), jnp.float32) for _ in range(3))
  mask = jnp.asarray(rng.random((2, 2, 8, 8)) > 0.3)

  def call(**kw):
    return lambda q, k, v: attention.dot_product_attention(q, k, v, kernel="cpu", **kw)

  assert _custom_calls(call(is_causal=True), q, k, v) == 1
  assert _custom_calls(call(mask=mask), q, k, v) == 0
  np.testing.assert_allclose(jax.jit(call(mask=mask))(q, k, v),
                             attention.dot_product_attention(q, k, v, mask=mask), atol=1e-6)
  half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  assert _custom_calls(call(is_causal=True), *half) == 0
  with common.compiling_for("tpu"):  # traced for a TPU: jax's attention, whatever the field
    assert "strata_attention" not in str(jax.make_jaxpr(call(is_causal=True))(q, k, v))


def test_bad_field_value_is_one_line():
  q = jnp.zeros((1, 4, 1, 8))
  with pytest.raises(ValueError, match=r"^model\.attention_kernel='fast'; expected one of "
                                       r"\['xla', 'cpu'\]$"):
    attention.dot_product_attention(q, q, q, kernel="fast")


REFUSAL = '''
import jax.numpy as jnp
from arch import attention
q = jnp.zeros((1, 4, 1, 8))
try:
  attention.dot_product_attention(q, q, q, is_causal=True, kernel="cpu")
except ValueError as e:
  print(e)
'''


def _refusal(**env: str) -> list[str]:
  """What a process that asks for the kernel prints, with `env` set (the outcome of building it
  is per process)."""
  out = subprocess.run([sys.executable, "-c", REFUSAL], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "JAX_PLATFORMS": "cpu", **env}, timeout=120)
  return out.stdout.strip().splitlines()


def test_no_compiler_refuses_in_one_line(tmp_path):
  """Without a compiler (and no library built), a model asking for the kernel stops with one
  line naming the field and the alternative, in its own process (the outcome is per process)."""
  lines = _refusal(CXX=str(tmp_path / "no-compiler"), STRATA_KERNEL_DIR=str(tmp_path))
  assert lines == [
      f"model.attention_kernel='cpu': no C++ compiler '{tmp_path / 'no-compiler'}' (set $CXX) "
      "to build the CPU kernels in arch/kernels; expected a machine that builds it, or "
      "model.attention_kernel='xla'"]
  assert not list(tmp_path.glob("*.so"))


def test_library_is_named_by_its_inputs(tmp_path, monkeypatch):
  """The built library's name changes with the compiler (and the source, flags, jaxlib and CPU
  it hashes), so a stale build is never loaded; $STRATA_KERNEL_DIR moves it."""
  monkeypatch.setenv("STRATA_KERNEL_DIR", str(tmp_path))
  a, b = cpu_kernels.library_path("c++"), cpu_kernels.library_path("clang++")
  assert a.parent == b.parent == tmp_path and a != b


SHARDED = '''
import json
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from arch import attention
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "tensor"))
rng = np.random.default_rng(0)
q, k, v, g = (rng.normal(size=(4, 16, 4, 8)).astype(np.float32) for _ in range(4))
spec = NamedSharding(mesh, P("data", None, "tensor", None))
out = {}
for kernel in ("xla", "cpu"):
  def f(q, k, v):
    y, vjp = jax.vjp(lambda *a: attention.dot_product_attention(*a, is_causal=True,
                                                                kernel=kernel), q, k, v)
    return (y, *vjp(g))
  step = jax.jit(f, in_shardings=(spec,) * 3, out_shardings=spec)
  out[kernel] = [np.asarray(x) for x in step(q, k, v)]
  hlo = step.lower(q, k, v).compile().as_text()
shapes = [ln.split(" = ")[1].split(" custom-call")[0] for ln in hlo.splitlines()
          if "custom-call(" in ln and "strata_attention" in ln]
print(json.dumps({"err": max(float(np.abs(a - b).max()) for a, b in zip(out["cpu"], out["xla"])),
                  "gathers": hlo.count("all-gather("), "calls": shapes}))
'''


def on_four_devices(script: str) -> dict:
  """The JSON that `script` prints last, run in its own process on 4 CPU devices."""
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") +
         " --xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                     env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def test_sharded_by_batch_and_heads_without_gathering():
  """On a 2 x 2 mesh (batch over one axis, heads over the other) each device runs the kernel on
  its own quarter, (2, 16, 2, 8), with no all-gather, and gets XLA's attention and gradients."""
  got = on_four_devices(SHARDED)
  assert got["err"] < 1e-5
  assert got["gathers"] == 0
  assert len(got["calls"]) == 2 and all("f32[2,16,2,8]" in c for c in got["calls"])


def test_unet_same_with_either_kernel():
  from arch.unet import UNet
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  t = jnp.array([3, 700])
  nets = {k: UNet(data_shape=(8, 8, 1), channels=8, groups=4, num_res_blocks=1,
                  attention_kernel=k) for k in ("xla", "cpu")}
  params = nets["xla"].init(jax.random.key(1), x, t)
  # the attention's output layer starts at zero: perturb it so that the attention counts
  params = jax.tree.map(lambda p: p + 0.05, params)
  outs = {k: jax.jit(n.apply)(params, x, t) for k, n in nets.items()}
  assert _custom_calls(nets["cpu"].apply, params, x, t) > 0
  np.testing.assert_allclose(outs["cpu"], outs["xla"], atol=1e-5, rtol=1e-5)


def test_under_vmap_and_its_gradients():
  """jax.vmap folds the mapped axis into the kernel's batch (an unmapped operand broadcast), and
  so does vmap of a gradient and the gradient of a vmap."""
  q = jax.random.normal(jax.random.key(0), (3, 2, 8, 2, 8))
  k = jax.random.normal(jax.random.key(1), (2, 8, 2, 8))

  def f(kernel):
    return lambda q, k: attention.dot_product_attention(q, k, k, is_causal=True, kernel=kernel)

  def grad_of_vmap(kernel):
    return jax.grad(lambda q: jax.vmap(f(kernel), (0, None))(q, k).sum())(q)

  def vmap_of_grad(kernel):
    return jax.vmap(jax.grad(lambda q: f(kernel)(q, k).sum()))(q)

  for fn in (lambda kern: jax.vmap(f(kern), (0, None))(q, k), grad_of_vmap, vmap_of_grad):
    np.testing.assert_allclose(fn("cpu"), fn("xla"), atol=1e-5, rtol=1e-5)


def test_unwritable_build_folder_refuses_in_one_line(tmp_path):
  blocked = tmp_path / "file"
  blocked.write_text("not a folder")
  lines = _refusal(STRATA_KERNEL_DIR=str(blocked / "sub"))
  assert len(lines) == 1 and lines[0].startswith(
      f"model.attention_kernel='cpu': cannot write the kernels into {blocked / 'sub'} (")
  assert "set $STRATA_KERNEL_DIR to a writable folder" in lines[0]
