"""train.compression: int8 quantisation error bounds, global magnitude pruning, the StableHLO
export round trip, and eval.compress on a trained small run."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from train import compression as cp


def tree(rng):
  return {"dense": {"kernel": rng.normal(size=(64, 32)).astype(np.float32),
                    "bias": rng.normal(size=(32,)).astype(np.float32)},
          "conv": {"kernel": (rng.normal(size=(5, 8, 16)) * np.arange(1, 17)).astype(np.float32)},
          "norm": {"scale": np.ones(16, np.float32)}}


def test_int8_per_channel_quantisation_error_and_size():
  params = tree(np.random.default_rng(0))
  q = cp.quantize_int8(params)
  assert q["dense"]["kernel"]["int8"].dtype == np.int8 and q["dense"]["bias"].dtype == np.float32
  for name in ("dense", "conv"):
    w = params[name]["kernel"]
    scale = np.abs(w).reshape(-1, w.shape[-1]).max(0) / 127       # one per output channel
    np.testing.assert_allclose(q[name]["kernel"]["scale"].reshape(-1), scale, rtol=1e-6)
    back = np.asarray(cp.dequantize(q)[name]["kernel"])
    assert np.all(np.abs(back - w) <= scale / 2 + 1e-7)           # round to nearest
    assert np.abs(q[name]["kernel"]["int8"]).max() == 127
  np.testing.assert_array_equal(cp.dequantize(q)["dense"]["bias"], params["dense"]["bias"])
  ratio = cp.size_bytes(params) / cp.size_bytes(q)
  assert 3.5 < ratio < 4.0                                         # kernels 4x, the rest 1x


def test_global_magnitude_pruning():
  params = tree(np.random.default_rng(1))
  masks = cp.magnitude_masks(params, 0.7)
  kernels = np.concatenate([np.abs(params[k]["kernel"]).ravel() for k in ("dense", "conv")])
  kept = np.concatenate([masks[k]["kernel"].ravel() for k in ("dense", "conv")])
  assert kept.mean() == pytest.approx(0.3, abs=1 / kernels.size)
  assert kernels[kept].min() > kernels[~kept].max()                # smallest pruned, globally
  assert masks["dense"]["bias"].all() and masks["norm"]["scale"].all()
  pruned = cp.apply_masks(params, masks)
  assert cp.sparsity_of(pruned) == pytest.approx(0.7, abs=1 / kernels.size)
  # the conv kernel's channels grow in scale, so global pruning takes more from the small ones
  conv = np.asarray(pruned["conv"]["kernel"])
  assert (conv[..., 0] == 0).mean() > (conv[..., -1] == 0).mean()
  with pytest.raises(ValueError, match="sparsity=1.0; expected a fraction in"):
    cp.magnitude_masks(params, 1.0)


def test_export_round_trip(tmp_path):
  w = np.random.default_rng(2).normal(size=(300, 40)).astype(np.float32)
  q = cp.quantize_int8({"w": w, "b": np.ones(40, np.float32)})
  fn = lambda p, x: jnp.tanh(x @ cp.dequantize(p)["w"] + p["b"])   # noqa: E731
  x = jnp.ones((2, 300))
  sizes = cp.export(fn, q, x, str(tmp_path / "f.stablehlo"))
  assert sizes["program_bytes"] == os.path.getsize(tmp_path / "f.stablehlo") > 0
  assert 300 * 40 < sizes["weights_bytes"] < 300 * 40 * 2          # int8 stays one byte
  np.testing.assert_allclose(cp.load_exported(str(tmp_path / "f.stablehlo"))(x), fn(q, x),
                             rtol=1e-6)


def test_compress_report_on_a_trained_cnn(trained, tmp_path):
  from eval import compress

  result = compress.evaluate(trained("mnist1d_cnn", steps=400), prune=0.5, out=str(tmp_path))
  v = result["variants"]
  assert set(v) == {"float32", "int8 weights", "pruned 50%"}
  assert v["float32"]["parameter_bytes"] / v["int8 weights"]["parameter_bytes"] > 3.0
  assert v["int8 weights"]["agreement_with_float32"] > 0.95
  assert v["pruned 50%"]["kernel_sparsity"] == pytest.approx(0.5, abs=0.01)
  for name in ("float32.stablehlo", "int8_weights.stablehlo.weights.npz", "report.md",
               "report.json"):
    assert os.path.getsize(tmp_path / name) > 0
  # the int8 artefact's weights are stored as int8
  assert v["float32"]["weights_bytes"] / v["int8 weights"]["weights_bytes"] > 2.5
