"""FLOPs per step from XLA's cost analysis against a hand count, the rates of a train record, and
the peak table."""

import json
import os

import jax
import pytest

from tests.train.test_loop import _tiny
from train import loop, throughput


@pytest.mark.slow  # 13 s: two LMs built and compiled; the default suite's budget
def test_a_scanned_models_flops_are_the_unrolled_ones_not_one_blocks(data_dir):
  # XLA counts a loop's body once: 3 scanned blocks counted as 1 unless scaled
  flops = {}
  for scan in (False, True):
    config = _tiny("charlm_transformer", data_dir, **{"model.depth": 3})
    with config.unlocked():
      config.model.scan_layers = scan
    run = loop.build(config)
    compiled = loop.compile_train_step(run)
    flops[scan] = (throughput.step_flops(compiled),
                   throughput.for_run(compiled, run.example, "float32",
                                      loop.scan_cost_factors(run)["flops"]).flops_per_step)
  assert flops[True][0] < 0.7 * flops[False][0]           # the raw count: too low
  assert flops[True][1] == pytest.approx(flops[False][1], rel=0.05)  # scaled: the unrolled one


def test_the_flops_of_an_mlp_train_step_equal_a_hand_count(data_dir):
  b, d, h, c = 256, 40, 512, 10  # batch, MNIST-1D's 40 inputs, two hidden layers, 10 classes
  config = _tiny("mnist1d_mlp", data_dir, **{"model.widths": (h, h), "data.batch_size": b})
  flops = throughput.step_flops(loop.compile_train_step(loop.build(config)))
  # Forward: x W1 (2bdh), h1 W2 (2bhh), h2 W3 (2bhc). Backward, per layer: the kernel's
  # gradient (as many FLOPs as its forward product) and, except for the first layer, the
  # input's (as many again). Biases, ReLUs, the softmax and the optimizer's elementwise update
  # add about 1.5% on top (10 elementwise FLOPs per hidden unit, 12 per parameter).
  matmuls = 2 * 2 * b * d * h + 3 * 2 * b * h * h + 3 * 2 * b * h * c
  assert matmuls <= flops <= 1.03 * matmuls, (flops, matmuls)
  # A pure matmul chain is counted exactly.
  chain = jax.jit(lambda x, w1, w2: (x @ w1) @ w2).lower(
      jax.ShapeDtypeStruct((b, d), "float32"), jax.ShapeDtypeStruct((d, h), "float32"),
      jax.ShapeDtypeStruct((h, c), "float32")).compile()
  assert throughput.step_flops(chain) == 2 * b * d * h + 2 * b * h * c


def test_rates_of_a_record():
  t = throughput.Throughput(flops_per_step=2e9, peak=1e11, global_batch=32, tokens_per_example=128)
  r = t.record(5.0)
  assert r == {"steps_per_sec": 5.0, "examples_per_sec": 160.0, "tokens_per_sec": 160.0 * 128,
               "flops_per_step": 2e9, "tflops_per_sec_per_device": 0.01, "mfu": 0.1}
  assert throughput.Throughput.text(r) == "20,480 tokens/s | MFU 10.0%"
  no_peak = throughput.Throughput(2e9, None, 32, 0).record(5.0)
  assert "mfu" not in no_peak and "tokens_per_sec" not in no_peak
  assert throughput.Throughput.text(no_peak) == "160 examples/s"


@pytest.mark.parametrize("kind,precision,peak", [
    ("TPU v5 lite", "bfloat16", 197e12), ("TPU v5", "bfloat16", 459e12),
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12), ("NVIDIA H200", "float32", 494e12),
    ("NVIDIA A100-SXM4-40GB", "float32", 156e12), ("TPU v4", "float32", 275e12)])
def test_peaks_by_device_kind(kind, precision, peak):
  class Device:
    platform, device_kind = "gpu", kind
  assert throughput.peak_flops(Device(), precision)[0] == peak


def test_the_cpu_rate_is_measured_once_and_cached(tmp_path, monkeypatch):
  monkeypatch.setattr(throughput, "_cache_dir", lambda: str(tmp_path))
  calls = []
  monkeypatch.setattr(throughput, "matmul_flops", lambda: calls.append(1) or 4.5e10)
  throughput.cpu_matmul_flops.cache_clear()
  try:
    assert throughput.cpu_matmul_flops() == 4.5e10
    throughput.cpu_matmul_flops.cache_clear()  # a new process: reads the file
    assert throughput.cpu_matmul_flops() == 4.5e10 and calls == [1]
    with open(os.path.join(tmp_path, throughput._CACHE_NAME)) as f:
      assert json.load(f)["flops"] == 4.5e10
  finally:
    throughput.cpu_matmul_flops.cache_clear()


def test_a_refresh_keeps_the_faster_rate(tmp_path, monkeypatch):
  # a first figure from a busy minute is replaced by a faster one, never by a slower one
  monkeypatch.setattr(throughput, "_cache_dir", lambda: str(tmp_path))
  rates = iter([5.8e10, 1.9e11, 1.2e11])
  monkeypatch.setattr(throughput, "matmul_flops", lambda: next(rates))
  throughput.cpu_matmul_flops.cache_clear()
  try:
    assert throughput.cpu_matmul_flops() == 5.8e10
    assert throughput.cpu_matmul_flops(refresh=True) == 1.9e11
    throughput.cpu_matmul_flops.cache_clear()  # each call below as a new process
    assert throughput.cpu_matmul_flops(refresh=True) == 1.9e11  # measured 1.2e11: the faster
    throughput.cpu_matmul_flops.cache_clear()
    assert throughput.cpu_matmul_flops() == 1.9e11  # no refresh: the kept figure
    assert next(rates, None) is None  # three measurements, no more
  finally:
    throughput.cpu_matmul_flops.cache_clear()
