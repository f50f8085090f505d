"""The benchmark harness runs a tiny workload end to end and reports sane numbers."""

import math

import pytest

from benchmarks import run


def test_harness_measures_a_tiny_workload(data_dir):
  r = run.measure("mnist1d_cnn", tiny=True, data_dir=data_dir, windows=1, window_seconds=0.05,
                  torch=False)
  assert r["parameters"] > 0 and r["batch_size"] > 0 and r["compile_s"] > 0
  assert r["steps_per_s_pipeline"] > 0 and r["steps_per_s_in_memory"] > 0
  assert r["flops_per_step"] > 0 and math.isfinite(r["pipeline_overhead"])
  assert r["steps_per_window"] >= 3 and len(r["rates"]["memory"]) == 1
  assert "steps_per_s_torch" not in r
  text = run.markdown([r], peak=run.matmul_flops(n=128, repeats=3))
  assert text.splitlines()[-1].startswith("| mnist1d_cnn | supervised | ")
  assert "PyTorch" not in text


@pytest.mark.slow
def test_harness_times_the_pytorch_twin_side_by_side(data_dir):
  pytest.importorskip("torch")
  r = run.measure("digits_vae", tiny=True, data_dir=data_dir, windows=1, window_seconds=0.05)
  assert r["torch_parameters"] == r["parameters"]
  assert r["steps_per_s_torch"] > 0 and len(r["rates"]["torch"]) == 1
  assert r["speedup_vs_torch"] == pytest.approx(r["steps_per_s_in_memory"]
                                                / r["steps_per_s_torch"])
  header, rule, row = run.markdown([r], peak=1e9).splitlines()[2:]
  assert "| PyTorch steps/s | strata / PyTorch |" in header
  assert header.count("|") == rule.count("|") == row.count("|")
