"""train/hlo.py: array sizes in TPU layouts, replica groups in each form XLA prints, loop trip
counts, and the bytes a compiled step's collectives send, against a count by hand."""

import importlib.util

import pytest

from train import hlo

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu (pip install -e '.[tpu]')")


def test_shape_bytes_reads_arrays_and_tuples_with_tpu_layouts():
  assert hlo.shape_bytes("bf16[256,56,56,64]{3,0,2,1:T(8,128)(2,1)}") == 2 * 256 * 56 * 56 * 64
  assert hlo.shape_bytes("(f32[10]{0}, s32[], pred[3,4])") == 40 + 4 + 12
  assert hlo.shape_bytes("f32[16,512]{1,0:T(8,128)S(1)}") == 0  # on chip, not in HBM


@pytest.mark.parametrize("attributes,size", [
    ("replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add", 4),
    ("replica_groups=[4,2]<=[8], dimensions={0}", 2),
    ("replica_groups=[2,4]<=[4,2]T(1,0), dimensions={0}", 4),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4], device_ids=([2,4]T(1,0)) "
     "{'axis_2'}, dimensions={1}", 4),
    ("replica_groups=mesh['axis_0'=2,'axis_1'=3,'axis_2'=4], device_ids=(...) "
     "{'axis_0','axis_2'}", 8),
    ("replica_groups={}, to_apply=%add", 16),
    ("channel_id=3, to_apply=%add", 16),
])
def test_group_sizes_in_every_form_xla_prints(attributes, size):
  assert hlo.group_size(attributes, 16) == size


LOOP = """HloModule m

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %g = f32[8]{0} all-reduce(%x), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %one = s32[] constant(1)
  %j = s32[] add(%i, %one)
  ROOT %t = (s32[], f32[8]{0}) tuple(%j, %g)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %p = (s32[], f32[8]{0}) parameter(0)
  %n = s32[] constant(12)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (a: f32[8], w: f32[2,8]) -> (s32[], f32[8]) {
  %a = f32[8]{0} parameter(0)
  %w = f32[2,8]{1,0} parameter(1)
  %ag = f32[8,8]{1,0} all-gather(%w), channel_id=2, replica_groups=[1,4]<=[4], dimensions={0}
  %zero = s32[] constant(0)
  %t = (s32[], f32[8]{0}) tuple(%zero, %a)
  ROOT %loop = (s32[], f32[8]{0}) while(%t), condition=%cond, body=%body
}
"""


def test_a_loops_collectives_count_once_a_trip():
  computations = hlo.parse(LOOP)
  assert hlo.trip_count(computations["cond"]) == 12
  assert hlo.executions(computations) == {"main": 1, "body": 12, "cond": 1}
  sent = hlo.collectives(LOOP, 4)
  # all-reduce of 32 bytes in groups of 4, twelve times: 2 * 3/4 * 32 * 12; all-gather of a
  # 64-byte shard to 3 others
  assert sent == {"all-reduce": pytest.approx(2 * 3 / 4 * 32 * 12), "all-gather": 3 * 64}


@needs_libtpu
def test_a_scanned_fsdp_steps_collectives_equal_a_count_by_hand():
  # L layers of (D, D) float32 kernels scanned, split over a 2-chip fsdp axis inside a data axis
  # of 2, the step computing in bfloat16: each layer's kernel is all-gathered in bfloat16 in the
  # forward pass and again in the backward; its gradient, bfloat16 until the cast back to the
  # float32 kernel, is reduce-scattered over fsdp and its shard all-reduced over data.
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  from train import topology

  L, D = 6, 512
  mesh = Mesh(np.asarray(topology.devices(topology.parse("v5e:2x2"))).reshape(2, 2),
              ("data", "fsdp"))
  split = NamedSharding(mesh, P(None, "fsdp", None))
  w = jax.ShapeDtypeStruct((L, D, D), jnp.float32, sharding=split)
  x = jax.ShapeDtypeStruct((64, D), jnp.float32,
                           sharding=NamedSharding(mesh, P(("data", "fsdp"), None)))

  def loss(w, x):
    h, _ = jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi.astype(jnp.bfloat16)), None),
                        x.astype(jnp.bfloat16), w)
    return jnp.mean(h.astype(jnp.float32) ** 2)

  step = jax.jit(lambda w, x: w - 0.1 * jax.grad(loss)(w, x), out_shardings=split)
  sent = hlo.collectives(step.lower(w, x).compile().as_text(), 4)
  shard = D * D // 2  # a chip's elements of one kernel
  assert sent == {"all-gather": 2 * L * shard * 2,          # twice, to the (2 - 1) other
                  "reduce-scatter": L * D * D * 2 / 2,     # (2 - 1) / 2 of the gradient
                  "all-reduce": L * shard * 2}             # 2 (2 - 1) / 2 of its shard
