"""Mixup and CutMix against NumPy: each example mixed with its neighbour (within its device's rows
on a mesh), targets by the share."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import ROOT
from train import mixing


def test_mixup_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 4, 4, 3)).astype(np.float32)
  t = np.eye(3)[[0, 1, 2, 0, 1]].astype(np.float32)
  mx, mt = mixing.mixup(jnp.asarray(x), jnp.asarray(t), 0.3)
  partner = x[[4, 0, 1, 2, 3]]  # example i mixes with example i - 1 (rolled by one)
  np.testing.assert_allclose(mx, 0.3 * x + 0.7 * partner, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(mt, 0.3 * t + 0.7 * t[[4, 0, 1, 2, 3]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(mt).sum(1), 1.0, rtol=1e-6)


def test_cutmix_pastes_the_box_and_weighs_targets_by_its_area():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 10, 8, 2)).astype(np.float32)
  t = np.eye(3, dtype=np.float32)
  lam, cy, cx = 0.64, 2, 6  # sides sqrt(0.36) = 0.6: 6 x 4, clipped at the top and the right
  mx, mt = mixing.cutmix(jnp.asarray(x), jnp.asarray(t), lam, cy, cx)
  top, bottom, left, right = 0, 5, 4, 8  # (2 - 3, 2 + 3) and (6 - 2, 6 + 2), clipped
  want = x.copy()
  want[:, top:bottom, left:right] = x[[2, 0, 1], top:bottom, left:right]
  np.testing.assert_array_equal(np.asarray(mx), want)
  kept = 1 - (bottom - top) * (right - left) / 80
  np.testing.assert_allclose(mt, kept * t + (1 - kept) * t[[2, 0, 1]], rtol=1e-6)


def test_mix_is_seeded_and_off_when_both_are_zero():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  t = jnp.eye(2)
  same = mixing.mix(jax.random.key(0), x, t, 0.0, 0.0)
  assert same[0] is x and same[1] is t
  a = mixing.mix(jax.random.key(3), x, t, 0.2, 1.0)
  b = mixing.mix(jax.random.key(3), x, t, 0.2, 1.0)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_allclose(np.asarray(a[1]).sum(1), 1.0, rtol=1e-6)


MESH_SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np
import ml_collections as mlc
from arch import common
from train import mixing, parallel

mesh = parallel.make_mesh(mlc.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
batch = parallel.batch_sharding(mesh)
rng = np.random.default_rng(0)
x = jax.device_put(rng.normal(size=(8, 4, 4, 3)).astype(np.float32), batch)
t = jax.device_put(np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)], batch)
out = {}
for name, split in (("per_device", True), ("global", False)):
  def step(x, t):
    if not split:
      return mixing.mixup(x, t, 0.3)
    with common.batch_sharding(parallel.activation_sharding(mesh)):
      return mixing.mixup(x, t, 0.3)
  compiled = jax.jit(step, in_shardings=(batch, batch), out_shardings=(batch, batch)).lower(
      x, t).compile()
  mx, mt = compiled(x, t)
  out[name] = {"inputs": np.asarray(mx).tolist(), "targets": np.asarray(mt).tolist(),
               "permutes": compiled.as_text().count("collective-permute(")}
out["x"], out["t"] = np.asarray(x).tolist(), np.asarray(t).tolist()
print(json.dumps(out))
'''


def test_mixing_on_a_mesh_pairs_rows_within_each_device_without_communication():
  """On 8 CPU devices (2 data x 2 fsdp x 2 tensor: the 8 rows in 4 parts of 2), each row mixes
  with its neighbour within its part (big_vision's shard_map mixup), against NumPy, and the
  compiled step has no collective-permute; the global roll (outside `batch_sharding`) has."""
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") +
         " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", MESH_SCRIPT], capture_output=True, text=True,
                     cwd=ROOT, env=env, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  x, t = np.asarray(got["x"]), np.asarray(got["t"])
  within = [1, 0, 3, 2, 5, 4, 7, 6]  # parts of 2 rows: each row's partner is the other
  np.testing.assert_allclose(got["per_device"]["inputs"], 0.3 * x + 0.7 * x[within], rtol=1e-6,
                             atol=1e-6)
  np.testing.assert_allclose(got["per_device"]["targets"], 0.3 * t + 0.7 * t[within], rtol=1e-6)
  assert got["per_device"]["permutes"] == 0
  rolled = [7, 0, 1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose(got["global"]["inputs"], 0.3 * x + 0.7 * x[rolled], rtol=1e-6,
                             atol=1e-6)
  assert got["global"]["permutes"] > 0
