"""benchmarks/hlo_traffic.py: its per-instruction bytes add up to XLA's own "bytes accessed"."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import hlo_traffic


@pytest.mark.parametrize("fn,shapes", [
    (lambda a, b: jnp.tanh(a @ b).sum(0), [(256, 512), (512, 128)]),
    (lambda a, b: (jnp.exp(a) * 2, jax.lax.conv_general_dilated(
        b, jnp.ones((3, 3, 4, 8)), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")).mean()),
     [(64, 96), (2, 16, 16, 4)]),
])
def test_the_kinds_add_up_to_xlas_bytes_accessed(fn, shapes):
  compiled = jax.jit(fn).lower(*[jnp.ones(s) for s in shapes]).compile()
  table = hlo_traffic.traffic(compiled.as_text())
  total = sum(b for _, b in table.values())
  assert total == pytest.approx(compiled.cost_analysis()["bytes accessed"], rel=0.02), table
  assert any(k.startswith("fusion (dot)") or k.startswith("fusion (convolution)")
             or k in ("dot", "convolution") for k in table)


def test_a_prefetch_slice_counts_its_slice_not_its_source():
  # a TPU step's memory-space assignment copies a quarter of an activation on chip (S(1))
  hlo = """HloModule m

ENTRY %main (p: bf16[256,196,384]) -> bf16[256,49,384] {
  %p = bf16[256,196,384]{2,0,1:T(8,128)(2,1)} parameter(0)
  %slice-start = ((bf16[256,196,384]{2,0,1:T(8,128)(2,1)}), bf16[256,49,384]{2,0,1:T(8,128)(2,1)S(1)}, s32[]{:S(2)}) slice-start(%p), slice={[0:256], [0:49], [0:384]}
  ROOT %slice-done = bf16[256,49,384]{2,0,1:T(8,128)(2,1)S(1)} slice-done(%slice-start)
}
"""  # noqa: E501 -- an HLO line as XLA prints it
  table = hlo_traffic.traffic(hlo)
  assert table["slice-start"] == (1, 2 * 256 * 49 * 384)  # read once from HBM
  assert table["slice-done"] == (1, 0)  # written on chip
