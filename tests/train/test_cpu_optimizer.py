"""`optim.kernel="cpu"` (train/cpu_optimizer.py): the whole Adam/AdamW update, the average and
the norms as one compiled call, against optax's own chain (the library it replaces) and
`optax.global_norm`; its state is optax's; its refusals are one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arch import cpu_kernels
from train import config as config_lib
from train import cpu_optimizer, optim
from train.errors import ConfigError

try:
  cpu_kernels.ensure()
except cpu_kernels.KernelUnavailable as e:  # pragma: no cover - a machine without a compiler
  pytest.skip(f"the CPU kernels cannot be built here: {e}", allow_module_level=True)


def _optim(**fields):
  o = config_lib.base().optim
  o.update(name="adamw", learning_rate=3e-3, schedule="constant", warmup_steps=3,
           weight_decay=0.05, clip_norm=0.0, kernel="cpu")
  o.update(fields)
  return o


def _params(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {"conv": {"kernel": (3, 3, 5, 7), "bias": (7,)}, "norm": {"scale": (7,)},
            "dense": {"kernel": (300, 70), "bias": (70,)}, "odd": (13,)}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def _steps(o, kernel, steps=4, average=False, scale=0.3):
  """`steps` updates of _params by `o` under `kernel`, on fixed random gradients, in one jit
  each: (params, opt_state, average, norms of the last step)."""
  o = o.copy_and_resolve_references()
  o.kernel = kernel
  tx, lr = optim.make(o, 100)
  params = _params()
  state, avg = tx.init(params), (params if average else None)
  rng = np.random.default_rng(1)
  step = jax.jit(lambda g, s, p, a, w: optim.apply(o, tx, lr, g, s, p, log_norms=True,
                                                   average=a, average_weight=w))
  for i in range(steps):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32),
                         params)
    w = jnp.float32(min(0.9, (1 + i) / (10 + i)))
    params, state, avg, norms = step(grads, state, params, avg, w)
  return params, state, avg, norms


def _close(a, b, rtol=2e-6, atol=1e-7):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=optim.path_name(path))


@pytest.mark.parametrize("fields", [
    dict(),                                        # AdamW, decay on kernels, warmup
    dict(clip_norm=1.0),                           # clipped (the gradients' norm is ~10)
    dict(clip_norm=1e3),                           # clipping set, not triggered
    dict(name="adam", weight_decay=0.01),          # L2 added to the gradient before the moments
    dict(weight_decay=0.0, b1=0.5, b2=0.9, eps=1e-3),
], ids=["adamw", "clipped", "unclipped", "adam_l2", "no_decay"])
def test_matches_optax(fields):
  o = _optim(**fields)
  xla = _steps(o, "xla", average=True)
  cpu = _steps(o, "cpu", average=True)
  _close(cpu[:3], xla[:3])
  assert set(cpu[3]) == set(xla[3]) == {"grad_norm", "update_norm", "param_norm"}
  for k in cpu[3]:
    np.testing.assert_allclose(float(cpu[3][k]), float(xla[3][k]), rtol=1e-5, err_msg=k)


def test_norms_against_float64():
  o = _optim(clip_norm=1.0, warmup_steps=0)
  tx, lr = optim.make(o, 100)
  params = _params()
  grads = jax.tree.map(lambda x: 2.0 * x, _params(3))
  new, _, _, norms = jax.jit(lambda g, s, p: optim.apply(o, tx, lr, g, s, p, log_norms=True))(
      grads, tx.init(params), params)
  f64 = lambda t: np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(t)))
  assert float(norms["grad_norm"]) == pytest.approx(f64(grads), rel=1e-6)
  assert float(norms["param_norm"]) == pytest.approx(f64(new), rel=1e-6)
  change = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                        new, params)
  assert float(norms["update_norm"]) == pytest.approx(f64(change), rel=1e-4)
  assert float(norms["update_norm"]) > 0


def test_state_is_optax_state():
  """The state after the kernel's steps has optax's structure and counts: a checkpoint moves
  between the kernel and optax, and optax continues it as if it had taken those steps."""
  o = _optim(clip_norm=1.0)
  _, state, _, _ = _steps(o, "cpu", steps=3)
  tx, _ = optim.make(o, 100)
  assert jax.tree.structure(state) == jax.tree.structure(tx.init(_params()))
  counts = [int(x) for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
  assert counts == [3, 3]


@pytest.mark.parametrize("field,value,named", [
    ("optim.kernel", "gpu", "optim.kernel='gpu'"),
    ("optim.name", "sgd", "optim.name='sgd'"),
    ("optim.grad_accum_steps", 2, "optim.grad_accum_steps=2"),
    ("optim.freeze", ("conv",), "optim.freeze"),
    ("optim.mu_dtype", "bfloat16", "optim.mu_dtype='bfloat16'"),
    ("init_from.prune", 0.5, "init_from.prune=0.5"),
])
def test_refusals_name_the_field(field, value, named):
  config = config_lib.base()
  config.optim.kernel = "cpu"
  section, key = field.split(".")
  config[section][key] = value
  with pytest.raises(ConfigError) as e:
    cpu_optimizer.check(config)
  message = str(e.value)
  assert named in message and "\n" not in message
  if field != "optim.kernel":
    assert "optim.kernel='xla'" in message


def test_refuses_other_dtypes():
  o = _optim()
  tx, lr = optim.make(o, 10)
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
  with pytest.raises(ConfigError, match="float32"):
    optim.apply(o, tx, lr, params, tx.init(params), params)


def test_one_call_on_cpu_and_optax_elsewhere():
  from arch import common
  o = _optim(clip_norm=1.0)
  tx, lr = optim.make(o, 10)
  params = _params()

  def calls():
    step = jax.jit(lambda g, s, p: optim.apply(o, tx, lr, g, s, p, log_norms=True))
    return step.lower(params, tx.init(params), params).as_text().count("strata_adam_update")
  assert calls() == 1
  with common.compiling_for("tpu"):  # traced for a TPU: optax's ops
    assert calls() == 0


SHARDED = '''
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tests.train.test_cpu_optimizer import _optim, _params
from train import optim
o = _optim(clip_norm=1.0)
tx, lr = optim.make(o, 10)
params = _params()
grads = jax.tree.map(lambda x: 3.0 * x, _params(5))
step = jax.jit(lambda g, s, p: optim.apply(o, tx, lr, g, s, p, log_norms=True))
want = step(grads, tx.init(params), params)
mesh = Mesh(np.array(jax.devices()).reshape(4), ("data",))
errs = {}
for name, spec in (("replicated", lambda x: P()),
                   ("fsdp", lambda x: P("data") if x.ndim and x.shape[0] % 4 == 0 else P())):
  put = lambda t: jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec(x))), t)
  got = step(put(grads), put(tx.init(params)), put(params))
  errs[name] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(got), jax.tree.leaves(want)))
print(json.dumps(errs))
'''


def test_on_four_devices_replicated_and_sharded():
  """Parameters replicated (data parallel) or split along their first dimension (FSDP): the
  single device's update."""
  from tests.arch.test_cpu_attention import on_four_devices
  errs = on_four_devices(SHARDED)
  assert errs["replicated"] < 1e-6 and errs["fsdp"] < 1e-6, errs


REFUSAL = '''
import jax
from train import config as config_lib, optim
from train.errors import ConfigError
o = config_lib.base().optim
o.update(name="adam", kernel="cpu")
tx, lr = optim.make(o, 10)
p = {"w": jax.numpy.ones((3,))}
try:
  optim.apply(o, tx, lr, p, tx.init(p), p)
except ConfigError as e:
  print(e)
'''


def test_no_compiler_refuses_in_one_line(tmp_path):
  import os
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-c", REFUSAL], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__)))),
                       env={**os.environ, "JAX_PLATFORMS": "cpu",
                            "CXX": str(tmp_path / "no-compiler"),
                            "STRATA_KERNEL_DIR": str(tmp_path)})
  assert out.stdout.strip().splitlines() == [
      f"optim.kernel='cpu': no C++ compiler '{tmp_path / 'no-compiler'}' (set $CXX) to build "
      "the CPU kernels in arch/kernels; expected a machine that builds it, or "
      "optim.kernel='xla'"]
