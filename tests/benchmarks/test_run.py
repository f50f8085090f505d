"""The benchmark harness runs a tiny workload end to end and reports sane numbers."""

import math

from benchmarks import run


def test_harness_measures_a_tiny_workload(data_dir):
  r = run.measure("mnist1d_cnn", tiny=True, data_dir=data_dir, windows=1, window_seconds=0.05)
  assert r["parameters"] > 0 and r["batch_size"] > 0 and r["compile_s"] > 0
  assert r["steps_per_s_pipeline"] > 0 and r["steps_per_s_in_memory"] > 0
  assert r["flops_per_step"] > 0 and math.isfinite(r["pipeline_overhead"])
  assert r["steps_per_window"] >= 3 and len(r["rates"]["memory"]) == 1
  text = run.markdown([r], peak=run.matmul_flops(n=128, repeats=3))
  assert text.splitlines()[-1].startswith("| mnist1d_cnn | supervised | ")
