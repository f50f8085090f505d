"""eval.calibration against independent references: per-bin loops, scikit-learn and SciPy."""

import os

import numpy as np
import pytest
import scipy.optimize
from sklearn import metrics as skm

from eval import calibration as cal


def overconfident(rng, n=4000, c=5, scale=3.0):
  """Labels drawn from softmax(true logits); the model reports scale x the true logits."""
  true = rng.normal(size=(n, c)) * 1.5
  p = cal.softmax(true)
  labels = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)
  return scale * true, labels


def ece_by_loop(probs, labels, num_bins):
  conf, pred = probs.max(-1), probs.argmax(-1)
  total = 0.0
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
    if inside.any():
      total += inside.sum() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
  return total / len(labels)


def test_ece_mce_nll_brier_equal_references():
  rng = np.random.default_rng(0)
  logits, labels = overconfident(rng, n=1000)
  probs = cal.softmax(logits)
  for num_bins in (1, 10, 15):
    assert cal.ece(probs, labels, num_bins) == pytest.approx(
        ece_by_loop(probs, labels, num_bins), abs=1e-12)
  assert cal.nll(probs, labels) == pytest.approx(skm.log_loss(labels, probs), abs=1e-9)
  assert cal.brier(probs, labels) == pytest.approx(
      skm.brier_score_loss(labels, probs, labels=np.arange(5)), abs=1e-12)
  binary = probs[:, :2] / probs[:, :2].sum(-1, keepdims=True)
  y2 = (labels % 2).astype(int)
  assert cal.brier(binary, y2) == pytest.approx(2 * skm.brier_score_loss(y2, binary[:, 1]),
                                                abs=1e-12)
  b = cal.bins(probs, labels, 10, "mass")
  assert set(b["count"]) == {100.0}                       # equal mass: 1000 / 10 each
  assert cal.ece(probs, labels, 10, "mass") == pytest.approx(
      np.mean([abs(a - c) for a, c in zip(b["accuracy"], b["confidence"])]), abs=1e-12)
  assert cal.mce(probs, labels, 10) == pytest.approx(
      max(abs(a - c) for a, c, n in zip(*(cal.bins(probs, labels, 10)[k] for k in
                                          ("accuracy", "confidence", "count"))) if n), abs=1e-12)


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_do_not():
  rng = np.random.default_rng(1)
  logits, labels = overconfident(rng, n=20000, scale=1.0)
  assert cal.ece(cal.softmax(logits), labels) < 0.015          # sampling error only
  assert cal.ece(cal.softmax(3.0 * logits), labels) > 0.1


def test_temperature_scaling_recovers_the_overconfidence_and_lowers_ece():
  rng = np.random.default_rng(2)
  logits, labels = overconfident(rng, n=20000, scale=3.0)
  t = cal.fit_temperature(logits, labels)
  assert t == pytest.approx(3.0, rel=0.05)
  # the minimiser agrees with SciPy's bounded scalar search on the same objective
  ref = scipy.optimize.minimize_scalar(
      lambda log_t: cal.nll(cal.softmax(logits, np.exp(log_t)), labels),
      bounds=(-3, 3), method="bounded", options={"xatol": 1e-10}).x
  assert t == pytest.approx(np.exp(ref), rel=1e-5)
  # and it is a stationary point of the NLL (central finite difference in T)
  h = 1e-4
  slope = (cal.nll(cal.softmax(logits, t + h), labels)
           - cal.nll(cal.softmax(logits, t - h), labels)) / (2 * h)
  assert abs(slope) < 1e-6
  before, after = cal.ece(cal.softmax(logits), labels), cal.ece(cal.softmax(logits, t), labels)
  assert after < before / 5
  # an underconfident model is sharpened (T < 1)
  assert cal.fit_temperature(logits / 9.0, labels) == pytest.approx(1 / 3, rel=0.05)


def test_reliability_diagram_is_written(tmp_path):
  rng = np.random.default_rng(3)
  logits, labels = overconfident(rng, n=500)
  path = cal.reliability_diagram({"before": cal.softmax(logits),
                                  "after": cal.softmax(logits, 3.0)}, labels,
                                 str(tmp_path / "r.png"), title="test")
  assert os.path.getsize(path) > 10000


def test_errors_name_the_field_and_value():
  p = np.full((4, 3), 1 / 3)
  with pytest.raises(ValueError, match=r"probs has shape \(4, 3\) and labels \(3,\)"):
    cal.ece(p, np.zeros(3))
  with pytest.raises(ValueError, match=r"label 7 out of range; expected classes in \[0, 2\]"):
    cal.nll(p, np.array([0, 1, 2, 7]))
  with pytest.raises(ValueError, match="scheme='quantile'; expected one of"):
    cal.ece(p, np.zeros(4), scheme="quantile")
  with pytest.raises(ValueError, match="num_bins=0"):
    cal.ece(p, np.zeros(4), num_bins=0)
  with pytest.raises(ValueError, match="non-finite"):
    cal.fit_temperature(np.full((4, 3), np.nan), np.zeros(4))
