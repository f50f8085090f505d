"""Forecasting windows of statsmodels series (`data/series.py`): no value at or after an origin
in its context, splits cut by time, the stored windows equal to the series, float targets kept
through both pipelines, and the errors of bad builder arguments."""

import numpy as np
import pytest

import data as data_lib
from data import series, sources
from tests.conftest import data_config


@pytest.mark.parametrize("name", sorted(series.SERIES))
def test_no_target_value_reaches_a_context_and_splits_are_cut_by_time(name):
  w = series.windows(series.config_args({"series": name}))
  c, h, n = w.context, w.horizon, len(w.y)
  seen_targets = {}
  for split in ("train", "validation", "test"):
    t = w.origins(split)
    assert np.all(np.diff(t) == 1) and len(t) > 0
    ex = w.examples(split)
    # back in the series' units, the context is y[t-C:t] and the target y[t:t+H], exactly
    context = series.to_units(ex["context"], ex["level"], ex["scale"])
    target = series.to_units(ex["target"], ex["level"], ex["scale"])
    for i, origin in enumerate(t):
      np.testing.assert_allclose(context[i], w.y[origin - c:origin], rtol=1e-5, atol=1e-3)
      np.testing.assert_allclose(target[i], w.y[origin:origin + h], rtol=1e-5, atol=1e-3)
    assert np.all(ex["level"] == w.y[t - 1].astype(np.float32))  # the last known value
    seen_targets[split] = (t.min(), t.max() + h - 1)
  # the training targets end before validation, validation's before the test part, and the
  # test part forecasts from every origin to the end of the series
  assert seen_targets["train"][1] < w.val_start <= seen_targets["validation"][0]
  assert seen_targets["validation"][1] < w.test_start == seen_targets["test"][0]
  assert seen_targets["test"][1] == n - 1
  # the scale comes from the training part alone
  assert w.scale == pytest.approx(np.std(w.y[:w.val_start]))


def test_the_builder_stores_the_windows_and_the_pipelines_keep_float_targets(tmp_path):
  cfg = data_config("series", str(tmp_path), builder_config={"series": "nile", "context": 12,
                                                              "horizon": 4})
  info = sources.source_info(cfg)
  assert info.tfds_name.startswith("strata_series/nile_c12_h4") and info.num_classes == 0
  w = series.windows(series.config_args({"series": "nile", "context": 12, "horizon": 4}))
  for split in ("train", "validation", "test"):
    stored = sources.load_split(cfg, split)
    ex = w.examples(split)
    np.testing.assert_array_equal(stored.inputs, ex["context"])
    np.testing.assert_array_equal(stored.labels, ex["target"])
    assert stored.labels.dtype == np.float32
  for in_memory in ("true", "false"):
    cfg.in_memory = in_memory
    batch = data_lib.build_pipeline(cfg, "train", train=False, seed=0).dataset[0]
    assert batch["label"].dtype == np.float32 and batch["label"].shape[1:] == (4,)
    real = int(batch["mask"].sum())  # 55 windows in a padded batch of 500
    assert real == len(w.origins("train")) == 55
    np.testing.assert_array_equal(batch["label"][:real], w.examples("train")["target"])


@pytest.mark.parametrize("overrides, message", [
    ({"series": "airline"}, "series='airline'; expected one of"),
    ({"window": 3}, r"unknown series argument\(s\) \['window'\]"),
    ({"context": 0.5}, "context=0.5; expected a positive integer"),
    ({"test_fraction": 0.7}, r"test_fraction=0.7; expected a fraction in \(0, 0.5\)"),
    ({"series": "nile", "context": 80}, "leaves split 'train' empty with context 80"),
])
def test_bad_builder_arguments_name_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    series.series_config(overrides)
