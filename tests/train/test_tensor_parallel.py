"""Sharding rules and the tensor-parallel axis (train/parallel.py): on 8 CPU devices laid out as
2 data x 2 fsdp x 2 tensor, the decoder LM and the ViT give the loss and gradients of one device
(float32: the loss to 2e-5 relative, each gradient to 2e-5 of the largest; only the order of
the sums differs), with their attention and MLP kernels and their output layers (the LM's
logits with them) split over "tensor", and with sequence parallelism as well; rules that cannot
apply are one line naming the rule and the array."""

import json
import os
import subprocess
import sys

import jax
import ml_collections as mlc
import numpy as np
import pytest

from tests.conftest import ROOT
from train import parallel
from train.errors import ConfigError

SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np
import ml_collections as mlc
import optax
from arch import common
from arch.transformer import TransformerClassifier, TransformerLM
from train import parallel

mesh = parallel.make_mesh(mlc.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
rules = parallel.rules_of(mesh_config=mlc.ConfigDict(dict(tensor=2)), sharding_config={})
rng = np.random.default_rng(0)
cases = {
    "lm": (TransformerLM(vocab_size=32, width=16, depth=1, num_heads=4, mlp_dim=32, max_len=12),
           jnp.asarray(rng.integers(0, 32, (8, 12))), jnp.asarray(rng.integers(0, 32, (8, 12)))),
    "vit": (TransformerClassifier(num_classes=5, width=16, depth=1, num_heads=4, mlp_dim=32,
                                  max_len=16, patch_size=4),
            jnp.asarray(rng.normal(size=(8, 8, 8, 3)), jnp.float32),
            jnp.asarray(rng.integers(0, 5, (8,)))),
}
out = {}
for name, (model, x, y) in cases.items():
  params = jax.jit(model.init)(jax.random.key(0), x)["params"]

  def loss(p, x, y):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  one = jax.jit(jax.value_and_grad(loss))(params, x, y)
  shard = parallel.state_shardings(mesh, params, rules)
  batch = parallel.batch_sharding(mesh)
  step = jax.jit(jax.value_and_grad(loss), in_shardings=(shard, batch, batch),
                 out_shardings=(parallel.replicated(mesh), shard))
  many = step(jax.device_put(params, shard), x, y)

  # the same step with the activations' rows held to the batch's split, as train.run traces it
  def split_step(p, x, y):
    with common.batch_sharding(parallel.activation_sharding(mesh)):
      return jax.value_and_grad(loss)(p, x, y)
  split = jax.jit(split_step, in_shardings=(shard, batch, batch),
                  out_shardings=(parallel.replicated(mesh), shard))
  lowered = [ln for ln in split.lower(params, x, y).as_text().splitlines()
             if "sdy.sharding_constraint" in ln]
  constraints = len(lowered)
  # the LM's logits (8, 12, 32): rows over data and fsdp, the vocabulary over tensor
  vocab_split = sum('{"data", "fsdp"}, {}, {"tensor"}' in ln for ln in lowered)
  split_loss = float(split(jax.device_put(params, shard), x, y)[0])
  flat_one = jax.tree.leaves(one[1])
  flat_many = jax.tree.leaves(many[1])

  # sequence parallelism: between the tensor-parallel layers the activations' T is split over
  # "tensor" as well (arch.common.constrain_sequence)
  def sp_step(p, x, y):
    with common.batch_sharding(parallel.activation_sharding(mesh, sequence_parallel=True)):
      return jax.value_and_grad(loss)(p, x, y)
  sp = jax.jit(sp_step, in_shardings=(shard, batch, batch),
               out_shardings=(parallel.replicated(mesh), shard))
  sp_lowered = [ln for ln in sp.lower(params, x, y).as_text().splitlines()
                if "sdy.sharding_constraint" in ln]
  sp_out = sp(jax.device_put(params, shard), x, y)
  specs = {parallel.path_name(p): str(s.spec) for p, s in
           jax.tree_util.tree_flatten_with_path(shard)[0]}
  out[name] = {
      "loss": [float(one[0]), float(many[0])],
      # against the largest gradient: the key biases' gradients are zero but for rounding
      "grad_err": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                      for a, b in zip(flat_one, flat_many)) /
                  max(float(np.max(np.abs(np.asarray(a)))) for a in flat_one),
      "specs": specs,
      "split_loss": split_loss,
      "constraints": constraints,
      "vocab_split": vocab_split,
      "sp_loss": float(sp_out[0]),
      "sp_grad_err": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                         for a, b in zip(flat_one, jax.tree.leaves(sp_out[1]))) /
                     max(float(np.max(np.abs(np.asarray(a)))) for a in flat_one),
      "sequence_split": sum('{"data", "fsdp"}, {"tensor"}, {}' in ln for ln in sp_lowered),
  }
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def eight_devices():
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") +
         " --xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT,
                     env=env, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["lm", "vit"])
def test_2x2x2_mesh_gives_one_devices_loss_and_gradients(eight_devices, model):
  got = eight_devices[model]
  one, many = got["loss"]
  assert many == pytest.approx(one, rel=2e-5)
  assert got["grad_err"] < 2e-5
  specs = got["specs"]
  block = "decoder/block0" if model == "lm" else "encoder/block0"
  assert specs[f"{block}/attn/query/kernel"] == "P('fsdp', 'tensor', None)"
  assert specs[f"{block}/attn/out/kernel"] == "P('tensor', None, 'fsdp')"
  assert specs[f"{block}/mlp_in/kernel"] == "P('fsdp', 'tensor')"
  assert specs[f"{block}/mlp_out/kernel"] == "P('tensor', 'fsdp')"
  # activations held to the batch's split (arch.common.constrain_batch): the embedding's output,
  # each block's input and output (and the LM's logits), the same loss
  assert got["constraints"] >= 3
  assert got["split_loss"] == pytest.approx(one, rel=2e-5)
  # the output layer by column over "tensor" (parallel.VOCAB_RULE); the LM's logits likewise
  # (the ViT's 5 classes do not divide by 2: its head keeps the default layout, replicated)
  assert specs["head/kernel"] == ("P('fsdp', 'tensor')" if model == "lm" else "P()")
  assert (got["vocab_split"] > 0) == (model == "lm")  # (forward and backward)
  # sequence parallelism: the same loss and gradients; the LM's 12 tokens split over "tensor"
  # between its tensor-parallel layers, the ViT's 17 (16 patches and the class token) do not
  # divide by 2 and stay whole
  assert got["sp_loss"] == pytest.approx(one, rel=2e-5)
  assert got["sp_grad_err"] < 2e-5
  assert (got["sequence_split"] > 0) == (model == "lm")



def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), parallel.AXES)


def test_the_rules_fit_a_scanned_models_stacked_blocks():
  two = type("Mesh", (), {"shape": {"data": 1, "fsdp": 2, "tensor": 2}})()  # only its sizes
  spec = parallel._check_rule(0, parallel.TENSOR_RULES[0],
                              "params/decoder/blocks/block/attn/query/kernel", (3, 16, 4, 8), two)
  assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


def test_a_config_rule_comes_first_and_the_default_is_fsdp():
  state = {"params": {"a": {"kernel": jax.ShapeDtypeStruct((64, 128), np.float32)},
                      "b": {"kernel": jax.ShapeDtypeStruct((64, 128), np.float32)}}}
  shard = parallel.state_shardings(_mesh(), state, ((r"a/kernel$", (None, "tensor")),))
  assert shard["params"]["a"]["kernel"].spec == jax.sharding.PartitionSpec(None, "tensor")
  assert shard["params"]["b"]["kernel"].spec == jax.sharding.PartitionSpec()  # fsdp=1


@pytest.mark.parametrize("rule,match", [
    ((r"kernel$", ("model", None)), r"no mesh axis 'model'; expected one of \['data', 'fsdp', "
                                    r"'tensor'\] or None"),
    ((r"kernel$", (None, None, None)), "3 entries for 2 dimensions"),
])
def test_a_rule_that_cannot_apply_is_one_line_naming_it(rule, match):
  state = {"params": {"kernel": jax.ShapeDtypeStruct((6, 5), np.float32)}}
  with pytest.raises(ConfigError, match=match) as e:
    parallel.state_shardings(_mesh(), state, (rule,))
  assert "params/kernel (6, 5)" in str(e.value) and "\n" not in str(e.value)


def test_an_axis_that_does_not_divide_its_dimension_is_refused():
  two = type("Mesh", (), {"shape": {"data": 1, "fsdp": 1, "tensor": 2}})()  # only its sizes
  with pytest.raises(ConfigError, match=r"dimension 1 of size 5 is not divisible by tensor=2"):
    parallel._check_rule(0, (r"kernel$", (None, "tensor")), "params/kernel", (6, 5), two)


def test_rules_from_the_config_are_validated():
  from train import config as config_lib

  c = config_lib.base()
  with c.unlocked():
    c.sharding.rules = (("mlp_in/kernel$",),)
  with pytest.raises(ConfigError, match=r"sharding.rules\[0\]=.*expected \(regex, spec\)"):
    config_lib.validate(c)
  assert parallel.rules_of(mlc.ConfigDict(dict(tensor=2)), mlc.ConfigDict(dict(rules=())))[0] \
      == parallel.TENSOR_RULES[0]


def test_sequence_parallelism_needs_a_tensor_axis():
  from train import config as config_lib

  c = config_lib.base()
  with c.unlocked():
    c.sharding.sequence_parallel = True
  with pytest.raises(ConfigError, match=r"sharding.sequence_parallel=True with mesh.tensor=1; "
                                        r"expected mesh.tensor > 1") as e:
    config_lib.validate(c)
  assert "\n" not in str(e.value)
  c.mesh.tensor = 2
  config_lib.validate(c)
